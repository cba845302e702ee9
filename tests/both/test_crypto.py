# The crypto port (device/crypto.py) and the pure modules behind it on MicroPython
# (device/crypto/sha512.py, device/crypto/ed25519.py, device/crypto/p256.py): FIPS 180-4, RFC 8032,
# RFC 4231 and
# RFC 7914 vectors and every Wycheproof vector, on both runtimes. On CPython the pure modules
# run the Wycheproof vectors too, next to `cryptography`.
import binascii

from device import crypto
from device.crypto import ed25519, p256, sha512
from tests.both.util import load_vectors, raises

PURE = crypto.backend == "pure"
N = p256.N
L = ed25519.L


def h(s):
    return binascii.unhexlify(s)


def hx(b):
    return binascii.hexlify(b).decode()


# ---------------------------------------------------------------- SHA-512 (FIPS 180-4)

SHA512_VECTORS = [
    (b"", "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
          "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"),
    (b"abc", "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
             "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"),
    (b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
     "204a8fc6dda82f0a0ced7beb8e08a41657c16ef468b228a8279be331a703c335"
     "96fd15c13b1b07f9aa1d3bea57789ca031ad85c7a71dd70354ec631238ca3445"),
    (b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
     b"ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
     "8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018"
     "501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909"),
]


def test_sha512_fips_vectors_both_engines():
    for engine in sha512.engines():
        for msg, want in SHA512_VECTORS:
            assert hx(sha512.sha512(msg, _engine=engine).digest()) == want
    for msg, want in SHA512_VECTORS:
        h1 = sha512.sha512(msg)
        assert h1.hexdigest() == want
        assert h1.hexdigest() == want  # digest() leaves the state alone


def test_sha512_incremental_matches_one_shot_across_block_edges():
    data = bytes(range(256)) * 2
    for n in (0, 1, 111, 112, 127, 128, 129, 239, 240, 255, 256, 257, 384, 512):
        msg = data[:n]
        whole = [sha512.sha512(msg, _engine=e).digest() for e in sha512.engines()]
        assert whole[0] == whole[1]
        for step in (1, 7, 64, 127, 128, 200):
            h1 = sha512.sha512()
            for i in range(0, n, step):
                h1.update(bytearray(msg[i:i + step]))
            assert h1.digest() == whole[0], (n, step)
    h2 = sha512.sha512(memoryview(data)[3:300])
    assert h2.digest() == sha512.sha512(data[3:300]).digest()


def test_sha512_million_a():
    h1 = sha512.sha512()
    chunk = b"a" * 1000
    for _ in range(1000):
        h1.update(chunk)
    assert h1.hexdigest() == ("e718483d0ce769644e2e42c7bc15b4638e1f98b13b2044285632a803afa973eb"
                              "de0ff244877ea60a4cb0432ce577c31beb009c5c2c49aa2e4eadb217ad8cc09b")


def test_sha512_rejects_text():
    raises(TypeError, sha512.sha512, "abc")
    raises(TypeError, sha512.sha512().update, 5)


# ---------------------------------------------------------------- Ed25519 (RFC 8032 7.1)

RFC8032_MSG_1024 = h(
    "08b8b2b733424243760fe426a4b54908632110a66c2f6591eabd3345e3e4eb98fa6e264bf09efe12ee50f8f54e9f77b1"
    "e355f6c50544e23fb1433ddf73be84d879de7c0046dc4996d9e773f4bc9efe5738829adb26c81b37c93a1b270b20329d"
    "658675fc6ea534e0810a4432826bf58c941efb65d57a338bbd2e26640f89ffbc1a858efcb8550ee3a5e1998bd177e93a"
    "7363c344fe6b199ee5d02e82d522c4feba15452f80288a821a579116ec6dad2b3b310da903401aa62100ab5d1a36553e"
    "06203b33890cc9b832f79ef80560ccb9a39ce767967ed628c6ad573cb116dbefefd75499da96bd68a8a97b928a8bbc10"
    "3b6621fcde2beca1231d206be6cd9ec7aff6f6c94fcd7204ed3455c68c83f4a41da4af2b74ef5c53f1d8ac70bdcb7ed1"
    "85ce81bd84359d44254d95629e9855a94a7c1958d1f8ada5d0532ed8a5aa3fb2d17ba70eb6248e594e1a2297acbbb39d"
    "502f1a8c6eb6f1ce22b3de1a1f40cc24554119a831a9aad6079cad88425de6bde1a9187ebb6092cf67bf2b13fd65f270"
    "88d78b7e883c8759d2c4f5c65adb7553878ad575f9fad878e80a0c9ba63bcbcc2732e69485bbc9c90bfbd62481d9089b"
    "eccf80cfe2df16a2cf65bd92dd597b0707e0917af48bbb75fed413d238f5555a7a569d80c3414a8d0859dc65a46128ba"
    "b27af87a71314f318c782b23ebfe808b82b0ce26401d2e22f04d83d1255dc51addd3b75a2b1ae0784504df543af8969b"
    "e3ea7082ff7fc9888c144da2af58429ec96031dbcad3dad9af0dcbaaaf268cb8fcffead94f3c7ca495e056a9b47acdb7"
    "51fb73e666c6c655ade8297297d07ad1ba5e43f1bca32301651339e22904cc8c42f58c30c04aafdb038dda0847dd988d"
    "cda6f3bfd15c4b4c4525004aa06eeff8ca61783aacec57fb3d1f92b0fe2fd1a85f6724517b65e614ad6808d6f6ee34df"
    "f7310fdc82aebfd904b01e1dc54b2927094b2db68d6f903b68401adebf5a7e08d78ff4ef5d63653a65040cf9bfd4aca7"
    "984a74d37145986780fc0b16ac451649de6188a7dbdf191f64b5fc5e2ab47b57f7f7276cd419c17a3ca8e1b939ae49e4"
    "88acba6b965610b5480109c8b17b80e1b7b750dfc7598d5d5011fd2dcc5600a32ef5b52a1ecc820e308aa342721aac09"
    "43bf6686b64b2579376504ccc493d97e6aed3fb0f9cd71a43dd497f01f17c0e2cb3797aa2a2f256656168e6c496afc5f"
    "b93246f6b1116398a346f1a641f3b041e989f7914f90cc2c7fff357876e506b50d334ba77c225bc307ba537152f3f161"
    "0e4eafe595f6d9d90d11faa933a15ef1369546868a7f3a45a96768d40fd9d03412c091c6315cf4fde7cb68606937380d"
    "b2eaaa707b4c4185c32eddcdd306705e4dc1ffc872eeee475a64dfac86aba41c0618983f8741c5ef68d3a101e8a3b8ca"
    "c60c905c15fc910840b94c00a0b9d0"
)

# (name, public key, message, signature)
RFC8032 = [
    ("TEST 1", "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", b"",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
     "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("TEST 2", "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", h("72"),
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
     "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
    ("TEST 3", "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", h("af82"),
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
     "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
    ("TEST 1024", "278117fc144c72340f67d0f2316e8386ceffbf2b2428c9c51fef7c597f1d426e",
     RFC8032_MSG_1024,
     "0aab4c900501b3e24d7cdf4663326a3a87df5e4843b2cbdb67cbf6e460fec350"
     "aa5371b1508f9f4528ecea23c436d94b5e8fcd4f681e30a6ac00a9704a188a03"),
    ("TEST SHA(abc)", "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
     h(SHA512_VECTORS[1][1]),
     "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b589"
     "09351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704"),
]


def test_rfc8032_vectors():
    assert len(RFC8032_MSG_1024) == 1023
    for name, pub, msg, sig in RFC8032:
        pub = h(pub)
        sig = h(sig)
        assert crypto.verify(crypto.EDDSA, pub, msg, sig), name
        assert ed25519.verify(pub, msg, sig), name
        assert not crypto.verify(crypto.EDDSA, pub, msg + b"x", sig), name
        bad = bytearray(sig)
        bad[5] ^= 1
        assert not crypto.verify(crypto.EDDSA, pub, msg, bytes(bad)), name
        assert not ed25519.verify(pub, msg, bytes(bad)), name


def test_ed25519_wycheproof():
    data = load_vectors("wycheproof/ed25519_test.json")
    count = 0
    for group in data["testGroups"]:
        pub = h(group["publicKey"]["pk"])
        for t in group["tests"]:
            msg = h(t["msg"])
            sig = h(t["sig"])
            got = [crypto.verify(crypto.EDDSA, pub, msg, sig)]
            if not PURE:
                got.append(ed25519.verify(pub, msg, sig))
            for ok in got:
                if t["result"] == "valid":
                    assert ok is True, t["tcId"]
                elif t["result"] == "invalid":
                    assert ok is False, t["tcId"]
            count += 1
    assert count == data["numberOfTests"] == 151


def test_ed25519_s_must_be_reduced():
    name, pub, msg, sig = RFC8032[1]
    pub = h(pub)
    sig = h(sig)
    s = int.from_bytes(sig[32:], "little")
    same_point = sig[:32] + (s + L).to_bytes(32, "little")  # [s + L]B == [s]B, still refused
    assert not crypto.verify(crypto.EDDSA, pub, msg, same_point)
    assert not ed25519.verify(pub, msg, same_point)


# R = [12345]B, s = 12345: valid under any key of small order, here the identity (0, 1)
IDENTITY_SIG = h("ef4f62f8479733ad879cfaced3c89a9c39dd4fc795ef2efa1c3eafe4d729a081"
                 "3930000000000000000000000000000000000000000000000000000000000000")


def test_ed25519_key_decoding_is_as_lenient_as_openssl():
    # OpenSSL takes y >= p modulo p and x = 0 with the sign bit set as x = 0; so do we
    p = ed25519.P
    for y_enc in (1, 1 | 1 << 255, p + 1, (p + 1) | 1 << 255):
        pub = y_enc.to_bytes(32, "little")
        assert crypto.verify(crypto.EDDSA, pub, b"hello", IDENTITY_SIG), hex(y_enc)
        assert ed25519.verify(pub, b"hello", IDENTITY_SIG)
    assert not crypto.verify(crypto.EDDSA, bytes(32) + b"", b"hellO", IDENTITY_SIG)


def test_ed25519_point_not_on_curve():
    pub = (2).to_bytes(32, "little")  # no x with y = 2 on the curve
    assert ed25519.decode_point(pub) is None
    assert not crypto.verify(crypto.EDDSA, pub, b"", h(RFC8032[0][3]))


# ---------------------------------------------------------------- ECDSA P-256 (Wycheproof)

def compressed(pub65):
    return bytes([2 + (pub65[64] & 1)]) + pub65[1:33]


def test_ecdsa_wycheproof_uncompressed_and_compressed_keys():
    data = load_vectors("wycheproof/ecdsa_secp256r1_sha256_p1363_test.json")
    count = 0
    for group in data["testGroups"]:
        pub = h(group["publicKey"]["uncompressed"])
        for key in (pub, compressed(pub)):
            for t in group["tests"]:
                msg = h(t["msg"])
                sig = h(t["sig"])
                got = [crypto.verify(crypto.ES256, key, msg, sig)]
                if not PURE:
                    got.append(p256.verify(key, msg, sig))
                for ok in got:
                    if t["result"] == "valid":
                        assert ok is True, t["tcId"]
                    elif t["result"] == "invalid":
                        assert ok is False, t["tcId"]
                count += 1
    assert count == 2 * data["numberOfTests"] == 524


def _valid_es256():
    group = load_vectors("wycheproof/ecdsa_secp256r1_sha256_p1363_test.json")["testGroups"][0]
    t = [t for t in group["tests"] if t["result"] == "valid"][0]
    return h(group["publicKey"]["uncompressed"]), h(t["msg"]), h(t["sig"])


def test_ecdsa_high_s_is_valid_and_ranges_are_checked():
    pub, msg, sig = _valid_es256()
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")

    def sig_of(r, s):
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    assert crypto.verify(crypto.ES256, pub, msg, sig)
    assert crypto.verify(crypto.ES256, pub, msg, sig_of(r, N - s))  # no low-s rule (SPEC 2.1)
    assert p256.verify(pub, msg, sig_of(r, N - s))
    for rr, ss in ((0, s), (r, 0), (N, s), (r, N), (r + N, s) if r + N < 1 << 256 else (N, N),
                   (s, r), ((1 << 256) - 1, s)):
        assert not crypto.verify(crypto.ES256, pub, msg, sig_of(rr, ss)), (rr, ss)
        assert not p256.verify(pub, msg, sig_of(rr, ss))


def test_a_message_in_pieces_verifies_as_the_whole():
    # the trust store hands a list's signed bytes over as (prefix, view of the payload)
    longest = RFC8032[0]
    for e in RFC8032:
        if len(e[2]) > len(longest[2]):
            longest = e
    name, pub, msg, sig = longest
    pub, sig = h(pub), h(sig)
    cut = len(msg) // 3
    for alg, key, m, s in ((crypto.EDDSA, pub, msg, sig),) + ((crypto.ES256,) + _valid_es256(),):
        k = len(m) // 3
        pieces = (m[:k], memoryview(m)[k:2 * k], bytearray(m[2 * k:]))
        assert crypto.verify(alg, key, pieces, s), alg
        assert crypto.verify(alg, key, (m,), s) and crypto.verify(alg, key, (b"", m), s)
        assert not crypto.verify(alg, key, (m[:k], m[k + 1:]), s), alg
        assert not crypto.verify(alg, key, (m[:k], "text"), s), alg
    assert cut and ed25519.verify_point(ed25519.decode_point(pub), pub, (msg[:cut], msg[cut:]),
                                        sig)


def test_p256_invalid_keys():
    pub, msg, sig = _valid_es256()
    assert crypto.verify(crypto.ES256, compressed(pub), msg, sig)
    y_flipped = bytes([5 - compressed(pub)[0]]) + pub[1:33]  # the other root: -Q
    assert not crypto.verify(crypto.ES256, y_flipped, msg, sig)
    off_curve = pub[:64] + bytes([pub[64] ^ 1])
    x_big = b"\x02" + (p256.P + 3).to_bytes(32, "big")
    x_no_root = None
    for x in range(1, 50):  # an x with no y on the curve
        cand = b"\x02" + x.to_bytes(32, "big")
        if p256.decode_point(cand) is None:
            x_no_root = cand
            break
    assert x_no_root is not None
    hybrid = bytes([6 + (pub[64] & 1)]) + pub[1:]
    for bad in (off_curve, x_big, x_no_root, hybrid, b"\x00", b"\x05" + pub[1:33],
                b"\x04" + pub[1:33] + (p256.P + 1).to_bytes(32, "big")):
        assert p256.decode_point(bad) is None, hx(bad)
        assert not crypto.verify(crypto.ES256, bad, msg, sig), hx(bad)
        e = raises(crypto.CryptoError, crypto.kid, crypto.ES256, bad)
        assert e.code == "bad_key"


def test_p256_comb_through_the_point_at_infinity():
    # crafted signatures can make u1 G + u2 Q pass through infinity: P + (-P) must give it (Z = 0)
    # and infinity + P must give P back; G against -G with equal scalars cancels in every column
    tg = p256._comb_table(p256._GX, p256._GY)
    tneg = p256._comb_table(p256._GX, p256.P - p256._GY)
    for k in (1, 3, 12345677, N - 2, 2 * N - 1):
        assert p256._double_comb(tg, k, tneg, k)[2] == 0
        assert p256._double_comb(tg, k, tg, 2 * N - k)[2] == 0  # k G + (2n - k) G
    X, Y, Z = p256._double_comb(tg, 3, tneg, 1)  # 3 G - G = 2 G
    x2, y2, z2 = p256._double(p256._GX, p256._GY, 1)
    assert (X * z2 * z2 - x2 * Z * Z) % p256.P == 0
    assert (Y * z2 * z2 * z2 - y2 * Z * Z * Z) % p256.P == 0


# ---------------------------------------------------------------- the port's other rules

def test_verify_bad_input_is_false_never_an_exception():
    name, pub, msg, sig = RFC8032[2]
    pub = h(pub)
    sig = h(sig)
    assert crypto.verify(-8, pub, msg, sig)
    assert crypto.verify(-8, bytearray(pub), memoryview(msg), bytearray(sig))
    for alg, k, m, s in ((-7, pub, msg, sig), (-9, pub, msg, sig), (True, pub, msg, sig),
                         (-8.0, pub, msg, sig), ("-8", pub, msg, sig), (None, pub, msg, sig),
                         (-8, pub[:31], msg, sig), (-8, pub + b"\x00", msg, sig),
                         (-8, hx(pub), msg, sig), (-8, None, msg, sig), (-8, pub, "af82", sig),
                         (-8, pub, None, sig), (-8, pub, msg, sig[:63]),
                         (-8, pub, msg, sig + b"\x00"), (-8, pub, msg, hx(sig)),
                         (-8, pub, msg, None), (-7, b"", b"", b""), (-7, 5, msg, sig)):
        assert crypto.verify(alg, k, m, s) is False, (alg, k, m, s)


def test_kid_of_known_keys():
    rfc1 = h(RFC8032[0][1])
    assert crypto.kid(crypto.EDDSA, rfc1) == h("21fe31dfa154a261")
    assert crypto.kid(crypto.EDDSA, rfc1) == crypto.sha256(rfc1)[:8]
    pub, _, _ = _valid_es256()
    assert crypto.kid(crypto.ES256, pub) == h("69dd5db1cd20a001")
    assert crypto.kid(crypto.ES256, compressed(pub)) == h("69dd5db1cd20a001")
    assert crypto.kid(crypto.ES256, bytearray(compressed(pub))) == h("69dd5db1cd20a001")
    for alg, k in ((crypto.EDDSA, rfc1[:31]), (crypto.ES256, rfc1), (-9, rfc1), (True, pub),
                   (crypto.EDDSA, hx(rfc1)), (crypto.ES256, None)):
        e = raises(crypto.CryptoError, crypto.kid, alg, k)
        assert e.code == "bad_key"
        assert isinstance(e, ValueError)


def test_sha256():
    assert hx(crypto.sha256(b"abc")) == ("ba7816bf8f01cfea414140de5dae2223"
                                         "b00361a396177a9cb410ff61f20015ad")
    assert crypto.sha256(bytearray(b"abc")) == crypto.sha256(memoryview(b"xabc")[1:])
    assert raises(crypto.CryptoError, crypto.sha256, "abc").code == "bad_input"


# RFC 4231 test cases 1-7 (case 5's output is truncated to 128 bits)
HMAC_VECTORS = [
    (b"\x0b" * 20, b"Hi There",
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?",
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 20, b"\xdd" * 50,
     "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    (bytes(range(1, 26)), b"\xcd" * 50,
     "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
    (b"\x0c" * 20, b"Test With Truncation", "a3b6167473100ee06e0c796c2955552b"),
    (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
    (b"\xaa" * 131, b"This is a test using a larger than block-size key and a larger than "
                    b"block-size data. The key needs to be hashed before being used by the "
                    b"HMAC algorithm.",
     "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
]


def test_hmac_sha256_rfc4231():
    for key, msg, want in HMAC_VECTORS:
        got = hx(crypto.hmac_sha256(key, msg))
        assert got[:len(want)] == want, want
    key, msg, want = HMAC_VECTORS[1]
    assert hx(crypto.hmac_sha256(bytearray(key), memoryview(msg))) == want
    assert raises(crypto.CryptoError, crypto.hmac_sha256, "Jefe", msg).code == "bad_input"


def test_pbkdf2_sha256_rfc7914():
    assert hx(crypto.pbkdf2_sha256(b"passwd", b"salt", 1, 64)) == (
        "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        "49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783")
    assert hx(crypto.pbkdf2_sha256(b"Password", b"NaCl", 80000, 64)) == (
        "4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56"
        "a1d425a1225833549adb841b51c9b3176a272bdebba1d078478f62b397f33c8d")


def test_pbkdf2_sha256_pin_form_and_bad_input():
    # the SPEC 5 PIN form: 32 bytes, 1000 iterations (value from CPython's hashlib.pbkdf2_hmac)
    assert hx(crypto.pbkdf2_sha256(b"1234", bytes(range(16)), 1000)) == (
        "2240ea2a22754a3c4610356ef8e4d7acf25af2ac3d2d11866de97a8b7812c52c")
    longer = crypto.pbkdf2_sha256(b"1234", b"s", 3, 40)
    assert len(longer) == 40 and longer[:32] == crypto.pbkdf2_sha256(b"1234", b"s", 3)
    for args in ((b"p", b"s", 0), (b"p", b"s", -1), (b"p", b"s", True), (b"p", b"s", "5"),
                 ("p", b"s", 1), (b"p", None, 1), (b"p", b"s", 1, 0), (b"p", b"s", 1, 1.5)):
        assert raises(crypto.CryptoError, crypto.pbkdf2_sha256, *args).code == "bad_input"


def test_random_bytes_and_consteq():
    a = crypto.random_bytes(16)
    b = crypto.random_bytes(16)
    assert type(a) is bytes and len(a) == 16 and a != b
    assert crypto.random_bytes(0) == b""
    for bad in (-1, 1.0, "16", None):
        assert raises(crypto.CryptoError, crypto.random_bytes, bad).code == "bad_input"
    assert crypto.consteq(b"abc", b"abc")
    assert crypto.consteq(b"abc", bytearray(b"abc"))
    assert crypto.consteq(b"", b"")
    assert not crypto.consteq(b"abc", b"abd")
    assert not crypto.consteq(b"abc", b"ab")
    assert not crypto.consteq(b"ab", b"abc")
    assert raises(crypto.CryptoError, crypto.consteq, "abc", b"abc").code == "bad_input"


def test_backend_matches_runtime():
    from device.ports import runtime as rt
    assert crypto.backend == ("pure" if rt.MICROPYTHON else "cryptography")


def test_packed_points_keep_every_element():
    from device.crypto import curve
    top = (1 << 256) - 1
    pts = curve.Packed(70, 3)  # 70 * 96 B: points across the 1 KiB pieces' edges
    vals = [(0, top, 1)] + [((j * 0x9E3779B97F4A7C15) ** 4 & top, top - j, j) for j in range(69)]
    for v in vals:
        pts.append(v)
    assert [pts.point(j) for j in range(70)] == vals
    assert pts.get(69, 1) == top - 68
    inv = curve.inverses(pts, 1, p256.P)
    assert all(inv.get(j, 0) * (top - (j - 1)) % p256.P == 1 for j in range(1, 70))


def test_a_comb_table_builds_in_48_kib_free():
    # Issue 14: the first verify after a boot builds comb tables; their points wait packed
    # (curve.Packed) for the one inversion, so 48 KiB free is room enough (as Python ints they
    # took about 100 KiB on the unix port). MicroPython only: CPython has no heap to fill.
    import gc
    if not hasattr(gc, "mem_free"):
        return
    want = (ed25519._comb_table(ed25519._BX, ed25519._BY), p256._comb_table(p256._GX, p256._GY))
    gc.collect()
    ballast = []
    try:
        while gc.mem_free() > 48 * 1024 + 64:
            ballast.append(bytearray(min(1024, gc.mem_free() - 48 * 1024)))
    except MemoryError:
        pass  # what is left is holes too small for the ballast's pieces
    gc.collect()
    try:
        got = (ed25519._comb_table(ed25519._BX, ed25519._BY),
               p256._comb_table(p256._GX, p256._GY))
    finally:
        del ballast[:]
    assert got == want
