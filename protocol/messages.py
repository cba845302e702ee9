# Message bodies of SPEC 3.2. check(mtype, body) accepts a body or raises MessageError naming the
# first bad field as a path ("cpn[0].cti"). Rules: bool is not int; uint is an int in 0..2**64-1
# (the CBOR unsigned range); optional fields may be absent; unknown extra keys are ignored so
# newer hosts and devices can add fields.
UP_TYPES = ("hello", "charge", "status")
DOWN_TYPES = ("charge_result", "redeemed", "config")

RUNTIMES = ("cpython", "micropython")
CHARGE_KINDS = ("sale", "member", "topup", "vip")
RESULT_STATES = ("approved", "declined")
COUPON_STATES = ("ok", "conflict")
LIMIT_KEYS = ("offline_max_charge", "offline_max_total", "offline_max_count", "offline_max_age_s")
PIN_ROLES = ("tech", "supervisor", "clerk")
MIN_STATUS_INTERVAL_S = 5

_UINT_END = 1 << 64
_HEX = "0123456789abcdef"


class MessageError(ValueError):
    def __init__(self, field, reason):
        super().__init__(field + ": " + reason)
        self.field = field
        self.reason = reason

    def __str__(self):
        return self.field + ": " + self.reason


_MISSING = object()


def _field(body, key, path, optional=False):
    v = body.get(key, _MISSING)
    if v is _MISSING and not optional:
        raise MessageError(path, "required")
    return v


def _uint(v, path):
    if type(v) is not int or not 0 <= v < _UINT_END:
        raise MessageError(path, "must be uint")
    return v


def _text(v, path):
    if type(v) is not str:
        raise MessageError(path, "must be text")
    return v


def _bool(v, path):
    if v is not True and v is not False:
        raise MessageError(path, "must be bool")
    return v


def _bytes(v, path, lo, hi):
    if type(v) is not bytes or not lo <= len(v) <= hi:
        size = "%d" % lo if lo == hi else "%d..%d" % (lo, hi)
        raise MessageError(path, "must be bytes of " + size)
    return v


def _choice(v, path, choices):
    if type(v) is not str or v not in choices:
        raise MessageError(path, "must be one of " + "|".join(choices))
    return v


def _list(v, path):
    if type(v) is not list:
        raise MessageError(path, "must be a list")
    return v


def _map(v, path):
    if type(v) is not dict:
        raise MessageError(path, "must be a map")
    return v


def _opt_text(body, key):
    v = _field(body, key, key, True)
    if v is not _MISSING:
        _text(v, key)


def _cti(v, path):
    # Coupon serial, SPEC 2.1: bstr of 1..32 bytes.
    return _bytes(v, path, 1, 32)


def _all_in(s, chars):
    for ch in s:
        if ch not in chars:
            return False
    return True


def _hex(s):
    # Whole bytes of lowercase hex (SPEC 1: hex is lowercase).
    return bool(s) and len(s) % 2 == 0 and _all_in(s, _HEX)


def _pin_hash(v, path):
    # pbkdf2-sha256$ITERATIONS$SALT_HEX$HASH_HEX (SPEC 5.2): PBKDF2-HMAC-SHA256, 32-byte output.
    reason = "must be pbkdf2-sha256$ITER$SALTHEX$HASHHEX"
    if type(v) is not str:
        raise MessageError(path, reason)
    parts = v.split("$")
    if len(parts) != 4 or parts[0] != "pbkdf2-sha256":
        raise MessageError(path, reason)
    it = parts[1]
    if not it or it[0] == "0" or not _all_in(it, "0123456789"):
        raise MessageError(path, "iterations must be a positive decimal")
    if not _hex(parts[2]):
        raise MessageError(path, "salt must be lowercase hex bytes")
    if len(parts[3]) != 64 or not _hex(parts[3]):
        raise MessageError(path, "hash must be 64 lowercase hex digits")


def _hello(b):
    _text(_field(b, "fw", "fw"), "fw")
    _choice(_field(b, "rt", "rt"), "rt", RUNTIMES)
    for key in ("boot", "queue", "trust_ver", "rev_ver"):
        _uint(_field(b, key, key), key)


def _charge(b):
    _bytes(_field(b, "cid", "cid"), "cid", 16, 16)
    _choice(_field(b, "kind", "kind"), "kind", CHARGE_KINDS)
    gross = _uint(_field(b, "gross", "gross"), "gross")
    amt = _uint(_field(b, "amt", "amt"), "amt")
    _text(_field(b, "cur", "cur"), "cur")
    _uint(_field(b, "at", "at"), "at")
    _bool(_field(b, "off", "off"), "off")
    _text(_field(b, "clerk", "clerk"), "clerk")
    disc = 0
    for i, c in enumerate(_list(_field(b, "cpn", "cpn"), "cpn")):
        p = "cpn[%d]" % i
        _map(c, p)
        _cti(_field(c, "cti", p + ".cti"), p + ".cti")
        _text(_field(c, "cmp", p + ".cmp"), p + ".cmp")
        disc += _uint(_field(c, "disc", p + ".disc"), p + ".disc")
    _opt_text(b, "mem")
    _opt_text(b, "ref")
    if amt > gross:
        raise MessageError("amt", "must not exceed gross (%d > %d)" % (amt, gross))
    if gross - amt != disc:
        raise MessageError("amt", "gross - amt must equal the sum of cpn disc (%d != %d)"
                           % (gross - amt, disc))


def _status(b):
    for key in ("queue", "queue_amt", "drops", "uptime", "declined_unseen"):
        _uint(_field(b, key, key), key)
    oldest = _field(b, "oldest_at", "oldest_at")
    if oldest is not None:
        _uint(oldest, "oldest_at")


def _charge_result(b):
    _bytes(_field(b, "cid", "cid"), "cid", 16, 16)
    _choice(_field(b, "st", "st"), "st", RESULT_STATES)
    _opt_text(b, "code")
    _opt_text(b, "auth")
    for i, c in enumerate(_list(_field(b, "cpn", "cpn"), "cpn")):
        p = "cpn[%d]" % i
        _map(c, p)
        _cti(_field(c, "cti", p + ".cti"), p + ".cti")
        _choice(_field(c, "st", p + ".st"), p + ".st", COUPON_STATES)


def _redeemed(b):
    for i, c in enumerate(_list(_field(b, "cti", "cti"), "cti")):
        _cti(c, "cti[%d]" % i)


def _config(b):
    limits = _field(b, "limits", "limits", True)
    if limits is not _MISSING:
        _map(limits, "limits")
        for key in LIMIT_KEYS:
            v = _field(limits, key, "", True)
            if v is not _MISSING:
                _uint(v, "limits." + key)
    pins = _field(b, "pins", "pins", True)
    if pins is not _MISSING:
        _map(pins, "pins")
        for role in PIN_ROLES:
            v = _field(pins, role, "", True)
            if v is not _MISSING:
                _pin_hash(v, "pins." + role)
    interval = _field(b, "status_interval_s", "", True)
    if interval is not _MISSING:
        if _uint(interval, "status_interval_s") < MIN_STATUS_INTERVAL_S:
            raise MessageError("status_interval_s", "must be >= %d" % MIN_STATUS_INTERVAL_S)


_CHECKS = {
    "hello": _hello,
    "charge": _charge,
    "status": _status,
    "charge_result": _charge_result,
    "redeemed": _redeemed,
    "config": _config,
}


def check(mtype, body):
    """Validates the body of a message of type mtype; returns None or raises MessageError."""
    fn = _CHECKS.get(mtype) if type(mtype) is str else None
    if fn is None:
        raise MessageError("t", "unknown type")
    _map(body, "body")
    fn(body)
