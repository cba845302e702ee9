# TLS files of the device: the one PEM <-> DER reader/writer (the link loads its CA, certificate
# and key with it; the console's `tls install` checks a technician's PEM texts with it), the DER
# twins MicroPython's ssl needs, and the client-side SSLContext for a broker config.
import binascii

from device.ports import runtime as rt

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


class TlsError(ValueError):
    """A TLS file or PEM text that cannot be used; the message says why."""


def pem_blocks(data, strict=True):
    """[(label, DER)] of PEM text (str or bytes). Each body must be base64 without RFC 1421
    headers and decode to one whole DER SEQUENCE (every certificate and key is one). strict:
    only blank lines may stand between blocks; otherwise other text around the blocks (issuer
    notes in a CA bundle) is passed over. TlsError otherwise."""
    if not isinstance(data, str):
        try:
            data = bytes(data).decode()
        except UnicodeError:
            raise TlsError("PEM text is not UTF-8")
    blocks = []
    label = None
    body = []
    for line in data.split("\n"):
        line = line.strip()
        if label is None:
            if line.startswith("-----BEGIN ") and line.endswith("-----") and len(line) > 16:
                label = line[11:-5]
                body = []
            elif strict and line:
                raise TlsError("text outside a PEM block")
        elif line == "-----END " + label + "-----":
            blocks.append((label, _der(label, "".join(body))))
            label = None
        elif line.startswith("-----"):
            raise TlsError("the %s block has no END line" % label)
        elif ":" in line:
            raise TlsError("PEM headers are not supported (an encrypted key?)")
        else:
            body.append(line)
    if label is not None:
        raise TlsError("the %s block has no END line" % label)
    if not blocks:
        raise TlsError("no PEM block")
    return blocks


def _der(label, b64):
    data = b64.rstrip("=")
    if not data or len(b64) % 4 or len(b64) - len(data) > 2 or any(c not in _B64 for c in data):
        raise TlsError("the %s block is not base64" % label)
    der = binascii.a2b_base64(b64)
    if not _der_sequence(der):
        raise TlsError("the %s block is not DER" % label)
    return der


def _der_sequence(der):
    """True when der is exactly one DER SEQUENCE."""
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
    b64 = binascii.b2a_base64(der).decode().replace("\n", "")
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return ("-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label, "\n".join(lines),
                                                            label)).encode()


def pem_to_der(data, kind="CERTIFICATE"):
    """Every PEM block of a kind as DER (MicroPython's ssl takes only DER): "CERTIFICATE", or
    "PRIVATE KEY" (also matches "EC PRIVATE KEY" and the like). Input without a PEM header is
    taken as one DER block and returned as it is."""
    if isinstance(kind, bytes):
        kind = kind.decode()
    raw = data.encode() if isinstance(data, str) else bytes(data)
    if b"-----BEGIN" not in raw:
        return [raw]
    out = []
    for label, der in pem_blocks(raw, strict=False):
        if label.endswith(kind):
            if label.startswith("ENCRYPTED"):
                raise TlsError("encrypted private keys are not supported")
            out.append(der)
    if not out:
        raise TlsError("no %s block in the PEM data" % kind)
    return out


def der_twin(path):
    """The DER file beside a PEM file: X.pem -> X.der (as host_sim/certs.py and `tls install`
    write them)."""
    return (path[:-4] if path.endswith(".pem") else path) + ".der"


def load_der(path, kind):
    """The DER blocks of a PEM/DER file, read from its DER twin when there is one (a board
    keeps the base64 decoding and the PEM text out of its small heap). OSError when neither
    file can be read, TlsError when the file is no PEM of that kind."""
    twin = der_twin(path)
    if twin != path:
        try:
            with open(twin, "rb") as f:
                return [f.read()]
        except OSError:
            pass
    with open(path, "rb") as f:
        data = f.read()
    try:
        return pem_to_der(data, kind)
    except TlsError as e:
        raise TlsError("%s: %s" % (path, e))


def tls_context(broker):
    """The client-side SSLContext for a broker config: the broker's certificate must chain to
    broker["ca"] and name the host we dial (the caller passes server_hostname); broker["cert"]
    + broker["key"], when set, are the client certificate the broker may demand. Bad or
    missing files raise TlsError."""
    import ssl

    ca, cert, key = broker.get("ca"), broker.get("cert"), broker.get("key")
    if (cert is None) != (key is None):
        raise TlsError("broker cert and key go together: set both or neither")
    if not rt.MICROPYTHON:
        # PROTOCOL_TLS_CLIENT: CERT_REQUIRED and check_hostname are its defaults
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            if ca:
                ctx.load_verify_locations(ca)
            else:
                ctx.load_default_certs()
            if cert:
                ctx.load_cert_chain(cert, key)
        except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
            raise TlsError("TLS files: %s" % (e,)) from None
        return ctx
    if not ca:
        raise TlsError("TLS on MicroPython needs the broker CA file (\"ca\")")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        for der in load_der(ca, "CERTIFICATE"):
            ctx.load_verify_locations(cadata=der)
        if cert:
            # only the first certificate: a DER load takes one, and ours are issued by the CA
            ctx.load_cert_chain(load_der(cert, "CERTIFICATE")[0],
                                load_der(key, "PRIVATE KEY")[0])
    except TlsError as e:
        raise TlsError("TLS files: %s" % (e,))
    except Exception as e:  # OSError for a file, ValueError("invalid cert"/"invalid key")
        raise TlsError("TLS files: %r" % (e,)) from None
    return ctx
