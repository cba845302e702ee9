# Base45 (RFC 9285), strict: the 45-character upper-case alphabet only, no padding, no
# whitespace. Coupon and list texts ("PC1:", "PT1:", "PR1:") carry their CBOR this way.
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_ENC = _ALPHABET.encode()

# Character code -> value, 0xFF for anything outside the alphabet (including non-ASCII bytes).
_DEC = bytearray(b"\xff" * 256)
for _i in range(45):
    _DEC[_ENC[_i]] = _i
del _i


def encode(data):
    if not isinstance(data, (bytes, bytearray)):
        raise ValueError("base45 encodes bytes")
    enc = _ENC
    out = bytearray()
    n = len(data)
    full = n - n % 2
    for i in range(0, full, 2):
        v = (data[i] << 8) | data[i + 1]
        out.append(enc[v % 45])
        v //= 45
        out.append(enc[v % 45])
        out.append(enc[v // 45])
    if full < n:
        v = data[full]
        out.append(enc[v % 45])
        out.append(enc[v // 45])
    return out.decode()


def decode(text):
    if not isinstance(text, str):
        raise ValueError("base45 decodes text")
    try:
        raw = text.encode()
    except UnicodeError:
        raw = b""
    if len(raw) != len(text):
        raise ValueError("character outside the base45 alphabet")
    n = len(raw)
    if n % 3 == 1:
        raise ValueError("base45 length %d leaves a single character" % n)
    dec = _DEC
    out = bytearray()
    full = n - n % 3
    for i in range(0, full, 3):
        c = dec[raw[i]]
        d = dec[raw[i + 1]]
        e = dec[raw[i + 2]]
        if c == 0xFF or d == 0xFF or e == 0xFF:
            raise ValueError("character outside the base45 alphabet near position %d" % i)
        v = c + d * 45 + e * 2025
        if v > 0xFFFF:
            raise ValueError("base45 triple at position %d exceeds 65535" % i)
        out.append(v >> 8)
        out.append(v & 0xFF)
    if full < n:
        c = dec[raw[full]]
        d = dec[raw[full + 1]]
        if c == 0xFF or d == 0xFF:
            raise ValueError("character outside the base45 alphabet near position %d" % full)
        v = c + d * 45
        if v > 0xFF:
            raise ValueError("base45 pair at position %d exceeds 255" % full)
        out.append(v)
    return bytes(out)
