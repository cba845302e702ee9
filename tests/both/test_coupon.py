# Coupon verifier (SPEC 2.3) on both runtimes: every shared vector, plus the hand-made cases in
# tests/both/fixtures/coupon_cases.json (made by `python -m tests.support.coupons`).
import json

from device.coupons import verifier as coupon
from device.coupons.verifier import VERDICTS, Verifier
from device.trust import lists as trust
from device.trust.lists import TrustStore
from protocol import cbor
from tests.both.util import load_vectors, raises

FIXTURE = "tests/both/fixtures/coupon_cases.json"
_cache = {}


def _load_fixture():
    with open(FIXTURE) as f:
        return json.load(f)


def _setup(name):
    """(data, verifier) for the vectors or the fixture, built once per run."""
    if name not in _cache:
        data = load_vectors("coupons.json") if name == "vectors" else _load_fixture()
        store = TrustStore(None, None, [bytes.fromhex(data["root_pub_hex"])])
        store.install_text(data["trustlist"], trust.TRUST)
        store.install_text(data["revocations"], trust.REVOCATIONS)
        _cache[name] = (data, Verifier(store))
    return _cache[name]


def _run(data, v, case):
    n = case.get("uses")
    uses = None if n is None else (lambda cti: n)
    return v.check(case["token"], case["total"], data["store"], data["currency"],
                   case.get("now", data["now"]), case.get("clock_trusted", True), uses)


def _check_all(name):
    data, v = _setup(name)
    wrong = []
    for case in data["cases"]:
        r = _run(data, v, case)
        if r["verdict"] != case["verdict"] or r["discount"] != case.get("discount"):
            wrong.append("%s: want %s/%r got %s/%r" % (case["name"], case["verdict"],
                                                      case.get("discount"), r["verdict"],
                                                      r["discount"]))
    assert not wrong, "\n".join(wrong)
    return len(data["cases"])


def test_every_shared_vector():
    assert _check_all("vectors") >= 40


def test_every_fixture_case():
    assert _check_all("fixture") >= 150


def test_fixture_covers_every_verdict_and_both_algs():
    data, _ = _setup("fixture")
    seen = set(c["verdict"] for c in data["cases"])
    assert seen == set(VERDICTS), set(VERDICTS) - seen


def test_verdict_codes_are_the_spec_codes():
    assert VERDICTS == ("malformed", "unsupported_alg", "unknown_key", "bad_signature",
                        "wrong_issuer", "key_not_valid", "revoked", "clock_unset",
                        "not_yet_valid", "expired", "wrong_store", "wrong_currency",
                        "below_min_spend", "already_redeemed", "ok")
    from device.screens import messages
    for code in VERDICTS:
        assert messages.VERDICT_TEXT[code]


def _case(name, which="fixture"):
    data, v = _setup(which)
    for c in data["cases"]:
        if c["name"] == name:
            return data, v, c
    raise AssertionError("no case " + name)


def test_ok_result_carries_the_coupon():
    data, v, c = _case("amt_ok", "vectors")
    r = _run(data, v, c)
    assert r["verdict"] == "ok" and r["discount"] == 500
    assert r["cti"] == bytes.fromhex("0000000000001003")
    assert r["campaign"] == "WINTER" and r["name"] == "5 off"
    assert (r["kind"], r["val"], r["cur"], r["sku"], r["mu"]) == ("amt", 500, "CNY", None, 1)
    assert r["exp"] == 1797592000
    data, v, c = _case("item_ok", "vectors")
    r = _run(data, v, c)
    assert (r["kind"], r["val"], r["sku"], r["discount"]) == ("item", 1, "COFFEE-L", 0)


def test_cti_known_once_the_payload_decodes():
    for name, cti in (("bad_signature", None), ("unknown_kid", None), ("alg_absent", None),
                      ("revoked_cti", "00000000deadbeef"), ("expired", "000000000000100a"),
                      ("val_is_string", "000000000000101a")):
        data, v, c = _case(name, "vectors")
        r = _run(data, v, c)
        assert r["discount"] is None
        assert r["cti"] == (None if cti is None else bytes.fromhex(cti)), name
    data, v, c = _case("val_is_string", "vectors")
    assert _run(data, v, c)["campaign"] == "WINTER"


def test_ledger_asked_only_when_every_other_check_passed():
    data, v, c = _case("stateful_ok")
    asked = []

    def uses(cti):
        asked.append(cti)
        return 0
    r = v.check(c["token"], 10000, "S-001", "CNY", data["now"], True, uses)
    assert r["verdict"] == "ok" and asked == [r["cti"]]
    data, v, c = _case("below_min_spend")
    del asked[:]
    r = v.check(c["token"], c["total"], "S-001", "CNY", data["now"], True, uses)
    assert r["verdict"] == "below_min_spend" and asked == []


def test_clock_only_matters_to_stateful_checks():
    data, v, c = _case("clock_unset")
    assert v.check(c["token"], 1, "S-001", "CNY", data["now"], False, None)["verdict"] == "ok"
    r = v.check(c["token"], 1, "S-001", "CNY", data["now"], False, lambda cti: 0)
    assert r["verdict"] == "clock_unset" and r["discount"] is None


def test_token_as_bytes():
    data, v, c = _case("pct_ok", "vectors")
    r = v.check(c["token"].encode(), 10000, "S-001", "CNY", data["now"])
    assert r["verdict"] == "ok" and r["discount"] == 1000
    assert v.check(b"\xff\xfe", 1, "S-001", "CNY", 0)["verdict"] == "malformed"
    assert v.check(None, 1, "S-001", "CNY", 0)["verdict"] == "malformed"
    assert v.check(12345, 1, "S-001", "CNY", 0)["verdict"] == "malformed"


def test_total_must_be_minor_units():
    data, v, c = _case("pct_ok", "vectors")
    raises(ValueError, v.check, c["token"], -1, "S-001", "CNY", data["now"])
    raises(ValueError, v.check, c["token"], 10.0, "S-001", "CNY", data["now"])
    raises(ValueError, v.check, c["token"], True, "S-001", "CNY", data["now"])


def test_discounts():
    assert coupon.discount("pct", 15, 999) == 149
    assert coupon.discount("pct", 100, 999) == 999
    assert coupon.discount("pct", 33, 1) == 0
    assert coupon.discount("amt", 500, 200) == 200
    assert coupon.discount("amt", 500, 2000) == 500
    assert coupon.discount("item", 3, 2000) == 0
    assert coupon.discount("pct", 10, 10**20) == 10**19


def test_sig_structure_is_the_cbor_array():
    for n in (0, 1, 23, 24, 255, 256, 1000, 65535, 65536):
        prot = b"\xa1\x01\x27"
        payload = bytes(n)
        assert trust.sig_structure(prot, payload) == cbor.dumps(["Signature1", prot, b"",
                                                                  payload])
    assert trust.sig_structure(b"", b"") == cbor.dumps(["Signature1", b"", b"", b""])


def test_labels_are_exact_ints():
    assert trust.label({1: -7}, 1) == -7
    m = cbor.loads(b"\xa1\xf5\x26")  # {true: -7}
    assert trust.label(m, 1) is trust.label({}, 1)
    m = cbor.loads(b"\xa1\xfb\x3f\xf0\x00\x00\x00\x00\x00\x00\x26")  # {1.0: -7}
    assert trust.label(m, 1) is trust.label({}, 1)


def test_no_cart_skips_min_spend_and_discount():
    # A scan on the idle screen: no total yet; the coupon itself is judged, nothing is priced.
    v, verifier = _setup("vectors")
    for c in v["cases"]:
        r = verifier.check(c["token"], None, v["store"], v["currency"], v["now"])
        want = "ok" if c["verdict"] == "below_min_spend" else c["verdict"]
        assert r["verdict"] == want, c["name"]
        assert r["discount"] is None
