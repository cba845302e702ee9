# The crypto port: coupon and list signatures (SPEC 2.1/2.2), SHA-256, HMAC, PBKDF2, randomness;
# one API on both runtimes. The backend is chosen once at import from device.ports.runtime:
# `cryptography` (OpenSSL) on CPython, the pure modules device/crypto/ed25519.py and
# device/crypto/p256.py on MicroPython, which accept and reject exactly what OpenSSL does
# (tests/cpy/test_crypto_vs_cryptography.py).
import hashlib
import os

from device.ports import runtime as rt
from protocol import mac

ES256 = -7  # ECDSA P-256 + SHA-256, signature raw r || s
EDDSA = -8  # Ed25519

_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # P-256 group order
_BYTES = (bytes, bytearray, memoryview)


class CryptoError(ValueError):
    """Bad input to kid / pbkdf2_sha256 / random_bytes / consteq; .code says which."""

    def __init__(self, code, message):
        super().__init__(code + ": " + message)
        self.code = code
        self.message = message


# HMAC and the constant-time compare over hashlib.sha256 alone live in protocol/mac.py (the
# envelope needs them too); PBKDF2 is here. Defined on both runtimes so CPython tests can hold
# them against hmac and hashlib.
_hmac_pure = mac.hmac_sha256
_consteq_pure = mac.equal
_pads = mac.pads


def _pbkdf2_pure(password, salt, iterations, dklen):
    # RFC 8018 5.2. MicroPython's sha256 objects have no copy(), so the pad blocks are
    # hashed again in every iteration.
    ipad, opad = _pads(password)
    sha = hashlib.sha256
    out = b""
    block = 0
    while len(out) < dklen:
        block += 1
        h = sha(ipad)
        h.update(salt)
        h.update(block.to_bytes(4, "big"))
        h2 = sha(opad)
        h2.update(h.digest())
        u = h2.digest()
        acc = int.from_bytes(u, "big")
        for _ in range(iterations - 1):
            h = sha(ipad)
            h.update(u)
            h2 = sha(opad)
            h2.update(h.digest())
            u = h2.digest()
            acc ^= int.from_bytes(u, "big")
        out += acc.to_bytes(32, "big")
    return out[:dklen]


if rt.MICROPYTHON:
    from device.crypto import ed25519, p256

    backend = "pure"
    # Decoded keys are cached (small); a key's comb table (6 KiB Ed25519, 4 KiB P-256, packed)
    # is built at its first verify and kept for the TABLES_KEPT keys used last: the issuer
    # keys a shop scans all day. A root key verifies a list now and then: verify(keep=False)
    # drops its table at once. Under memory pressure every table goes (rebuilt when next
    # needed) and the verify runs again.
    _KEYS_MAX = 8
    TABLES_KEPT = 2

    def _decode(alg, pub):
        if alg == EDDSA:
            return ed25519.decode_point(pub)
        return p256.decode_point(pub)

    def _verify(alg, key, pub, msg, sig):
        if alg == EDDSA:
            return ed25519.verify_point(key, pub, msg, sig)
        return p256.verify_point(key, msg, sig)

    def _uncompressed(key):
        return p256.uncompressed(key)

    _hmac = _hmac_pure
    _pbkdf2 = _pbkdf2_pure
    _consteq = _consteq_pure
else:
    import hmac

    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    backend = "cryptography"
    _KEYS_MAX = 64
    TABLES_KEPT = None
    _CURVE = ec.SECP256R1()
    _ECDSA = ec.ECDSA(hashes.SHA256())

    def _decode(alg, pub):
        try:
            if alg == EDDSA:
                return Ed25519PublicKey.from_public_bytes(pub)
            return ec.EllipticCurvePublicKey.from_encoded_point(_CURVE, pub)
        except ValueError:
            return None

    def _verify(alg, key, pub, msg, sig):
        try:
            if alg == EDDSA:
                key.verify(sig, msg)
            else:
                r = int.from_bytes(sig[:32], "big")
                s = int.from_bytes(sig[32:], "big")
                if not (0 < r < _N and 0 < s < _N):
                    return False
                key.verify(encode_dss_signature(r, s), msg, _ECDSA)
        except InvalidSignature:
            return False
        return True

    def _uncompressed(key):
        return key.public_bytes(serialization.Encoding.X962,
                                serialization.PublicFormat.UncompressedPoint)

    def _hmac(key, msg):
        return hmac.new(key, msg, "sha256").digest()

    def _pbkdf2(password, salt, iterations, dklen):
        return hashlib.pbkdf2_hmac("sha256", password, salt, iterations, dklen)

    def _consteq(a, b):
        return hmac.compare_digest(a, b)


_keys = {}
_tabled = []  # (alg, pub) of the keys that hold a comb table, least recently used first


def _keep_table(k, key, keep):
    """After a pure verify: the key keeps its table only while it is among the last used."""
    if TABLES_KEPT is None or getattr(key, "table", None) is None:
        return
    if k in _tabled:
        _tabled.remove(k)
    if not keep:
        key.table = None
        _keys.pop(k, None)
        return
    _tabled.append(k)
    while len(_tabled) > TABLES_KEPT:
        old = _keys.get(_tabled.pop(0))
        if old is not None:
            old.table = None


def drop_tables():
    """Frees every comb table (the keys' and the base points'); each is rebuilt at its next
    use. For a heap running short."""
    for key in _keys.values():
        if hasattr(key, "table"):
            key.table = None
    del _tabled[:]
    if rt.MICROPYTHON:
        ed25519.drop_tables()
        p256.drop_tables()


def _key(alg, pub):
    """The decoded public key (cached per alg and bytes), or None when pub is not a valid key."""
    k = (alg, pub)
    key = _keys.get(k)
    if key is None:
        key = _decode(alg, pub)
        if key is None:
            return None
        if len(_keys) >= _KEYS_MAX:
            _keys.pop(next(iter(_keys)))
        _keys[k] = key
    return key


def _pub_fits(alg, pub):
    if not isinstance(pub, (bytes, bytearray)) or type(alg) is not int:
        return False
    if alg == EDDSA:
        return len(pub) == 32
    if alg == ES256:
        return len(pub) == 65 or len(pub) == 33
    return False


def verify(alg, pub, msg, sig, keep=True):
    """True when sig is a valid signature of msg under pub: alg -7 (ES256, sig raw r || s, high s
    accepted, pub a 65- or 33-byte SEC1 point) or -8 (Ed25519, pub 32 raw bytes). msg may be a
    tuple of buffers, the message in pieces: the pure verifiers hash them in order, so a 64 KiB
    list is never copied into one message. Any bad input (unknown alg, wrong types or lengths,
    a key that is not a point) gives False, never raises. keep=False: a key used once in a
    while (a root key): nothing of it stays in memory."""
    parts = msg if type(msg) is tuple else (msg,)
    if (not _pub_fits(alg, pub) or not all(isinstance(p, _BYTES) for p in parts)
            or not isinstance(sig, (bytes, bytearray)) or len(sig) != 64):
        return False
    pub = bytes(pub)
    key = _key(alg, pub)
    if key is None:
        return False
    if not rt.MICROPYTHON:
        msg = b"".join(bytes(p) for p in parts)
        return _verify(alg, key, pub, msg, bytes(sig))
    try:
        ok = _verify(alg, key, pub, msg, bytes(sig))
    except MemoryError:
        # the tables (up to 22 KiB) are what can be given back: drop them all and try again
        drop_tables()
        import gc
        gc.collect()
        ok = _verify(alg, key, pub, msg, bytes(sig))
    _keep_table((alg, pub), key, keep)
    return ok


def kid(alg, pub):
    """SPEC 2.1 key id: the first 8 bytes of SHA-256 of the 32 raw Ed25519 bytes, or of the
    65-byte uncompressed P-256 point (a 33-byte key is decompressed first). CryptoError (a
    ValueError) when pub does not fit alg or is not a point on P-256."""
    if not _pub_fits(alg, pub):
        raise CryptoError("bad_key", "not a %s public key" % _alg_name(alg))
    pub = bytes(pub)
    if alg == EDDSA:
        return hashlib.sha256(pub).digest()[:8]
    key = _key(alg, pub)
    if key is None:
        raise CryptoError("bad_key", "not a point on P-256")
    return hashlib.sha256(_uncompressed(key)).digest()[:8]


def _alg_name(alg):
    if alg == EDDSA and type(alg) is int:
        return "Ed25519"
    if alg == ES256 and type(alg) is int:
        return "P-256"
    return "alg %r" % (alg,)


def sha256(data):
    if not isinstance(data, _BYTES):
        raise CryptoError("bad_input", "sha256 wants bytes")
    return hashlib.sha256(data).digest()


def hmac_sha256(key, msg):
    """HMAC-SHA256 (RFC 2104) of msg under key."""
    if not isinstance(key, _BYTES) or not isinstance(msg, _BYTES):
        raise CryptoError("bad_input", "hmac_sha256 wants bytes")
    return _hmac(bytes(key), bytes(msg))


def pbkdf2_sha256(password, salt, iterations, dklen=32):
    """PBKDF2-HMAC-SHA256 (RFC 8018) of password and salt, dklen bytes."""
    if not isinstance(password, _BYTES) or not isinstance(salt, _BYTES):
        raise CryptoError("bad_input", "pbkdf2_sha256 wants bytes for password and salt")
    if type(iterations) is not int or iterations < 1:
        raise CryptoError("bad_input", "iterations must be an int >= 1")
    if type(dklen) is not int or not 1 <= dklen <= 1 << 20:
        raise CryptoError("bad_input", "dklen must be an int in 1..2^20")
    return _pbkdf2(bytes(password), bytes(salt), iterations, dklen)


def random_bytes(n):
    """n bytes from the OS's cryptographic random source."""
    if type(n) is not int or n < 0:
        raise CryptoError("bad_input", "random_bytes wants an int >= 0")
    return os.urandom(n)


def consteq(a, b):
    """a == b for byte strings, in time that does not depend on where they differ."""
    if not isinstance(a, _BYTES) or not isinstance(b, _BYTES):
        raise CryptoError("bad_input", "consteq wants bytes")
    return _consteq(bytes(a), bytes(b))
