# Field checkers for message bodies (protocol/messages.py and the SPEC 8 bodies): each takes a
# value and the path it sits at ("cpn[0].cti") and returns it, or raises MessageError naming
# that path. Rules: bool is not int; uint is an int in 0..2**64-1 (the CBOR unsigned range),
# except amounts, which must also fit a signed 64-bit database integer.

UINT_END = 1 << 64
AMOUNT_END = 1 << 63
MAX_TEXT = 256
HEX = "0123456789abcdef"
# PBKDF2 iterations a PIN hash may ask for: the same bound for the host's config, the
# technician's device.json and the device's check, so no hash can be accepted by one and be
# unusable by another (a board needs minutes for 10**6 iterations of pure-Python SHA-256).
MAX_PIN_ITERATIONS = 1000000


class MessageError(ValueError):
    def __init__(self, field, reason):
        super().__init__(field + ": " + reason)
        self.field = field
        self.reason = reason

    def __str__(self):
        return self.field + ": " + self.reason


MISSING = object()


def field(body, key, path, optional=False):
    v = body.get(key, MISSING)
    if v is MISSING and not optional:
        raise MessageError(path, "required")
    return v


def uint(v, path):
    if type(v) is not int or not 0 <= v < UINT_END:
        raise MessageError(path, "must be uint")
    return v


def amount(v, path):
    if type(v) is not int or not 0 <= v < AMOUNT_END:
        raise MessageError(path, "must be uint below 2^63 (an amount)")
    return v


def integer(v, path):
    if type(v) is not int or not -AMOUNT_END <= v < AMOUNT_END:
        raise MessageError(path, "must be int")
    return v


def text(v, path, lo=0, hi=MAX_TEXT):
    if type(v) is not str:
        raise MessageError(path, "must be text")
    if not lo <= len(v) <= hi:
        raise MessageError(path, "must be text of %d..%d characters" % (lo, hi))
    return v


def boolean(v, path):
    if v is not True and v is not False:
        raise MessageError(path, "must be bool")
    return v


def bstr(v, path, lo, hi):
    if type(v) is not bytes or not lo <= len(v) <= hi:
        size = "%d" % lo if lo == hi else "%d..%d" % (lo, hi)
        raise MessageError(path, "must be bytes of " + size)
    return v


def choice(v, path, choices):
    if type(v) is not str or v not in choices:
        raise MessageError(path, "must be one of " + "|".join(choices))
    return v


def array(v, path, hi=None):
    if type(v) is not list:
        raise MessageError(path, "must be a list")
    if hi is not None and len(v) > hi:
        raise MessageError(path, "at most %d entries" % hi)
    return v


def mapping(v, path):
    if type(v) is not dict:
        raise MessageError(path, "must be a map")
    return v


def req(body, key, check, *args):
    """The checked value of a required field."""
    return check(field(body, key, key), key, *args)


def opt(body, key, check, *args):
    """The checked value of an optional field, MISSING when absent."""
    v = field(body, key, key, True)
    if v is MISSING:
        return v
    return check(v, key, *args)


def cti(v, path):
    # Coupon / member-code serial, SPEC 2.1: bstr of 1..32 bytes.
    return bstr(v, path, 1, 32)


def id16(v, path):
    return bstr(v, path, 16, 16)


def all_in(s, chars):
    for ch in s:
        if ch not in chars:
            return False
    return True


def is_hex(s):
    # Whole bytes of lowercase hex (SPEC 1: hex is lowercase).
    return bool(s) and len(s) % 2 == 0 and all_in(s, HEX)


def pin_hash(v, path):
    """pbkdf2-sha256$ITERATIONS$SALT_HEX$HASH_HEX (SPEC 5.2), iterations 1..MAX_PIN_ITERATIONS."""
    reason = "must be pbkdf2-sha256$ITER$SALTHEX$HASHHEX"
    if type(v) is not str:
        raise MessageError(path, reason)
    parts = v.split("$")
    if len(parts) != 4 or parts[0] != "pbkdf2-sha256":
        raise MessageError(path, reason)
    it = parts[1]
    if not it or it[0] == "0" or not all_in(it, "0123456789") or len(it) > 8 \
            or int(it) > MAX_PIN_ITERATIONS:
        raise MessageError(path, "iterations must be 1..%d" % MAX_PIN_ITERATIONS)
    if not is_hex(parts[2]):
        raise MessageError(path, "salt must be lowercase hex bytes")
    if len(parts[3]) != 64 or not is_hex(parts[3]):
        raise MessageError(path, "hash must be 64 lowercase hex digits")
    return v
