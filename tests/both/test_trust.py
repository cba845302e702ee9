# Trust list and revocation list store (SPEC 2.2) on both runtimes, with the signed lists of
# tests/both/fixtures/coupon_cases.json (made by `python -m tests.support.coupons`).
import json

from device.ports.storage import PosixFS
from device.trust.lists import (
    PAGE_BYTES,
    REVOCATIONS,
    TRUST,
    RevokedSet,
    TrustError,
    TrustStore,
    _Records,
    decode_sign1,
    parse_text,
    revoked_from,
    sign1_parts,
)
from protocol import cbor, limits
from tests.both.util import raises, tmpdir

_fx = []


def fx():
    if not _fx:
        with open("tests/both/fixtures/coupon_cases.json") as f:
            _fx.append(json.load(f)["trust"])
    return _fx[0]


def raw(name):
    t = fx()
    text = t[name] if name in t else t["malformed"][name]
    return parse_text(text)[1]


def root():
    return bytes.fromhex(fx()["root_hex"])


def store(tag, roots=None):
    d = tmpdir(tag)
    return TrustStore(PosixFS(), d, roots or [root()]).open(), d


def code(fn, *args):
    return raises(TrustError, fn, *args).code


def test_install_and_look_up_keys():
    s, d = store("trust-install")
    assert (s.trust_ver, s.rev_ver, s.load_errors) == (0, 0, 0)
    assert s.install_trustlist(raw("tl_v1")) == 1
    assert s.trust_ver == 1
    keys = fx()["keys"]
    ed = s.key(bytes.fromhex(keys["ed"]["kid"]))
    assert ed == {"alg": -8, "pub": bytes.fromhex(keys["ed"]["pub"]), "iss": "M-ACME",
                  "nbf": keys["ed"]["nbf"], "exp": keys["ed"]["exp"]}
    # The compressed P-256 point is accepted as is; its kid hashes the uncompressed point.
    p = s.key(bytes.fromhex(keys["p256c"]["kid"]))
    assert p["alg"] == -7 and len(p["pub"]) == 33
    assert s.key(bytes.fromhex(keys["p256"]["kid"])) is None
    assert s.key(b"") is None and s.keys_count() == 2
    assert PosixFS().exists(d + "/trustlist.cose")


def test_rollback_refused_and_state_kept():
    s, d = store("trust-rollback")
    assert s.install_trustlist(raw("tl_v2")) == 2
    assert code(s.install_trustlist, raw("tl_v1_other")) == "rollback"
    assert code(s.install_trustlist, raw("tl_v2_other")) == "rollback"
    assert code(s.install_trustlist, raw("tl_v2")) == "rollback"
    assert s.trust_ver == 2
    keys = fx()["keys"]
    assert s.key(bytes.fromhex(keys["p256"]["kid"]))["pub"] == bytes.fromhex(keys["p256"]["pub"])
    assert s.key(bytes.fromhex(keys["p256c"]["kid"])) is None  # only in the refused v1
    # And across a restart.
    s2 = TrustStore(PosixFS(), d, [root()]).open()
    assert code(s2.install_trustlist, raw("tl_v1_other")) == "rollback"
    assert s.install_revocations(raw("rl_v2")) == 2
    assert code(s.install_revocations, raw("rl_v1_other")) == "rollback"


def test_rogue_roots_refused_and_nothing_written():
    s, d = store("trust-rogue")
    assert code(s.install_trustlist, raw("tl_rogue")) == "unknown_root"
    assert code(s.install_trustlist, raw("tl_rogue_no_kid")) == "unknown_root"
    assert code(s.install_trustlist, raw("tl_forged_root_kid")) == "bad_signature"
    assert code(s.install_trustlist, raw("tl_alg_mismatch")) == "bad_signature"
    assert code(s.install_revocations, raw("rl_rogue")) == "unknown_root"
    t = parse_text(fx()["tl_tampered"])[1]
    assert code(s.install_trustlist, t) == "bad_signature"
    assert (s.trust_ver, s.rev_ver) == (0, 0)
    assert not PosixFS().exists(d + "/trustlist.cose")
    assert not PosixFS().exists(d + "/revocations.cose")
    # The rogue root itself, once provisioned, is accepted: the refusal was about the root.
    r, _ = store("trust-rogue2", [bytes.fromhex(fx()["rogue_root_hex"])])
    assert r.install_trustlist(raw("tl_rogue")) == 10


def test_p256_root_in_both_forms():
    full = bytes.fromhex(fx()["root_p256_hex"])
    comp = bytes.fromhex(fx()["root_p256_compressed_hex"])
    assert len(full) == 65 and len(comp) == 33
    for pub in (full, comp):
        s = TrustStore(None, None, [root(), pub])
        assert s.install_trustlist(raw("tl_v3_by_p256_root")) == 3
    s = TrustStore(None, None, [root()])
    assert code(s.install_trustlist, raw("tl_v3_by_p256_root")) == "unknown_root"


def test_header_forms():
    s = TrustStore(None, None, [root()])
    assert s.install_trustlist(raw("tl_v4_no_kid")) == 4
    assert s.install_trustlist(raw("tl_v5_kid_unprotected")) == 5
    assert s.install_trustlist(raw("tl_v6_untagged")) == 6
    assert s.install_trustlist(raw("tl_v7_empty")) == 7
    assert s.keys_count() == 0


def test_survives_reopen():
    s, d = store("trust-reopen")
    s.install_trustlist(raw("tl_v2"))
    s.install_revocations(raw("rl_v1"))
    s2 = TrustStore(PosixFS(), d, [root()]).open()
    assert (s2.trust_ver, s2.rev_ver, s2.load_errors) == (2, 1, 0)
    kid = bytes.fromhex(fx()["keys"]["p256"]["kid"])
    assert s2.key(kid) == s.key(kid) and s2.key(kid) is not None
    assert s2.is_revoked(b"\x00\x00", "RECALLED")
    assert s2.is_revoked(bytes.fromhex(fx()["rl_ctis"][100]), "x")


def _damage(tag, mutate):
    s, d = store(tag)
    s.install_trustlist(raw("tl_v2"))
    s.install_revocations(raw("rl_v1"))
    path = d + "/trustlist.cose"
    fs = PosixFS()
    fs.write_atomic(path, mutate(fs.read(path)))
    s2 = TrustStore(fs, d, [root()]).open()
    assert (s2.trust_ver, s2.rev_ver, s2.load_errors) == (0, 1, 1), tag
    assert s2.key(bytes.fromhex(fx()["keys"]["ed"]["kid"])) is None
    # A good list replaces the damaged file.
    assert s2.install_trustlist(raw("tl_v1")) == 1
    assert TrustStore(fs, d, [root()]).open().trust_ver == 1


def test_damaged_file_ignored_and_counted():
    _damage("trust-trunc", lambda b: b[:len(b) // 2])
    _damage("trust-flip", lambda b: b[:-1] + bytes((b[-1] ^ 1,)))
    _damage("trust-garbage", lambda b: b"\x00" * 10)
    _damage("trust-empty", lambda b: b"")


def test_rotated_root_drops_old_lists():
    s, d = store("trust-rotate")
    s.install_trustlist(raw("tl_v1"))
    s2 = TrustStore(PosixFS(), d, [bytes.fromhex(fx()["rogue_root_hex"])]).open()
    assert (s2.trust_ver, s2.load_errors) == (0, 1)


def test_wrong_kind():
    s = TrustStore(None, None, [root()])
    assert code(s.install_trustlist, raw("rl_v1")) == "wrong_kind"
    assert code(s.install_revocations, raw("tl_v1")) == "wrong_kind"
    assert code(s.install_text, fx()["rl_v1"], TRUST) == "wrong_kind"
    assert code(s.install_text, fx()["tl_v1"], REVOCATIONS) == "wrong_kind"
    assert (s.trust_ver, s.rev_ver) == (0, 0)
    assert s.install_text(fx()["tl_v1"], TRUST) == (TRUST, 1)
    assert s.install_text(fx()["rl_v1"]) == (REVOCATIONS, 1)


def test_malformed_lists():
    s = TrustStore(None, None, [root()])
    for name in sorted(fx()["malformed"]):
        install = s.install_trustlist if name.startswith("tl_") else s.install_revocations
        e = raises(TrustError, install, raw(name))
        assert e.code == "malformed", (name, e.code, e.message)
    for junk in (b"", b"\x00", b"\xa0", b"\xd2\x84\x40\xa0\x40\x40", None, "PT1:", 5):
        assert code(s.install_trustlist, junk) == "malformed"
    assert (s.trust_ver, s.rev_ver) == (0, 0)


def test_parse_text():
    assert parse_text(fx()["tl_v1"])[0] == TRUST
    assert parse_text(fx()["rl_v1"] + "\n")[0] == REVOCATIONS
    body = fx()["tl_v1"][4:]
    for bad in ("", "PT1", "PX1:AB", "pt1:" + body, "PT1:" + body.lower(), "PC1:" + body,
                "PT1:A", b"PT1:", None):
        assert code(parse_text, bad) == "malformed", bad


def test_revocation_lookup():
    s = TrustStore(None, None, [root()])
    assert s.install_revocations(raw("rl_v1")) == 1
    ctis = [bytes.fromhex(h) for h in fx()["rl_ctis"]]
    for c in ctis:
        assert s.is_revoked(c, "SPRING"), c
    for h in fx()["rl_probes"]:
        assert not s.is_revoked(bytes.fromhex(h), "SPRING"), h
    assert s.is_revoked(b"\x99" * 40, "RECALLED") and s.is_revoked(b"\x01", "LEAKED")
    assert not s.is_revoked(b"\x99" * 40, "recalled")
    # A newer list replaces the old one entirely.
    assert s.install_revocations(raw("rl_v2")) == 2
    assert s.is_revoked(b"\x01\x02", "X") and not s.is_revoked(ctis[50], "RECALLED")


def test_revoked_set():
    r = RevokedSet([])
    assert b"a" not in r and len(r) == 0
    items = [bytes((i, j)) for i in range(0, 256, 7) for j in (0, 9, 255)] + [b"x", b"xyz"]
    r = RevokedSet(list(items))
    for it in items:
        assert it in r
    for it in (b"", b"y", b"\x01\x00", b"\xff\xff", b"xy", b"xyz\x00"):
        assert it not in r
    assert len(r) == len(items)


def _records(n, w, seed):
    import hashlib
    return [hashlib.sha256(b"%d %d" % (seed, i)).digest()[:w] for i in range(n)]


def test_records_sort_in_place_across_pages():
    for n, w in ((0, 16), (1, 16), (2, 3), (7, 1), (300, 16), (129, 32), (1500, 3)):
        recs = _records(n, w, n)
        recs += recs[:3]  # duplicates too
        r = _Records(w, len(recs))
        for k, c in enumerate(recs):
            r.put(k, c)
        r.sort()
        assert len(r.pages) == (len(recs) + r.per - 1) // r.per
        assert all(len(p) <= PAGE_BYTES for p in r.pages)
        assert [bytes(r.get(k)) for k in range(len(recs))] == sorted(recs), (n, w)
        for c in recs:
            assert r.find(c)
        assert not r.find(b"\xff" * w) or b"\xff" * w in recs


def test_revoked_from_streams_the_serials_into_blobs():
    ctis = _records(40, 16, 2) + _records(9, 1, 3) + _records(5, 32, 4) + [b"\x00" * 16]
    data = b"\x82\x01" + cbor.dumps(ctis) + b"\x07"  # in the middle of a buffer
    rs, end = revoked_from(data, 2, len(data))
    assert end == len(data) - 1 and len(rs) == len(ctis)
    for c in ctis:
        assert c in rs
    for c in _records(20, 16, 5) + [b"", b"\x01" * 2, b"\x00" * 15]:
        assert c not in rs
    assert revoked_from(cbor.dumps([]), 0, 1)[0].count == 0
    # not an array: handed back decoded, for the caller's type check
    assert revoked_from(cbor.dumps({"a": 1}), 0, 4) == ({"a": 1}, 4)
    for bad in ([b""], [bytes(33)], ["text"], [[b"a"]], [1]):
        raw = cbor.dumps(bad)
        assert code(revoked_from, raw, 0, len(raw)) == "malformed", bad
    raw = cbor.dumps([b"ab", b"cd"])
    assert code(revoked_from, raw[:-1], 0, len(raw) - 1) == "malformed"  # cut short
    assert code(revoked_from, b"\x9a\x00\x01\x00\x00", 0, 5) == "malformed"  # count lies


def test_sign1_parts_leaves_the_payload_in_place():
    cose = raw("rl_v1")
    prot_b, prot, unprot, start, end, sig = sign1_parts(cose)
    assert decode_sign1(cose) == (prot_b, prot, unprot, cose[start:end], sig)
    assert cbor.loads(cose[start:end])["ver"] == 1
    for bad in (cose + b"\x00", cose[:-1], b"\xd1" + cose[1:], cose[2:]):
        raises(ValueError, sign1_parts, bad)
    assert decode_sign1(bytearray(raw("tl_v1")))[4] == decode_sign1(raw("tl_v1"))[4]


def test_a_list_over_the_maximum_is_refused_before_anything_else():
    s = TrustStore(None, None, [root()])
    big = b"\x00" * (limits.LIST_MAX_BYTES + 1)
    assert code(s.install_revocations, big) == "too_large"
    assert code(s.install_trustlist, bytearray(big)) == "too_large"
    assert code(s.install_revocations, big[:-1]) == "malformed"  # at the maximum: read
    assert (s.trust_ver, s.rev_ver) == (0, 0)


def test_memory_only_store_writes_nothing():
    s = TrustStore(None, None, [root()]).open()
    assert s.install_trustlist(raw("tl_v1")) == 1 and s.load_errors == 0


class _FullFS(PosixFS):
    def write_atomic(self, path, data):
        raise OSError(28, "No space left on device")


def test_full_disk_keeps_the_old_list():
    d = tmpdir("trust-full")
    s = TrustStore(_FullFS(), d, [root()]).open()
    assert code(s.install_trustlist, raw("tl_v1")) == "storage"
    assert s.trust_ver == 0 and s.keys_count() == 0


def test_bad_root_keys():
    for bad in (b"", bytes(31), bytes(64), "00" * 32, None):
        assert code(TrustStore, None, None, [bad]) == "malformed"
