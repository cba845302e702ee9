# Message bodies (SPEC 3.2): one valid body per type, then every rejection path.
from protocol.messages import DOWN_TYPES, UP_TYPES, MessageError, check
from tests.both.util import raises

CID = b"\x11" * 16
PIN = "pbkdf2-sha256$1000$" + "ab" * 16 + "$" + "0f" * 32


def hello():
    return {"fw": "0.1.0", "rt": "micropython", "boot": 3, "queue": 0, "trust_ver": 2,
            "rev_ver": 0}


def charge():
    return {"cid": CID, "kind": "sale", "gross": 1000, "amt": 850, "cur": "CNY",
            "at": 1767225600, "off": False, "clerk": "c1",
            "cpn": [{"cti": b"\x01" * 8, "cmp": "spring", "disc": 100},
                    {"cti": b"\x02", "cmp": "vip", "disc": 50}],
            "mem": "M-7", "ref": "R-1"}


def status():
    return {"queue": 2, "queue_amt": 1700, "oldest_at": 1767225600, "drops": 0, "uptime": 60,
            "declined_unseen": 1}


def charge_result():
    return {"cid": CID, "st": "approved", "code": "00", "auth": "A1",
            "cpn": [{"cti": b"\x01" * 32, "st": "ok"}, {"cti": b"\x02", "st": "conflict"}]}


def redeemed():
    return {"cti": [b"\x01", b"\x02" * 32]}


def config():
    return {"limits": {"offline_max_charge": 50000, "offline_max_total": 500000,
                       "offline_max_count": 2000, "offline_max_age_s": 259200},
            "pins": {"tech": PIN, "supervisor": PIN, "clerk": PIN},
            "status_interval_s": 5}


VALID = {"hello": hello, "charge": charge, "status": status, "charge_result": charge_result,
         "redeemed": redeemed, "config": config}


def reject(mtype, body, field, reason_part=""):
    e = raises(MessageError, check, mtype, body)
    assert e.field == field, (mtype, e.field, field)
    assert reason_part in e.reason, (e.reason, reason_part)
    assert str(e) == field + ": " + e.reason
    return e


def changed(mtype, path, value):
    """A valid body with one field replaced (value None: removed). path: key or (key, i, key)."""
    body = VALID[mtype]()
    target = body
    if isinstance(path, tuple):
        for step in path[:-1]:
            target = target[step]
        path = path[-1]
    if value is None:
        del target[path]
    else:
        target[path] = value
    return body


def test_type_lists():
    for t in ("hello", "charge", "status", "member_query", "refund", "booking_update"):
        assert t in UP_TYPES
    for t in ("charge_result", "redeemed", "config", "member_info", "refund_result", "bookings",
              "booking_result", "licence"):
        assert t in DOWN_TYPES
    assert not set(UP_TYPES) & set(DOWN_TYPES)


def test_valid_bodies():
    for mtype, make in VALID.items():
        check(mtype, make())


def test_optional_fields_may_be_absent_and_extras_ignored():
    b = charge()
    del b["mem"]
    del b["ref"]
    b["tip"] = 5
    check("charge", b)
    b = charge_result()
    del b["code"]
    del b["auth"]
    check("charge_result", b)
    check("config", {})
    check("config", {"limits": {}, "pins": {}, "theme": "dark"})
    check("config", {"limits": {"offline_max_count": 0, "other": -1}})
    check("config", {"pins": {"tech": PIN, "janitor": 5}})
    b = status()
    b["oldest_at"] = None  # nothing queued
    check("status", b)


def test_error_is_value_error_with_field_path():
    e = raises(ValueError, check, "charge", changed("charge", ("cpn", 0, "cti"), b""))
    assert str(e) == "cpn[0].cti: must be bytes of 1..32"


def test_unknown_type_and_non_map_body():
    reject("refund_request", {}, "t", "unknown type")
    reject(None, {}, "t", "unknown type")
    reject(b"hello", {}, "t", "unknown type")
    for mtype in VALID:
        reject(mtype, [], "body", "map")
        reject(mtype, None, "body", "map")


def test_hello_rejections():
    reject("hello", changed("hello", "fw", None), "fw", "required")
    reject("hello", changed("hello", "fw", b"0.1"), "fw", "text")
    reject("hello", changed("hello", "rt", "pypy"), "rt", "cpython|micropython")
    reject("hello", changed("hello", "boot", -1), "boot", "uint")
    reject("hello", changed("hello", "queue", True), "queue", "uint")
    reject("hello", changed("hello", "trust_ver", 1.0), "trust_ver", "uint")
    reject("hello", changed("hello", "rev_ver", 2 ** 64), "rev_ver", "uint")
    check("hello", changed("hello", "rev_ver", 2 ** 64 - 1))


def test_charge_field_rejections():
    cases = [
        ("cid", b"\x11" * 15, "cid", "bytes of 16"),
        ("cid", b"\x11" * 17, "cid", "bytes of 16"),
        ("cid", "1" * 16, "cid", "bytes of 16"),
        ("kind", "refund", "kind", "sale|member|topup|vip"),
        ("kind", None, "kind", "required"),
        ("gross", -1, "gross", "uint"),
        ("amt", False, "amt", "uint"),
        ("cur", 156, "cur", "text"),
        ("at", None, "at", "required"),
        ("off", 0, "off", "bool"),
        ("clerk", None, "clerk", "required"),
        ("cpn", {}, "cpn", "list"),
        ("cpn", None, "cpn", "required"),
        ("mem", 7, "mem", "text"),
        ("ref", b"r", "ref", "text"),
        (("cpn", 1), "x", "cpn[1]", "map"),
        (("cpn", 0, "cti"), b"", "cpn[0].cti", "bytes of 1..32"),
        (("cpn", 0, "cti"), b"\x01" * 33, "cpn[0].cti", "bytes of 1..32"),
        (("cpn", 1, "cti"), None, "cpn[1].cti", "required"),
        (("cpn", 0, "cmp"), None, "cpn[0].cmp", "required"),
        (("cpn", 0, "disc"), -5, "cpn[0].disc", "uint"),
    ]
    for path, value, field, reason in cases:
        reject("charge", changed("charge", path, value), field, reason)


def test_charge_amount_rules():
    b = changed("charge", "cpn", [])
    b["amt"] = 1000
    check("charge", b)  # no coupons: amt == gross
    b["amt"] = 1001
    reject("charge", b, "amt", "must not exceed gross")
    b = charge()
    b["amt"] = 851
    e = reject("charge", b, "amt", "sum of cpn disc")
    assert "149 != 150" in e.reason
    b["amt"] = 849
    reject("charge", b, "amt", "sum of cpn disc")


def test_status_rejections():
    for key in ("queue", "queue_amt", "drops", "uptime", "declined_unseen"):
        reject("status", changed("status", key, -1), key, "uint")
        reject("status", changed("status", key, None), key, "required")
    reject("status", changed("status", "oldest_at", "x"), "oldest_at", "uint")
    reject("status", changed("status", "oldest_at", None), "oldest_at", "required")


def test_charge_result_rejections():
    cases = [
        ("cid", b"", "cid", "bytes of 16"),
        ("st", "ok", "st", "approved|declined"),
        ("st", None, "st", "required"),
        ("code", 5, "code", "text"),
        ("auth", [], "auth", "text"),
        ("cpn", None, "cpn", "required"),
        ("cpn", (1,), "cpn", "list"),
        (("cpn", 0), [], "cpn[0]", "map"),
        (("cpn", 1, "cti"), "ab", "cpn[1].cti", "bytes of 1..32"),
        (("cpn", 1, "st"), "approved", "cpn[1].st", "ok|conflict"),
        (("cpn", 0, "st"), None, "cpn[0].st", "required"),
    ]
    for path, value, field, reason in cases:
        reject("charge_result", changed("charge_result", path, value), field, reason)
    # SPEC 3.2 types code and auth as text: any wording is taken, empty or long, so a result
    # is never dropped (and its charge left pending) for it
    for path, value in (("code", ""), ("auth", ""), ("auth", "A" * 200), ("code", "x" * 256)):
        check("charge_result", changed("charge_result", path, value))
    reject("charge_result", changed("charge_result", "auth", "A" * 257), "auth", "0..256")


def test_redeemed_rejections():
    check("redeemed", {"cti": []})
    reject("redeemed", {}, "cti", "required")
    reject("redeemed", {"cti": b"\x01"}, "cti", "list")
    reject("redeemed", {"cti": [b"\x01", b""]}, "cti[1]", "bytes of 1..32")
    reject("redeemed", {"cti": [b"\x01" * 33]}, "cti[0]", "bytes of 1..32")


def test_config_rejections():
    reject("config", {"limits": []}, "limits", "map")
    for key in ("offline_max_charge", "offline_max_total", "offline_max_count",
                "offline_max_age_s"):
        reject("config", {"limits": {key: -1}}, "limits." + key, "uint")
        reject("config", {"limits": {key: True}}, "limits." + key, "uint")
    reject("config", {"pins": "x"}, "pins", "map")
    bad_pins = [
        (5, "pbkdf2-sha256$ITER"),
        ("", "pbkdf2-sha256$ITER"),
        ("pbkdf2-sha1$1000$ab$" + "0f" * 32, "pbkdf2-sha256$ITER"),
        ("pbkdf2-sha256$1000$ab", "pbkdf2-sha256$ITER"),
        ("pbkdf2-sha256$1000$ab$" + "0f" * 32 + "$x", "pbkdf2-sha256$ITER"),
        ("pbkdf2-sha256$$ab$" + "0f" * 32, "iterations"),
        ("pbkdf2-sha256$0$ab$" + "0f" * 32, "iterations"),
        ("pbkdf2-sha256$01000$ab$" + "0f" * 32, "iterations"),
        ("pbkdf2-sha256$-5$ab$" + "0f" * 32, "iterations"),
        ("pbkdf2-sha256$1e3$ab$" + "0f" * 32, "iterations"),
        ("pbkdf2-sha256$1000$$" + "0f" * 32, "salt"),
        ("pbkdf2-sha256$1000$abc$" + "0f" * 32, "salt"),
        ("pbkdf2-sha256$1000$AB$" + "0f" * 32, "salt"),
        ("pbkdf2-sha256$1000$zz$" + "0f" * 32, "salt"),
        ("pbkdf2-sha256$1000$ab$" + "0f" * 31, "hash"),
        ("pbkdf2-sha256$1000$ab$" + "0F" * 32, "hash"),
        ("pbkdf2-sha256$1000$ab$" + "0f" * 33, "hash"),
    ]
    for role in ("tech", "supervisor", "clerk"):
        for value, reason in bad_pins:
            reject("config", {"pins": {role: value}}, "pins." + role, reason)
    check("config", {"pins": {"tech": "pbkdf2-sha256$1$00$" + "ff" * 32}})
    check("config", {"status_interval_s": 5})
    reject("config", {"status_interval_s": 4}, "status_interval_s", ">= 5")
    reject("config", {"status_interval_s": "60"}, "status_interval_s", "uint")
    reject("config", {"status_interval_s": -60}, "status_interval_s", "uint")


def test_config_bounds_match_the_device():
    # A PIN hash the device could never verify in time, or a heartbeat that overflows a timer,
    # is refused at the schema (issue 16: the host must not be able to lock a terminal out).
    reject("config", {"pins": {"tech": "pbkdf2-sha256$1000001$ab$" + "0f" * 32}}, "pins.tech",
           "iterations")
    check("config", {"pins": {"tech": "pbkdf2-sha256$1000000$ab$" + "0f" * 32}})
    reject("config", {"status_interval_s": 86401}, "status_interval_s", "<= 86400")
    reject("config", {"status_interval_s": 1 << 40}, "status_interval_s", "<= 86400")
    reject("config", {"limits": {"offline_max_charge": 1 << 63}}, "limits.offline_max_charge",
           "uint")


def test_config_unknown_keys_are_listed():
    from protocol.messages import config_unknown
    body = {"limits": {"offline_max_charge": 1, "colour": 2}, "pins": {"root": "x"},
            "bookings": True, "extra": 1}
    check("config", {"limits": {"offline_max_charge": 1}, "bookings": True})
    assert sorted(config_unknown(body)) == ["extra", "limits.colour", "pins.root"]


def test_store_service_bodies():
    rid = bytes(range(16))
    check("refund", {"rid": rid, "cid": rid, "amt": 5, "cur": "CNY", "reason": "defective",
                     "at": 1, "clerk": "clerk", "off": False})
    reject("refund", {"rid": rid, "cid": rid, "amt": 0, "cur": "CNY", "reason": "defective",
                      "at": 1, "clerk": "clerk", "off": False}, "amt", "at least")
    # SPEC 8.3: reason is text (this terminal sends its five codes; a host takes any)
    check("refund", {"rid": rid, "cid": rid, "amt": 5, "cur": "CNY", "reason": "broken",
                     "at": 1, "clerk": "clerk", "off": False})
    reject("refund", {"rid": rid, "cid": rid, "amt": 5, "cur": "CNY", "reason": "",
                      "at": 1, "clerk": "clerk", "off": False}, "reason", "1..64")
    check("refund_result", {"rid": rid, "st": "review"})
    check("refund_result", {"rid": rid, "st": "rejected", "code": "review_rejected",
                            "note": "no receipt"})
    reject("refund_result", {"rid": rid, "st": "rejected", "note": ""}, "note", "1..64")
    reject("refund_result", {"rid": rid, "st": "pending"}, "st", "review")
    item = {"bid": "B1", "at": 10, "dur": 1800, "name": "Li", "svc": "cut", "st": "booked",
            "v": 1}
    check("bookings", {"ver": 3, "items": [item]})
    reject("bookings", {"ver": 3, "items": [dict(item, st="gone")]}, "items[0].st", "booked")
    check("booking_update", {"uid": rid, "bid": "B1", "op": "check_in", "v": 1, "at": 2,
                             "clerk": "c"})
    # SPEC 8.4: "reason"?: optional, a cancel's too
    check("booking_update", {"uid": rid, "bid": "B1", "op": "cancel", "v": 1, "at": 2,
                             "clerk": "c"})
    reject("booking_update", {"uid": rid, "bid": "B1", "op": "cancel", "v": 1, "at": 2,
                              "clerk": "c", "reason": 3}, "reason", "text")
    check("booking_result", {"uid": rid, "st": "conflict", "booking": item})
    check("booking_result", {"uid": rid, "st": "conflict", "booking": item,
                             "code": "not_booked"})
    check("booking_result", {"uid": rid, "st": "ok", "booking": dict(item, st="checked_in")})
    reject("booking_result", {"uid": rid, "st": "conflict", "code": ""}, "code", "")
    reject("booking_result", {"uid": rid, "st": "ok", "booking": dict(item, v=-1)},
           "booking.v", "")
    check("member_query", {"qid": rid, "mid": "M1"})
    check("member_info", {"qid": rid, "mid": "M1", "bal": 10, "pts": 0, "tier": "gold",
                          "vip_exp": None, "st": "active"})
    check("licence", {"lic": b"\x84"})
    base = {"cid": rid, "gross": 100, "amt": 100, "cur": "CNY", "at": 1, "off": False,
            "clerk": "c", "cpn": []}
    reject("charge", dict(base, kind="member"), "mem", "required")
    reject("charge", dict(base, kind="vip", mem="M1"), "tier", "required")
    check("charge", dict(base, kind="vip", mem="M1", tier="gold"))
    check("charge_result", {"cid": rid, "st": "approved", "cpn": [], "bal": 5,
                            "vip": {"tier": "gold", "start": 1, "end": 2}})
    check("hello", {"fw": "x", "rt": "cpython", "boot": 1, "queue": 0, "trust_ver": 0,
                    "rev_ver": 0, "lic": {"st": "grace", "exp": 5, "days": -1}})
