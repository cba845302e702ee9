# The broker TLS files a technician pushes with `tls install`: checking the CA, client
# certificate and key PEM texts (with the device's one PEM reader, device/ports/tls.py), and
# installing them under <data_dir>/tls/ only once this runtime's TLS stack has loaded them from
# a staging copy.
from device.ports import runtime
from device.ports.tls import TlsError, pem_blocks, pem_text, tls_context

TLS_DIR = "/tls"
TLS_STAGE = "new-"     # staging names keep .pem/.der, so the link's DER-twin rule finds them
TLS_PEM_MAX = 16384    # per file: room for RSA-4096, far beyond our P-256 files
TLS_USAGE = 'usage: tls install {"ca": PEM, "cert": PEM, "key": PEM} (JSON on one line)'
CERT_LABELS = ("CERTIFICATE",)
KEY_LABELS = ("PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY")


class TlsFileError(ValueError):
    def __init__(self, key, message):
        super().__init__("%s: %s" % (key, message))
        self.key = key


def tls_files(obj):
    """{"ca", "cert", "key"} PEM texts -> [(file name, bytes)]: the canonical PEM of each and
    its DER twin. Each text must be exactly one PEM block of its kind (a DER file holds one);
    anything else raises TlsFileError naming the field."""
    out = []
    for key, labels in (("ca", CERT_LABELS), ("cert", CERT_LABELS), ("key", KEY_LABELS)):
        text = obj[key]
        if type(text) is not str or not text or len(text) > TLS_PEM_MAX:
            raise TlsFileError(key, "PEM text of 1..%d characters" % TLS_PEM_MAX)
        try:
            blocks = pem_blocks(text)
        except ValueError as e:
            raise TlsFileError(key, str(e))
        if len(blocks) != 1:
            raise TlsFileError(key, "one PEM block expected, %d found" % len(blocks))
        label, der = blocks[0]
        if label not in labels:
            raise TlsFileError(key, "a %s block expected, not %s%s" % (
                " or ".join(labels), label, " (encrypted keys are not supported)"
                if label.startswith("ENCRYPTED") else ""))
        out.append((key + ".pem", pem_text(label, der)))
        out.append((key + ".der", der))
    return out


def install(fs, d, files):
    """Writes files (from tls_files) to directory d through a staging copy: None once they
    are in place, else why this runtime's TLS stack refuses them (then nothing changed).
    The staging copy is removed either way; OSError on a storage failure."""
    unusable = None
    try:
        fs.makedirs(d)
        runtime.make_private(d, 0o700)  # the staged key lands in a directory only we enter
        for name, data in files:
            fs.write_atomic(d + "/" + TLS_STAGE + name, data)
        unusable = _tls_unusable(d + "/" + TLS_STAGE)
        if unusable is None:
            for name, data in files:
                fs.write_atomic(d + "/" + name, data)
                if name.startswith("key."):
                    runtime.make_private(d + "/" + name, 0o600)
    finally:
        for name, _ in files:
            fs.remove(d + "/" + TLS_STAGE + name)
    return unusable


def _tls_unusable(prefix):
    """None when this runtime's TLS stack loads the staged files, else why not."""
    try:
        tls_context({"tls": True, "ca": prefix + "ca.pem", "cert": prefix + "cert.pem",
                     "key": prefix + "key.pem"})
    except TlsError as e:
        return str(e)
    return None
