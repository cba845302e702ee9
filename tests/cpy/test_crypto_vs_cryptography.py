"""The pure modules (device/crypto/ed25519.py, device/crypto/p256.py, device/crypto/sha512.py and
the hashlib-only
HMAC/PBKDF2 in device/crypto.py, which are what MicroPython runs) and device.crypto against
`cryptography`, hashlib and hmac: random keys and messages, valid and tampered signatures."""
import hashlib
import hmac

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from device import crypto
from device.crypto import ed25519, p256, sha512

N = p256.N
L = ed25519.L
RAW = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)
UNCOMPRESSED = (serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
COMPRESSED = (serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)


def flip(data, bit):
    b = bytearray(data)
    if not b:
        return b"\x01"
    bit %= 8 * len(b)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


# ---------------------------------------------------------------- Ed25519

def openssl_ed25519(pub, msg, sig):
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, msg)
        return True
    except (InvalidSignature, ValueError):
        return False


ED_TAMPER = ["none", "msg", "r", "s", "pub", "s_plus_l", "s_is_l", "swap", "pub_high_bit"]


@settings(max_examples=500, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), msg=st.binary(max_size=300),
       tamper=st.sampled_from(ED_TAMPER), bit=st.integers(0, 1 << 16))
def test_ed25519_pure_and_port_agree_with_cryptography(seed, msg, tamper, bit):
    sk = Ed25519PrivateKey.from_private_bytes(seed)
    pub = sk.public_key().public_bytes(*RAW)
    sig = sk.sign(msg)
    cases = [(pub, msg, sig)]
    s = int.from_bytes(sig[32:], "little")
    if tamper == "msg":
        cases.append((pub, flip(msg, bit), sig))
    elif tamper == "r":
        cases.append((pub, msg, flip(sig[:32], bit) + sig[32:]))
    elif tamper == "s":
        cases.append((pub, msg, sig[:32] + flip(sig[32:], bit)))
    elif tamper == "pub":
        cases.append((flip(pub, bit), msg, sig))
    elif tamper == "s_plus_l":  # the same point equation, but s not reduced: refused
        cases.append((pub, msg, sig[:32] + (s + L).to_bytes(32, "little")))
    elif tamper == "s_is_l":
        cases.append((pub, msg, sig[:32] + L.to_bytes(32, "little")))
    elif tamper == "swap":
        cases.append((pub, msg, sig[32:] + sig[:32]))
    elif tamper == "pub_high_bit":  # the sign of x flipped: -A
        cases.append((pub[:31] + bytes([pub[31] ^ 0x80]), msg, sig))
    for k, m, sg in cases:
        want = openssl_ed25519(k, m, sg)
        assert ed25519.verify(k, m, sg) is want, (tamper, k.hex(), m.hex(), sg.hex())
        assert crypto.verify(crypto.EDDSA, k, m, sg) is want
    assert openssl_ed25519(*cases[0])


# ---------------------------------------------------------------- ECDSA P-256

def openssl_es256(pub, msg, sig):
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), pub)
    except ValueError:
        return False
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    if not (0 < r < N and 0 < s < N):
        return False
    try:
        key.verify(encode_dss_signature(r, s), msg, ec.ECDSA(hashes.SHA256()))
        return True
    except InvalidSignature:
        return False


def raw(r, s):
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


ES_TAMPER = ["none", "msg", "r", "s", "pub", "swap", "high_s", "r0", "s0", "rn", "sn",
             "r_plus_n", "s_plus_n", "other_y"]


@settings(max_examples=500, deadline=None)
@given(d=st.integers(1, N - 1), msg=st.binary(max_size=300), tamper=st.sampled_from(ES_TAMPER),
       bit=st.integers(0, 1 << 16), compress=st.booleans())
def test_es256_pure_and_port_agree_with_cryptography(d, msg, tamper, bit, compress):
    sk = ec.derive_private_key(d, ec.SECP256R1())
    pub = sk.public_key().public_bytes(*(COMPRESSED if compress else UNCOMPRESSED))
    r, s = decode_dss_signature(sk.sign(msg, ec.ECDSA(hashes.SHA256())))
    sig = raw(r, s)
    cases = [(pub, msg, sig)]
    if tamper == "msg":
        cases.append((pub, flip(msg, bit), sig))
    elif tamper == "r":
        cases.append((pub, msg, flip(sig[:32], bit) + sig[32:]))
    elif tamper == "s":
        cases.append((pub, msg, sig[:32] + flip(sig[32:], bit)))
    elif tamper == "pub":
        cases.append((flip(pub, bit), msg, sig))
    elif tamper == "swap":
        cases.append((pub, msg, raw(s, r)))
    elif tamper == "high_s":  # s -> n - s is still valid: no low-s rule (SPEC 2.1)
        cases.append((pub, msg, raw(r, N - s)))
    elif tamper == "r0":
        cases.append((pub, msg, raw(0, s)))
    elif tamper == "s0":
        cases.append((pub, msg, raw(r, 0)))
    elif tamper == "rn":
        cases.append((pub, msg, raw(N, s)))
    elif tamper == "sn":
        cases.append((pub, msg, raw(r, N)))
    elif tamper == "r_plus_n" and r + N < 1 << 256:
        cases.append((pub, msg, raw(r + N, s)))
    elif tamper == "s_plus_n" and s + N < 1 << 256:
        cases.append((pub, msg, raw(r, s + N)))
    elif tamper == "other_y":  # -Q: the other root of the same x
        other = sk.public_key().public_bytes(*COMPRESSED)
        cases.append((bytes([other[0] ^ 1]) + other[1:], msg, sig))
    for k, m, sg in cases:
        want = openssl_es256(k, m, sg)
        assert p256.verify(k, m, sg) is want, (tamper, k.hex(), m.hex(), sg.hex())
        assert crypto.verify(crypto.ES256, k, m, sg) is want
    assert openssl_es256(*cases[0])
    if tamper == "high_s":
        assert p256.verify(*cases[1])


@settings(max_examples=200, deadline=None)
@given(d=st.integers(1, N - 1))
def test_p256_decoding_and_kid_agree_with_cryptography(d):
    key = ec.derive_private_key(d, ec.SECP256R1()).public_key()
    full = key.public_bytes(*UNCOMPRESSED)
    short = key.public_bytes(*COMPRESSED)
    q = p256.decode_point(short)
    assert p256.uncompressed(q) == full
    assert p256.uncompressed(p256.decode_point(full)) == full
    want = hashlib.sha256(full).digest()[:8]
    assert crypto.kid(crypto.ES256, short) == crypto.kid(crypto.ES256, full) == want


def affine(X, Y, Z):
    zi = pow(Z, -1, p256.P)
    return X * zi * zi % p256.P, Y * zi * zi * zi % p256.P


def point_of(k):
    """k G from cryptography, affine, or None for the point at infinity."""
    k %= N
    if k == 0:
        return None
    full = ec.derive_private_key(k, ec.SECP256R1()).public_key().public_bytes(*UNCOMPRESSED)
    return int.from_bytes(full[1:33], "big"), int.from_bytes(full[33:], "big")


def sharing_top_columns(k, cols, noise):
    """An odd scalar whose signed-comb digits equal k's in the top `cols` columns."""
    t, d = p256.TEETH, p256.SPACING
    full = (1 << (t * d)) - 1
    kk = (k + full) >> 1
    low = (1 << (d - cols)) - 1
    mask = sum(low << (i * d) for i in range(t))
    kk = (kk & ~mask) | (noise & mask)
    return 2 * kk - full


_TG = None
_TNEG = None


@settings(max_examples=150, deadline=None)
@given(ka=st.integers(1, N - 1), cols=st.integers(1, p256.SPACING), noise=st.integers(0, 1 << 259))
def test_p256_comb_exceptional_additions(ka, cols, noise):
    # scalars sharing their top comb columns make the comb add a point to itself (G with G) or
    # to its negation (G with -G) and run through infinity; the sums must still be right
    global _TG, _TNEG
    if _TG is None:
        _TG = p256._comb_table(p256._GX, p256._GY)
        _TNEG = p256._comb_table(p256._GX, p256.P - p256._GY)
    ka |= 1
    kb = sharing_top_columns(ka, cols, noise)
    assert kb > 0 and kb & 1
    for table, kb_sign in ((_TG, 1), (_TNEG, -1)):
        X, Y, Z = p256._double_comb(_TG, ka, table, kb)
        want = point_of(ka + kb_sign * kb)
        if want is None:
            assert Z == 0
        else:
            assert Z != 0 and affine(X, Y, Z) == want


# ---------------------------------------------------------------- hashes, HMAC, PBKDF2

@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=700), cuts=st.lists(st.integers(0, 700), max_size=5))
def test_sha512_matches_hashlib(data, cuts):
    want = hashlib.sha512(data).digest()
    for engine in sha512.engines():
        assert sha512.sha512(data, _engine=engine).digest() == want
        h = sha512.sha512(_engine=engine)
        last = 0
        for c in sorted(min(c, len(data)) for c in cuts):
            h.update(data[last:c])
            last = c
        h.update(data[last:])
        assert h.digest() == want


@settings(max_examples=200, deadline=None)
@given(key=st.binary(max_size=200), msg=st.binary(max_size=300))
def test_hmac_matches_hmac_module(key, msg):
    want = hmac.new(key, msg, "sha256").digest()
    assert crypto._hmac_pure(key, msg) == want
    assert crypto.hmac_sha256(key, msg) == want


@settings(max_examples=100, deadline=None)
@given(password=st.binary(max_size=100), salt=st.binary(max_size=40),
       iterations=st.integers(1, 40), dklen=st.integers(1, 100))
def test_pbkdf2_matches_hashlib(password, salt, iterations, dklen):
    want = hashlib.pbkdf2_hmac("sha256", password, salt, iterations, dklen)
    assert crypto._pbkdf2_pure(password, salt, iterations, dklen) == want
    assert crypto.pbkdf2_sha256(password, salt, iterations, dklen) == want


@settings(max_examples=200, deadline=None)
@given(a=st.binary(max_size=40), b=st.binary(max_size=40))
def test_consteq_matches_equality(a, b):
    assert crypto._consteq_pure(a, b) is (a == b)
    assert crypto.consteq(a, b) is (a == b)
    assert crypto._consteq_pure(a, a) is True
