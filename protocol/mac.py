# HMAC-SHA256 (RFC 2104) and a constant-time compare over hashlib.sha256 alone: MicroPython has
# no hmac module. The envelope uses them on both runtimes; device/crypto.py on MicroPython.
import hashlib

_IPAD = int.from_bytes(b"\x36" * 64, "big")
_OPAD = int.from_bytes(b"\x5c" * 64, "big")


def pads(key):
    """The inner and outer 64-byte key blocks (PBKDF2 reuses them for every iteration)."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    k = int.from_bytes(bytes(key) + bytes(64 - len(key)), "big")
    return (k ^ _IPAD).to_bytes(64, "big"), (k ^ _OPAD).to_bytes(64, "big")


_COPY = hasattr(hashlib.sha256(), "copy")
_KEYS_MAX = 16
_keyed = {}  # key -> (ipad, opad) or, where hashes copy, the two hashes after the pads


def _pad_state(key):
    key = bytes(key)
    st = _keyed.get(key)
    if st is None:
        ipad, opad = pads(key)
        st = (hashlib.sha256(ipad), hashlib.sha256(opad)) if _COPY else (ipad, opad)
        if len(_keyed) >= _KEYS_MAX:
            _keyed.clear()
        _keyed[key] = st
    return st


def hmac_sha256(key, msg):
    # The pads of a key are worked out once (a device has one secret; a host one per terminal)
    # and, where sha256 objects copy (CPython), hashed once too.
    ist, ost = _pad_state(key)
    if _COPY:
        inner = ist.copy()
        inner.update(msg)
        outer = ost.copy()
    else:
        inner = hashlib.sha256(ist)
        inner.update(msg)
        outer = hashlib.sha256(ost)
    outer.update(inner.digest())
    return outer.digest()


try:
    from hmac import compare_digest as _compare_digest
except ImportError:  # MicroPython
    _compare_digest = None


def equal(a, b):
    """Constant time in the contents (lengths are public)."""
    if _compare_digest is not None:
        return _compare_digest(bytes(a), bytes(b))
    diff = len(a) ^ len(b)
    for i in range(min(len(a), len(b))):
        diff |= a[i] ^ b[i]
    return diff == 0
