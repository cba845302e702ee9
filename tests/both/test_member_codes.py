# Member codes (SPEC 8.1) on both runtimes: every public vector of tests/fixtures/member_codes.json
# (made by tests/support/make_member_vectors.py), the stateless reading the check command gives,
# and the revocation list's "mem" entries as the trust store keeps them.
import json

from device.members import check_command
from device.members.verifier import VERDICTS, MemberVerifier
from device.screens import messages
from device.trust import check_args
from device.trust import lists as trust
from device.trust.lists import BlockedMembers, TrustError, TrustStore
from tests.both.util import raises

FIXTURE = "tests/fixtures/member_codes.json"
_cache = []


def setup():
    """(data, verifier) with the fixture's lists installed, built once per run."""
    if not _cache:
        with open(FIXTURE) as f:
            data = json.load(f)
        store = TrustStore(None, None, [bytes.fromhex(data["root_key"])])
        store.install_text(data["trustlist"], trust.TRUST)
        store.install_text(data["revocations"], trust.REVOCATIONS)
        _cache.append((data, MemberVerifier(store)))
    return _cache[0]


def case(name):
    data, v = setup()
    for c in data["cases"]:
        if c["name"] == name:
            return c
    raise AssertionError("no case " + name)


def test_every_vector_stateful():
    data, v = setup()
    wrong = []
    for c in data["cases"]:
        r = v.check(c["token"], data["now"], c["clock_trusted"], stateful=True)
        got = [r["verdict"]]
        want = [c["verdict"]]
        if "mid" in c:
            got += [r["mid"], r["ep"], r["tier"], r["dynamic"]]
            want += [c["mid"], c["ep"], c["tier"], c["dynamic"]]
        if got != want:
            wrong.append("%s: want %r got %r" % (c["name"], want, got))
    assert not wrong, "\n".join(wrong)
    assert len(data["cases"]) >= 90


def test_fixture_covers_every_verdict():
    data, _ = setup()
    seen = set(c["verdict"] for c in data["cases"])
    assert seen == set(VERDICTS), set(VERDICTS) - seen
    assert VERDICTS == ("malformed", "unsupported_alg", "unknown_key", "bad_signature",
                        "wrong_issuer", "key_not_valid", "blocked", "clock_unset", "expired",
                        "ok")
    for code in VERDICTS:
        text = messages.member_verdict_text(code)
        assert text and len(text) <= 32 and not text.startswith(messages.UNKNOWN_MEMBER_VERDICT)


def test_stateless_check_judges_expiry_at_now_and_never_the_clock():
    data, v = setup()
    for c in data["cases"]:
        r = v.check(c["token"], data["now"], c["clock_trusted"], stateful=False)
        assert r["verdict"] != "clock_unset", c["name"]
        if c["clock_trusted"]:
            assert r["verdict"] == c["verdict"], c["name"]
    # The untrusted-clock cases, judged at --now: a live code is ok, an old one expired.
    assert v.check(case("dynamic_clock_unset")["token"], data["now"], False,
                   stateful=False)["verdict"] == "ok"
    assert v.check(case("clock_unset_before_expired")["token"], data["now"], False,
                   stateful=False)["verdict"] == "expired"


def test_static_card_never_expires_dynamic_code_does():
    data, v = setup()
    card = case("static_card_ok")["token"]
    code = case("dynamic_ok")["token"]
    far = data["now"] + 100 * 365 * 86400
    r = v.check(card, far)
    assert r["verdict"] == "ok" and r["dynamic"] is False and r["exp"] is None
    r = v.check(code, data["now"])
    assert r["verdict"] == "ok" and r["dynamic"] is True and r["exp"] == data["now"] + 90
    assert r["name"] == "Ada Lovelace" and r["cti"] == bytes.fromhex("0000000000004d05")
    assert v.check(code, data["now"] + 89)["verdict"] == "ok"
    assert v.check(code, data["now"] + 90)["verdict"] == "expired"


def test_reading_is_empty_before_the_claims():
    _, v = setup()
    for name in ("forged_signature", "unknown_key", "mid_missing", "not_cose"):
        r = v.check(case(name)["token"], 0)
        assert (r["mid"], r["ep"], r["tier"], r["cti"], r["dynamic"]) == (None,) * 5, name
    for bad in (None, 12, b"\xff\xfe", "PM1:" + "0" * 1300):
        assert v.check(bad, 0)["verdict"] == "malformed"
    # bytes of a good code are read like its text
    assert v.check(case("static_card_ok")["token"].encode(), 0)["verdict"] == "ok"


# ---------------------------------------------------------------- the revocation list's "mem"

def test_blocked_members_keep_the_highest_epoch_compactly():
    entries = [["M-0002", 4], ["M-0001", 2], ["Zoë", 0], ["M-0002", 7], ["M-0002", 1],
               ["A", 1 << 63]]
    b = BlockedMembers(entries)
    assert len(b) == 4
    assert b.epoch("M-0001") == 2 and b.epoch("M-0002") == 7 and b.epoch("Zoë") == 0
    assert b.epoch("A") == 1 << 63
    for absent in ("M-0003", "M-000", "M-00011", "", "a", "Zoe"):
        assert b.epoch(absent) is None, absent
    # 12 bytes per entry beside the UTF-8 mids themselves
    mids = len("M-0001") + len("M-0002") + len("Zoë".encode()) + 1
    assert (len(b._mids), len(b._ends), len(b._eps)) == (mids, 16, 32)
    assert BlockedMembers([]).epoch("M-0001") is None


def test_many_blocked_members_found_by_bisection():
    entries = [["M-%05d" % i, i % 7] for i in range(0, 3000, 3)]
    b = BlockedMembers(entries)
    for i in range(3000):
        want = i % 7 if i % 3 == 0 else None
        assert b.epoch("M-%05d" % i) == want


def _payload(**over):
    p = {"ver": 2, "iat": 1, "cti": trust.RevokedSet([b"\x01"]), "cmp": ["OLD"]}
    p.update(over)
    return p


def test_revocation_payload_reads_mem_and_refuses_bad_entries():
    rev_cti, rev_cmp, mem = trust._revocation_payload(_payload())
    assert len(mem) == 0 and b"\x01" in rev_cti and "OLD" in rev_cmp
    _, _, mem = trust._revocation_payload(_payload(mem=[["M-1", 3], ["M-0", 0]]))
    assert mem.epoch("M-1") == 3 and mem.epoch("M-0") == 0
    for bad in ({"M-1": 3}, [["M-1"]], [["M-1", 3, 4]], [[1, 3]], [["", 3]], [["M" * 65, 1]],
                [["M-1", -1]], [["M-1", True]], [["M-1", "3"]], [("M-1", None)], ["M-1"]):
        e = raises(TrustError, trust._revocation_payload, _payload(mem=bad))
        assert e.code == "malformed", bad


def test_installed_list_blocks_cards_up_to_the_epoch():
    data, v = setup()
    store = v.trust
    assert store.blocked_members_count() == 2
    for mid, ep in data["revoked_members"]:
        assert store.member_blocked(mid, ep) and store.member_blocked(mid, 0)
        assert not store.member_blocked(mid, ep + 1)
    assert not store.member_blocked("M-0001", 0)
    # coupon serials of the same list block no member code (and the reverse)
    assert not store.is_revoked(b"M-LOST", "M-LOST")


# ---------------------------------------------------------------- the check command's line

def test_member_check_line_is_json_with_every_field():
    data, v = setup()
    r = v.check(case("dynamic_ok")["token"], data["now"], stateful=False)
    line = check_command.result_line(r)
    assert line.startswith('{"verdict": "ok", "mid": "M-0001", "ep": 1, "tier": "gold", ')
    assert json.loads(line) == {"verdict": "ok", "mid": "M-0001", "ep": 1, "tier": "gold",
                                "name": "Ada Lovelace", "cti": "0000000000004d05",
                                "dynamic": True}
    r = v.check(case("forged_signature")["token"], data["now"], stateful=False)
    assert json.loads(check_command.result_line(r)) == {
        "verdict": "bad_signature", "mid": None, "ep": None, "tier": None, "name": None,
        "cti": None, "dynamic": None}
    r = v.check(case("static_card_no_name_ok")["token"], data["now"], stateful=False)
    assert json.loads(check_command.result_line(r))["name"] is None
    assert json.loads(check_command.result_line(r))["dynamic"] is False


def test_member_check_arguments():
    data, _ = setup()
    tok = case("lost_card_blocked")["token"]
    base = ["--root-key", data["root_key"], "--trustlist", data["trustlist"],
            "--now", str(data["now"])]
    r = check_command.run(base + ["--revocations", data["revocations"], tok])
    assert r["verdict"] == "blocked" and r["mid"] == "M-LOST"
    # without the revocation list nothing is blocked
    assert check_command.run(base + [tok])["verdict"] == "ok"
    for bad in ([tok], base, base + [tok, tok], base + ["--now", "1", tok],
                base + ["--total", "5", tok], ["--root-key", "zz"] + base[2:] + [tok],
                base[:4] + ["--now", "soon", tok]):
        raises(check_args.ArgError, check_command.run, bad)
    raises(check_args.HelpWanted, check_command.run, ["--help"])


def test_card_epoch_is_a_uint_below_2_64():
    from device.members import verifier
    base = {1: "issuer", 6: 1700000000, 7: b"\x01" * 8, "mid": "M-1", "tier": "gold"}
    for ep, ok in ((0, True), ((1 << 64) - 1, True), (1 << 64, False), (1 << 70, False),
                   (-1, False)):
        p = dict(base)
        p["ep"] = ep
        assert bool(verifier._claims(p, {})) is ok, ep
