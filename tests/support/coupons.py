"""Makes signed coupons, trust lists and revocation lists for tests (CPython only: cbor2 and
cryptography, independent of the device code).

    python -m tests.support.coupons      # rewrites tests/both/fixtures/coupon_cases.json

The fixture lets the both-runtime tests (which cannot sign on MicroPython) cover what the shared
vectors miss. Keys come from fixed seeds and ECDSA signs deterministically (RFC 6979), so the
output is the same on every run.
"""
import hashlib
import json
import os
import sys

import cbor2
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
ED25519_L = 2**252 + 27742317777372353535851937790883648493
ALG_ES256 = -7
ALG_EDDSA = -8

NOW = 1795000000
DAY = 86400
STORE = "S-001"
CURRENCY = "CNY"
MERCHANT = "M-ACME"

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "both", "fixtures", "coupon_cases.json")

_B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"


def b45encode(data):
    """RFC 9285, written here again so the fixtures do not depend on protocol/base45.py."""
    out = []
    for i in range(0, len(data) - 1, 2):
        v = data[i] * 256 + data[i + 1]
        out += [_B45[v % 45], _B45[v // 45 % 45], _B45[v // 2025]]
    if len(data) % 2:
        v = data[-1]
        out += [_B45[v % 45], _B45[v // 45]]
    return "".join(out)


def _seed(name):
    return hashlib.sha256(b"terminal-agent test key: " + name.encode()).digest()


class Key:
    """A signing key from a fixed seed. compressed: publish the 33-byte P-256 point."""

    def __init__(self, name, alg=ALG_EDDSA, compressed=False, iss=MERCHANT,
                 nbf=NOW - 30 * DAY, exp=NOW + 300 * DAY):
        self.name = name
        self.alg = alg
        self.iss = iss
        self.nbf = nbf
        self.exp = exp
        if alg == ALG_EDDSA:
            self.priv = ed25519.Ed25519PrivateKey.from_private_bytes(_seed(name))
            self.pub = self.priv.public_key().public_bytes(serialization.Encoding.Raw,
                                                           serialization.PublicFormat.Raw)
            self.kid = hashlib.sha256(self.pub).digest()[:8]
        else:
            scalar = int.from_bytes(_seed(name), "big") % (P256_N - 1) + 1
            self.priv = ec.derive_private_key(scalar, ec.SECP256R1())
            pk = self.priv.public_key()
            full = pk.public_bytes(serialization.Encoding.X962,
                                   serialization.PublicFormat.UncompressedPoint)
            self.kid = hashlib.sha256(full).digest()[:8]
            self.pub = full if not compressed else pk.public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)

    def sign(self, msg):
        if self.alg == ALG_EDDSA:
            return self.priv.sign(msg)
        der = self.priv.sign(msg, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
        r, s = decode_dss_signature(der)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def entry(self):
        return {"kid": self.kid, "alg": self.alg, "pub": self.pub, "iss": self.iss,
                "nbf": self.nbf, "exp": self.exp}


def high_s(sig):
    """The other valid ECDSA signature (r, n - s)."""
    r, s = sig[:32], int.from_bytes(sig[32:], "big")
    return r + (P256_N - s).to_bytes(32, "big")


def sig_structure(prot_b, payload):
    return cbor2.dumps(["Signature1", prot_b, b"", payload])


def sign1(key, payload, prot=None, unprot=None, tagged=True, sig=None, signer=None):
    """COSE_Sign1 bytes. payload: dict (CBOR-encoded here) or bytes. prot: dict, or bytes used
    as the protected bstr as is. signer signs instead of key (a rogue claiming key's kid)."""
    if prot is None:
        prot = {1: key.alg, 4: key.kid}
    prot_b = prot if isinstance(prot, bytes) else cbor2.dumps(prot)
    payload_b = payload if isinstance(payload, bytes) else cbor2.dumps(payload)
    if sig is None:
        sig = (signer or key).sign(sig_structure(prot_b, payload_b))
    arr = [prot_b, {} if unprot is None else unprot, payload_b, sig]
    return cbor2.dumps(cbor2.CBORTag(18, arr) if tagged else arr)


def token(cose):
    return "PC1:" + b45encode(cose)


NULL = object()  # a claim present with the value CBOR null


def claims(**over):
    """A valid pct coupon's claims; keyword overrides, None removes a claim, NULL sets null."""
    c = {1: MERCHANT, 7: bytes.fromhex("00000000000020" + "01"), 6: NOW - DAY, 5: NOW - DAY,
         4: NOW + 30 * DAY, "cmp": "SPRING", "nm": "Spring 10% off", "kd": "pct", "val": 10}
    names = {"iss": 1, "cti": 7, "iat": 6, "nbf": 5, "exp": 4}
    for k, v in over.items():
        k = names.get(k, k)
        if v is None:
            c.pop(k, None)
        elif v is NULL:
            c[k] = None
        else:
            c[k] = v
    return c


def trust_list(root, ver, keys, iat=NOW - 10 * DAY, **kw):
    payload = {"ver": ver, "iat": iat, "keys": [k.entry() if isinstance(k, Key) else k
                                               for k in keys]}
    return sign1(root, payload, **kw)


def revocation_list(root, ver, ctis, cmps, iat=NOW - 5 * DAY, **kw):
    return sign1(root, {"ver": ver, "iat": iat, "cti": list(ctis), "cmp": list(cmps)}, **kw)


def longest_revocation_list(root, ver, cti_len=16, limit=None, ordered=False, seed=b"big"):
    """(COSE bytes, serials) of the revocation list with the most serials of cti_len bytes that
    fits in limit bytes (default: the maximum a terminal takes, protocol/limits.py); the
    serials in pseudo-random order unless ordered (as the project's issuer writes them)."""
    from protocol import limits
    limit = limits.LIST_MAX_BYTES if limit is None else limit

    def make(n):
        ctis = [hashlib.sha256(seed + b" %d" % i).digest()[:cti_len] for i in range(n)]
        if ordered:
            ctis.sort()
        return revocation_list(root, ver, ctis, []), ctis

    n = limit // (cti_len + 1)
    cose, ctis = make(n)
    while len(cose) > limit:
        n -= 1
        cose, ctis = make(n)
    return cose, ctis


def text(prefix, cose):
    return prefix + b45encode(cose)


def nested(depth):
    """`depth` nested arrays around 0."""
    v = 0
    for _ in range(depth):
        v = [v]
    return v


# ---------------------------------------------------------------- the fixture

class Keys:
    def __init__(self):
        self.root = Key("root")
        self.ed = Key("issuer-ed")
        self.p256 = Key("issuer-p256", ALG_ES256)
        self.p256c = Key("issuer-p256-compressed", ALG_ES256, compressed=True)
        self.old = Key("issuer-old", nbf=NOW - 400 * DAY, exp=NOW - 100 * DAY)
        self.other = Key("issuer-other", iss="M-OTHER")
        self.rogue = Key("rogue")
        self.trusted = [self.ed, self.p256, self.p256c, self.old, self.other]


def _cases(k):
    cases = []

    def add(name, tok, verdict, discount=None, total=10000, uses=None, clock_trusted=True,
            now=NOW):
        if not isinstance(tok, str):
            tok = token(tok)
        cases.append({"name": name, "token": tok, "total": total, "verdict": verdict,
                      "discount": discount, "uses": uses, "clock_trusted": clock_trusted,
                      "now": now})

    def cti(n):
        return (0x2000 + n).to_bytes(8, "big")

    def c(n, **over):
        return claims(cti=cti(n), **over)

    ed, p256 = k.ed, k.p256

    # -- ok paths, both algs and every key form
    add("ed_pct_ok", sign1(ed, c(1)), "ok", 1000)
    add("es256_ok", sign1(p256, c(2)), "ok", 1000)
    add("es256_compressed_key_ok", sign1(k.p256c, c(3)), "ok", 1000)
    prot_b = cbor2.dumps({1: ALG_ES256, 4: p256.kid})
    payload_b = cbor2.dumps(c(4))
    sig = p256.sign(sig_structure(prot_b, payload_b))
    s = int.from_bytes(sig[32:], "big")
    low, high = (sig, high_s(sig)) if s <= P256_N // 2 else (high_s(sig), sig)
    add("es256_low_s_ok", sign1(p256, payload_b, prot=prot_b, sig=low), "ok", 1000)
    add("es256_high_s_ok", sign1(p256, payload_b, prot=prot_b, sig=high), "ok", 1000)
    add("untagged_ok", sign1(ed, c(5), tagged=False), "ok", 1000)
    add("tag18_ok", sign1(ed, c(6), tagged=True), "ok", 1000)
    add("kid_unprotected_ok", sign1(ed, c(7), prot={1: ALG_EDDSA}, unprot={4: ed.kid}),
        "ok", 1000)
    add("kid_protected_wins_ok",
        sign1(ed, c(8), prot={1: ALG_EDDSA, 4: ed.kid}, unprot={4: k.rogue.kid}), "ok", 1000)
    add("kid_protected_wins_unknown",
        sign1(ed, c(9), prot={1: ALG_EDDSA, 4: k.rogue.kid}, unprot={4: ed.kid}), "unknown_key")
    add("unknown_claims_ignored_ok",
        sign1(ed, c(10, zz="x", **{"99": 1}) | {99: [1, {"a": b"b"}], -1: None}), "ok", 1000)
    add("pct_100_ok", sign1(ed, c(11, val=100)), "ok", 777, total=777)
    add("pct_1_rounds_down", sign1(ed, c(12, val=1)), "ok", 0, total=99)
    add("pct_zero_total", sign1(ed, c(13)), "ok", 0, total=0)
    add("amt_exact_total", sign1(ed, c(14, kd="amt", val=500, cur="CNY")), "ok", 500, total=500)
    add("amt_under_total", sign1(ed, c(15, kd="amt", val=499, cur="CNY")), "ok", 499, total=500)
    add("item_two_free", sign1(ed, c(16, kd="item", val=2, sku="TEA-S")), "ok", 0)
    add("cti_one_byte_ok", sign1(ed, claims(cti=b"\x07")), "ok", 1000)
    add("cti_32_bytes_ok", sign1(ed, claims(cti=bytes(range(32)))), "ok", 1000)
    add("pct_with_own_currency_ok", sign1(ed, c(17, cur="CNY")), "ok", 1000)
    add("empty_name_ok", sign1(ed, c(18, nm="")), "ok", 1000)
    add("name_absent_ok", sign1(ed, c(19, nm=None)), "ok", 1000)
    add("unicode_campaign_ok", sign1(ed, c(20, cmp="春节-\U0001f9e7")), "ok", 1000)
    add("store_listed_ok", sign1(ed, c(21, st=["S-001"])), "ok", 1000)
    add("min_equal_total_ok", sign1(ed, c(22, kd="amt", val=100, cur="CNY", min=3000)),
        "ok", 100, total=3000)
    add("min_zero_ok", sign1(ed, c(23, cur="CNY", min=0)), "ok", 0, total=0)

    # -- time edges: nbf inclusive, exp exclusive; key window [nbf, exp) on iat
    add("now_equals_nbf_ok", sign1(ed, c(30, nbf=NOW)), "ok", 1000)
    add("now_before_nbf", sign1(ed, c(31, nbf=NOW + 1)), "not_yet_valid")
    add("exp_after_now_ok", sign1(ed, c(32, exp=NOW + 1)), "ok", 1000)
    add("exp_equals_now", sign1(ed, c(33, exp=NOW)), "expired")
    add("iat_equals_key_nbf_ok", sign1(ed, c(34, iat=ed.nbf)), "ok", 1000)
    add("iat_before_key_nbf", sign1(ed, c(35, iat=ed.nbf - 1)), "key_not_valid")
    add("iat_equals_key_exp", sign1(ed, c(36, iat=ed.exp)), "key_not_valid")
    add("old_key_in_window_ok", sign1(k.old, c(37, iat=k.old.exp - 1)), "ok", 1000)

    # -- stateful checks: the clock and the ledger
    add("clock_unset", sign1(ed, c(40)), "clock_unset", uses=0, clock_trusted=False)
    add("clock_unset_stateless_ok", sign1(ed, c(40)), "ok", 1000, clock_trusted=False)
    add("stateful_ok", sign1(ed, c(41)), "ok", 1000, uses=0)
    add("already_redeemed", sign1(ed, c(42)), "already_redeemed", uses=1)
    add("already_redeemed_stateless_ok", sign1(ed, c(42)), "ok", 1000)
    add("mu3_used2_ok", sign1(ed, c(43, mu=3)), "ok", 1000, uses=2)
    add("mu3_used3", sign1(ed, c(43, mu=3)), "already_redeemed", uses=3)

    # -- each later verdict, and that the earlier check wins when two fail
    add("wrong_issuer", sign1(ed, c(50, iss="M-OTHER")), "wrong_issuer")
    add("other_merchant_key_own_iss", sign1(k.other, c(51, iss="M-OTHER")), "ok", 1000)
    add("wrong_issuer_before_key_not_valid", sign1(ed, c(52, iss="M-OTHER", iat=ed.exp)),
        "wrong_issuer")
    add("key_not_valid_before_revoked", sign1(ed, c(53, iat=ed.exp, cmp="RECALLED")),
        "key_not_valid")
    add("revoked_cti", sign1(ed, claims(cti=bytes.fromhex("c0ffee"))), "revoked")
    add("revoked_cti_32", sign1(ed, claims(cti=b"\xaa" * 32)), "revoked")
    add("revoked_campaign", sign1(ed, c(54, cmp="RECALLED")), "revoked")
    add("revoked_before_clock_unset", sign1(ed, c(55, cmp="RECALLED")), "revoked", uses=0,
        clock_trusted=False)
    add("clock_unset_before_expired", sign1(ed, c(56, exp=NOW - 1, nbf=NOW - 9)),
        "clock_unset", uses=0, clock_trusted=False)
    add("clock_unset_before_not_yet_valid", sign1(ed, c(57, nbf=NOW + 9)), "clock_unset",
        uses=0, clock_trusted=False)
    add("revoked_before_expired", sign1(ed, c(58, cmp="RECALLED", exp=NOW - 1, nbf=NOW - 9)),
        "revoked")
    add("expired_before_wrong_store", sign1(ed, c(59, exp=NOW - 1, nbf=NOW - 9, st=[])),
        "expired")
    add("wrong_store_empty_list", sign1(ed, c(60, st=[])), "wrong_store")
    add("wrong_store_before_wrong_currency", sign1(ed, c(61, st=["S-9"], cur="USD")),
        "wrong_store")
    add("wrong_currency_on_pct", sign1(ed, c(62, cur="USD")), "wrong_currency")
    add("wrong_currency_before_below_min",
        sign1(ed, c(63, kd="amt", val=5, cur="USD", min=99999)), "wrong_currency")
    add("below_min_spend", sign1(ed, c(64, kd="amt", val=5, cur="CNY", min=3000)),
        "below_min_spend", total=2999)
    add("below_min_before_already_redeemed",
        sign1(ed, c(65, kd="amt", val=5, cur="CNY", min=3000)), "below_min_spend", total=2999,
        uses=5)

    # -- claims: types, ranges, bool is not int
    bad = [
        ("val_bool", dict(val=True)), ("val_float", dict(val=10.0)), ("iat_bool", dict(iat=True)),
        ("nbf_bool", dict(nbf=False)), ("exp_float", dict(exp=float(NOW + DAY))),
        ("mu_bool", dict(mu=True)), ("mu_zero", dict(mu=0)), ("mu_text", dict(mu="1")),
        ("min_bool", dict(min=False, cur="CNY")), ("min_negative", dict(min=-1, cur="CNY")),
        ("min_without_cur", dict(min=100)), ("amt_without_cur", dict(kd="amt", val=5)),
        ("amt_val_zero", dict(kd="amt", val=0, cur="CNY")),
        ("item_without_sku", dict(kd="item", val=1)),
        ("item_val_zero", dict(kd="item", val=0, sku="TEA")),
        ("pct_val_zero", dict(val=0)), ("pct_val_101", dict(val=101)),
        ("pct_val_negative", dict(val=-10)), ("kind_missing", dict(kd=None)),
        ("kind_bytes", dict(kd=b"pct")), ("val_missing", dict(val=None)),
        ("iss_missing", dict(iss=None)), ("iss_bytes", dict(iss=b"M-ACME")),
        ("cmp_missing", dict(cmp=None)), ("cmp_int", dict(cmp=7)), ("nm_int", dict(nm=5)),
        ("nm_null", dict(nm=NULL)), ("cur_null", dict(cur=NULL)), ("min_null", dict(min=NULL)),
        ("sku_int", dict(kd="item", val=1, sku=3)), ("st_text", dict(st="S-001")),
        ("st_with_int", dict(st=["S-001", 1])), ("cti_missing", dict(cti=None)),
        ("cti_empty", dict(cti=b"")), ("cti_33_bytes", dict(cti=bytes(33))),
        ("cti_text", dict(cti="0001")), ("iat_missing", dict(iat=None)),
        ("nbf_after_exp", dict(nbf=NOW + 2, exp=NOW + 1)), ("exp_missing", dict(exp=None)),
    ]
    for i, (name, over) in enumerate(bad):
        if "cti" not in over:
            over = dict(over, cti=cti(100 + i))
        add(name, sign1(ed, claims(**over)), "malformed")
    iss_true = claims(cti=cti(150))
    del iss_true[1]
    iss_true = {True: MERCHANT} | iss_true  # CBOR key true is not claim 1
    add("iss_under_true_key", sign1(ed, iss_true), "malformed")

    # -- payload bytes that are signed but not a claims map
    add("payload_array", sign1(ed, cbor2.dumps([1, 2])), "malformed")
    add("payload_not_cbor", sign1(ed, b"\xff\x00"), "malformed")
    add("payload_empty", sign1(ed, b""), "malformed")
    add("payload_trailing_bytes", sign1(ed, cbor2.dumps(c(151)) + b"\x00"), "malformed")
    add("payload_depth_16_ok", sign1(ed, c(152, zz=nested(15))), "ok", 1000)
    add("payload_depth_17", sign1(ed, c(153, zz=nested(16))), "malformed")
    huge = cbor2.dumps(c(154))
    # claim "nm" declared 4 GiB long (the payload bytes end long before): signed, so step 6
    tail = cbor2.dumps("nm")
    add("payload_oversized_length",
        sign1(ed, huge[:1] + tail + b"\x7a\xff\xff\xff\xff" + b"abc"), "malformed")
    add("payload_indefinite_map", sign1(ed, b"\xbf\x01\x02\xff"), "malformed")

    # -- COSE structure (step 2) and headers (steps 3-4)
    pl = cbor2.dumps(c(160))
    prot_b = cbor2.dumps({1: ALG_EDDSA, 4: ed.kid})
    good_sig = ed.sign(sig_structure(prot_b, pl))
    add("cose_depth_16_ok", sign1(ed, pl, prot=prot_b, unprot={99: nested(13)}), "ok", 1000)
    add("cose_depth_17", sign1(ed, pl, prot=prot_b, unprot={99: nested(14)}), "malformed")
    add("untagged_depth_17", sign1(ed, pl, prot=prot_b, unprot={99: nested(15)}, tagged=False),
        "malformed")
    add("sig_63_bytes", sign1(ed, pl, prot=prot_b, sig=good_sig[:63]), "malformed")
    add("sig_65_bytes", sign1(ed, pl, prot=prot_b, sig=good_sig + b"\x00"), "malformed")
    add("sig_text", cbor2.dumps(cbor2.CBORTag(18, [prot_b, {}, pl, "x" * 64])), "malformed")
    add("cose_3_items", cbor2.dumps(cbor2.CBORTag(18, [prot_b, {}, pl])), "malformed")
    add("cose_5_items", cbor2.dumps(cbor2.CBORTag(18, [prot_b, {}, pl, good_sig, 0])),
        "malformed")
    add("cose_map", cbor2.dumps({1: prot_b}), "malformed")
    add("cose_tag_17", cbor2.dumps(cbor2.CBORTag(17, [prot_b, {}, pl, good_sig])), "malformed")
    add("cose_tag_98", cbor2.dumps(cbor2.CBORTag(98, [prot_b, {}, pl, good_sig])), "malformed")
    add("cose_double_tag", cbor2.dumps(cbor2.CBORTag(18, cbor2.CBORTag(18, [prot_b, {}, pl,
                                                                            good_sig]))),
        "malformed")
    add("unprotected_bstr", cbor2.dumps([prot_b, b"", pl, good_sig]), "malformed")
    add("protected_map_not_bstr", cbor2.dumps([{1: ALG_EDDSA, 4: ed.kid}, {}, pl, good_sig]),
        "malformed")
    add("protected_array", sign1(ed, pl, prot=cbor2.dumps([1, -8])), "malformed")
    add("protected_not_cbor", sign1(ed, pl, prot=b"\xa1\x01"), "malformed")
    add("protected_depth_17", sign1(ed, pl, prot=cbor2.dumps({1: -8, 4: ed.kid,
                                                              9: nested(16)})), "malformed")
    add("payload_text_not_bstr", cbor2.dumps([prot_b, {}, "payload", good_sig]), "malformed")
    add("cose_trailing_bytes", token(sign1(ed, pl, prot=prot_b) + b"\x00"), "malformed")
    add("cose_oversized_bstr", b"\xd2\x84" + cbor2.dumps(prot_b) + b"\xa0\x5a\xff\xff\xff\xff"
        + b"\x00" * 70, "malformed")
    add("cose_oversized_array", b"\xd2\x9b" + b"\xff" * 8 + b"\x40" * 4, "malformed")
    add("cose_oversized_map", b"\x84\x40\xba\xff\xff\xff\xff\x40\x40", "malformed")
    add("cose_indefinite_array", b"\xd2\x9f" + cbor2.dumps(prot_b) + b"\xa0\x40\x40\xff",
        "malformed")
    add("empty_protected_is_empty_map", sign1(ed, pl, prot=b"", unprot={4: ed.kid}),
        "unsupported_alg")
    add("alg_in_unprotected_only", sign1(ed, pl, prot={4: ed.kid}, unprot={1: ALG_EDDSA}),
        "unsupported_alg")
    add("alg_float", sign1(ed, pl, prot={1: -8.0, 4: ed.kid}), "unsupported_alg")
    add("alg_text", sign1(ed, pl, prot={1: "EdDSA", 4: ed.kid}), "unsupported_alg")
    add("alg_under_true_key", sign1(ed, pl, prot={True: -8, 4: ed.kid}), "unsupported_alg")
    add("alg_es512", sign1(ed, pl, prot={1: -36, 4: ed.kid}), "unsupported_alg")
    add("unsupported_alg_before_kid", sign1(ed, pl, prot={1: -36}), "unsupported_alg")
    add("kid_missing", sign1(ed, pl, prot={1: ALG_EDDSA}), "malformed")
    add("kid_text", sign1(ed, pl, prot={1: ALG_EDDSA, 4: ed.kid.hex()}), "malformed")
    add("kid_int", sign1(ed, pl, prot={1: ALG_EDDSA}, unprot={4: 8}), "malformed")
    add("kid_empty_unknown", sign1(ed, pl, prot={1: ALG_EDDSA, 4: b""}), "unknown_key")
    add("unknown_key_before_bad_payload",
        sign1(k.rogue, b"\xff", prot={1: ALG_EDDSA, 4: k.rogue.kid}), "unknown_key")
    add("bad_signature_before_bad_payload",
        sign1(ed, b"\xff", prot={1: ALG_EDDSA, 4: ed.kid}, sig=bytes(64)), "bad_signature")

    # -- signatures
    add("rogue_signs_with_trusted_kid", sign1(ed, c(170), signer=k.rogue), "bad_signature")
    add("es256_rogue_with_trusted_kid",
        sign1(p256, c(171), signer=Key("rogue-p256", ALG_ES256)), "bad_signature")
    pl2 = cbor2.dumps(c(172))
    prot2 = cbor2.dumps({1: ALG_ES256, 4: p256.kid})
    good2 = p256.sign(sig_structure(prot2, pl2))
    n32 = P256_N.to_bytes(32, "big")
    for name, sig in (("es256_r_zero", bytes(32) + good2[32:]),
                      ("es256_s_zero", good2[:32] + bytes(32)),
                      ("es256_r_equals_n", n32 + good2[32:]),
                      ("es256_s_equals_n", good2[:32] + n32),
                      ("es256_r_plus_n", ((int.from_bytes(good2[:32], "big") + P256_N) % 2**256)
                       .to_bytes(32, "big") + good2[32:]),
                      ("es256_all_ff", b"\xff" * 64)):
        add(name, sign1(p256, pl2, prot=prot2, sig=sig), "bad_signature")
    pl3 = cbor2.dumps(c(173))
    prot3 = cbor2.dumps({1: ALG_EDDSA, 4: ed.kid})
    good3 = ed.sign(sig_structure(prot3, pl3))
    s_plus_l = (int.from_bytes(good3[32:], "little") + ED25519_L).to_bytes(32, "little")
    add("eddsa_s_plus_l", sign1(ed, pl3, prot=prot3, sig=good3[:32] + s_plus_l),
        "bad_signature")
    add("eddsa_zero_sig", sign1(ed, pl3, prot=prot3, sig=bytes(64)), "bad_signature")
    add("signature_covers_protected",
        cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: ALG_EDDSA, 4: ed.kid, 3: 0}), {}, pl3,
                                       good3])), "bad_signature")

    # -- text layer (step 1)
    ok_tok = token(sign1(ed, c(180)))
    add("control_ok", ok_tok, "ok", 1000)
    add("lowercase_body", "PC1:" + ok_tok[4:].lower(), "malformed")
    add("lowercase_prefix", "pc1:" + ok_tok[4:], "malformed")
    add("trailing_newline", ok_tok + "\n", "malformed")
    add("leading_space", " " + ok_tok, "malformed")
    add("non_ascii", ok_tok[:10] + "\u00c4" + ok_tok[11:], "malformed")
    add("triple_over_65535", "PC1:GGW", "malformed")
    add("pair_over_255", "PC1:GG", "malformed")
    add("prefix_only", "PC1:", "malformed")
    add("empty", "", "malformed")
    add("truncated_two_chars", ok_tok[:-2], "malformed")
    # Exactly 1200 characters is allowed, 1201 is not (both are valid signed base45).
    for want, verdict, disc in ((1200, "ok", 1000), (1201, "malformed", None)):
        pad = 0
        while True:
            t = token(sign1(ed, c(181, zz="x" * pad)))
            if len(t) >= want:
                break
            pad += 1
        assert len(t) == want, (want, len(t))
        add("token_%d_chars" % want, t, verdict, disc)
    return cases


def build():
    k = Keys()
    tl = trust_list(k.root, 5, k.trusted)
    rl = revocation_list(k.root, 2, [bytes.fromhex("c0ffee"), b"\xaa" * 32], ["RECALLED"])
    return {
        "about": "Generated by `python -m tests.support.coupons`; do not edit by hand.",
        "now": NOW, "store": STORE, "currency": CURRENCY,
        "root_pub_hex": k.root.pub.hex(),
        "trustlist": text("PT1:", tl), "revocations": text("PR1:", rl),
        "cases": _cases(k),
        "trust": _trust_fixture(k),
    }


def _trust_fixture(k):
    root = k.root
    root_p256 = Key("root-p256", ALG_ES256)
    rogue = Key("rogue-root")
    ed, p256, p256c = k.ed, k.p256, k.p256c

    def tl(ver, keys, signer=root, **kw):
        return text("PT1:", trust_list(signer, ver, keys, **kw))

    def rl(ver, ctis, cmps, signer=root, **kw):
        return text("PR1:", revocation_list(signer, ver, ctis, cmps, **kw))

    def raw_tl(payload, signer=root, **kw):
        return text("PT1:", sign1(signer, payload, **kw))

    def entry(key, **over):
        e = key.entry()
        e.update(over)
        return e

    # Revoked serials of every length 1..32, plus probes that differ by one byte or length.
    ctis = []
    for n in range(1, 33):
        for j in range(9):
            ctis.append(hashlib.sha256(b"rev %d %d" % (n, j)).digest()[:n])
    ctis.append(bytes(16))
    ctis.append(b"\xff" * 16)
    probes = [bytes(15), bytes(17), b"\x00" * 15 + b"\x01", b"\xff" * 15 + b"\xfe", b"\x00",
              hashlib.sha256(b"rev 16 9").digest()[:16]]
    probes = [p for p in probes if p not in ctis]
    good_payload = {"ver": 9, "iat": NOW, "keys": [ed.entry()]}
    return {
        "root_hex": root.pub.hex(),
        "root_p256_hex": root_p256.pub.hex(),
        "root_p256_compressed_hex": Key("root-p256", ALG_ES256, compressed=True).pub.hex(),
        "rogue_root_hex": rogue.pub.hex(),
        "keys": {name: {"kid": key.kid.hex(), "alg": key.alg, "pub": key.pub.hex(),
                        "iss": key.iss, "nbf": key.nbf, "exp": key.exp}
                 for name, key in (("ed", ed), ("p256", p256), ("p256c", p256c))},
        "tl_v1": tl(1, [ed, p256c]),
        "tl_v2": tl(2, [ed, p256]),
        "tl_v1_other": tl(1, [p256]),
        "tl_v2_other": tl(2, [p256c]),
        "tl_v3_by_p256_root": tl(3, [p256], signer=root_p256),
        "tl_v4_no_kid": tl(4, [ed], prot={1: ALG_EDDSA}),
        "tl_v5_kid_unprotected": tl(5, [ed], prot={1: ALG_EDDSA}, unprot={4: root.kid}),
        "tl_v6_untagged": tl(6, [ed], tagged=False),
        "tl_v7_empty": tl(7, []),
        "tl_rogue": tl(10, [ed], signer=rogue),
        "tl_rogue_no_kid": tl(10, [ed], signer=rogue, prot={1: ALG_EDDSA}),
        "tl_forged_root_kid": tl(10, [ed], prot={1: ALG_EDDSA, 4: root.kid}, signer=rogue),
        "tl_alg_mismatch": tl(10, [ed], prot={1: ALG_ES256, 4: root.kid}),
        "tl_tampered": tl(10, [ed])[:-4] + "0000",
        "rl_v1": rl(1, ctis, ["RECALLED", "LEAKED"]),
        "rl_v2": rl(2, [b"\x01\x02"], []),
        "rl_v1_other": rl(1, [], ["OTHER"]),
        "rl_rogue": rl(5, [], [], signer=rogue),
        "rl_ctis": [c.hex() for c in ctis],
        "rl_probes": [p.hex() for p in probes],
        "malformed": {
            "tl_kid_mismatch": tl(11, [entry(ed, kid=p256.kid)]),
            "tl_duplicate_kid": tl(11, [ed, ed]),
            "tl_eddsa_with_p256_pub": tl(11, [entry(ed, pub=p256.pub)]),
            "tl_es256_with_32_byte_pub": tl(11, [entry(p256, pub=ed.pub)]),
            "tl_alg_bool": tl(11, [entry(ed, alg=True)]),
            "tl_alg_es384": tl(11, [entry(ed, alg=-35)]),
            "tl_kid_7_bytes": tl(11, [entry(ed, kid=ed.kid[:7])]),
            "tl_iss_bytes": tl(11, [entry(ed, iss=b"M-ACME")]),
            "tl_nbf_after_exp": tl(11, [entry(ed, nbf=NOW + 2, exp=NOW + 1)]),
            "tl_nbf_missing": tl(11, [{x: y for x, y in ed.entry().items() if x != "nbf"}]),
            "tl_key_not_map": tl(11, [[1, 2]]),
            "tl_keys_not_list": raw_tl(dict(good_payload, keys={"a": 1})),
            "tl_ver_bool": raw_tl(dict(good_payload, ver=True)),
            "tl_ver_negative": raw_tl(dict(good_payload, ver=-1)),
            "tl_ver_missing": raw_tl({"iat": NOW, "keys": []}),
            "tl_iat_missing": raw_tl({"ver": 11, "keys": []}),
            "tl_payload_array": raw_tl(cbor2.dumps([11, NOW, []])),
            "tl_payload_not_cbor": raw_tl(b"\xff"),
            "tl_sig_short": "PT1:" + b45encode(cbor2.dumps(cbor2.CBORTag(
                18, [cbor2.dumps({1: -8, 4: root.kid}), {}, cbor2.dumps(good_payload),
                     bytes(63)]))),
            "tl_kid_text": tl(11, [ed], prot={1: ALG_EDDSA, 4: "root"}),
            "rl_cti_text": rl(11, ["abc"], []),
            "rl_cti_empty": rl(11, [b""], []),
            "rl_cti_33_bytes": rl(11, [bytes(33)], []),
            "rl_cmp_bytes": rl(11, [], [b"X"]),
            "rl_cmp_missing": text("PR1:", sign1(root, {"ver": 11, "iat": NOW, "cti": []})),
            "rl_cti_missing": text("PR1:", sign1(root, {"ver": 11, "iat": NOW, "cmp": []})),
            "rl_cti_map": text("PR1:", sign1(root, {"ver": 11, "iat": NOW, "cti": {},
                                                    "cmp": []})),
            "rl_cti_nested": rl(11, [[b"\x01"]], []),
            "rl_cti_count_too_big": text("PR1:", sign1(root, b"\xa4" + cbor2.dumps(
                {"ver": 11, "iat": NOW, "cmp": []})[1:] + b"\x63cti\x9a\x00\x01\x00\x00")),
            # two "cti" keys (cbor2 cannot write that from a dict): a4 ver iat cti cti
            "rl_cti_twice": text("PR1:", sign1(root, b"\xa4" + cbor2.dumps(
                {"ver": 11, "iat": NOW})[1:] + b"\x63cti\x80\x63cti\x80")),
            "rl_trailing_bytes": text("PR1:", sign1(root, cbor2.dumps(
                {"ver": 11, "iat": NOW, "cti": [], "cmp": []}) + b"\x00")),
        },
    }


def main(argv):
    data = build()
    out = argv[0] if argv else FIXTURE
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(data, f, indent=1, ensure_ascii=True)
        f.write("\n")
    print("wrote %s: %d coupon cases" % (out, len(data["cases"])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
