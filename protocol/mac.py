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


def hmac_sha256(key, msg):
    ipad, opad = pads(key)
    inner = hashlib.sha256(ipad)
    inner.update(msg)
    outer = hashlib.sha256(opad)
    outer.update(inner.digest())
    return outer.digest()


def equal(a, b):
    """Constant time in the contents (lengths are public)."""
    diff = len(a) ^ len(b)
    for i in range(min(len(a), len(b))):
        diff |= a[i] ^ b[i]
    return diff == 0
