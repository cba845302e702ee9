# The broker TLS files a technician pushes with `tls install`: checking the CA, client
# certificate and key PEM texts, and installing them under <data_dir>/tls/ only once this
# runtime's TLS stack has loaded them from a staging copy.
from device.ports import runtime

TLS_DIR = "/tls"
TLS_STAGE = "new-"     # staging names keep .pem/.der, so the link's DER-twin rule finds them
TLS_PEM_MAX = 16384    # per file: room for RSA-4096, far beyond our P-256 files
TLS_USAGE = 'usage: tls install {"ca": PEM, "cert": PEM, "key": PEM} (JSON on one line)'
CERT_LABELS = ("CERTIFICATE",)
KEY_LABELS = ("PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY")
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


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


def pem_blocks(text):
    """[(label, DER)] of PEM text. Strict: only blank lines between blocks, base64 bodies
    without headers, and each body one whole DER SEQUENCE; ValueError otherwise."""
    import binascii
    blocks = []
    label = None
    body = []
    for line in text.split("\n"):
        if line.endswith("\r"):
            line = line[:-1]
        if label is None:
            if not line.strip(" \t"):
                continue
            if not (line.startswith("-----BEGIN ") and line.endswith("-----") and len(line) > 16):
                raise ValueError("text outside a PEM block")
            label = line[11:-5]
            body = []
        elif line == "-----END " + label + "-----":
            b64 = "".join(body)
            data = b64.rstrip("=")
            if not data or len(b64) % 4 or len(b64) - len(data) > 2 or any(
                    c not in _B64 for c in data):
                raise ValueError("the %s block is not base64" % label)
            der = binascii.a2b_base64(b64)
            if not _der_sequence(der):
                raise ValueError("the %s block is not DER" % label)
            blocks.append((label, der))
            label = None
        elif line.startswith("-----"):
            raise ValueError("the %s block has no END line" % label)
        elif ":" in line:
            raise ValueError("PEM headers are not supported (an encrypted key?)")
        else:
            body.append(line)
    if label is not None:
        raise ValueError("the %s block has no END line" % label)
    if not blocks:
        raise ValueError("no PEM block")
    return blocks


def _der_sequence(der):
    """True when der is exactly one DER SEQUENCE (certificates and keys all are)."""
    if len(der) < 2 or der[0] != 0x30:
        return False
    n = der[1]
    head = 2
    if n & 0x80:
        k = n & 0x7F
        if not 1 <= k <= 3 or len(der) < 2 + k:
            return False
        n = int.from_bytes(der[2:2 + k], "big")
        head = 2 + k
    return head + n == len(der)


def pem_text(label, der):
    """The canonical PEM of one DER block: 64 base64 characters a line."""
    import binascii
    b64 = binascii.b2a_base64(der).decode().replace("\n", "")
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return ("-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label, "\n".join(lines),
                                                            label)).encode()


def _tls_unusable(prefix):
    """None when this runtime's TLS stack loads the staged files, else why not."""
    from device.ports.mqtt_client import LinkError, tls_context
    try:
        tls_context({"tls": True, "ca": prefix + "ca.pem", "cert": prefix + "cert.pem",
                     "key": prefix + "key.pem"})
    except LinkError as e:
        return str(e)
    return None
