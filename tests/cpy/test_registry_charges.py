# host_sim registry and charge processor on both engines: a real SQLite file and a real
# PostgreSQL database (the `host_db` fixtures, tests/conftest.py). CPython only.
import os
import sqlite3

import cbor2
import pytest

from device import config as device_config
from host_sim.charges import ChargeError, Charges, Rules
from host_sim.registry import SEQ_WINDOW, Registry, RegistryError
from protocol import messages

SPEC5_KEYS = {"device_id", "store_id", "merchant_id", "currency", "secret_hex", "root_keys",
              "data_dir", "broker", "scanner", "keypad", "display", "printer", "console",
              "limits", "pins"}
ROOT_KEY = "ab" * 32


@pytest.fixture
def db(host_db):
    return host_db


@pytest.fixture
def reg(db):
    r = Registry(db)
    r.register("T-1", "S-1", "M-1")
    r.register("T-2", "S-1", "M-1")
    r.register("T-9", "S-9", "M-1")
    yield r
    r.close()


def charge(cid_byte, amt=1000, cpn=(), mem=None, cur="CNY"):
    cpn = [{"cti": cti, "cmp": "C1", "disc": 100} for cti in cpn]
    body = {"cid": bytes([cid_byte]) * 16, "kind": "sale", "gross": amt + 100 * len(cpn),
            "amt": amt, "cur": cur, "at": 1700000000, "off": True, "clerk": "c1", "cpn": cpn}
    if mem is not None:
        body["mem"] = mem
    messages.check("charge", body)
    return body


# ---------------------------------------------------------------- registry

def test_register_makes_a_secret_and_rotates_it(reg):
    first = reg.device("T-1")["secret"]
    assert len(first) == 32
    assert reg.device("T-2")["secret"] != first
    reg.accept_seq("T-1", 7)
    reg.next_host_seq("T-1")
    again = reg.register("T-1", "S-2", "M-1")
    d = reg.device("T-1")
    assert again == d["secret"] and again != first
    assert d["store_id"] == "S-2"
    assert d["last_seq"] is None  # a re-provisioned terminal may start its seq again
    assert d["host_seq"] == 1  # the host's own seq never goes back
    fixed = bytes(range(32))
    assert reg.register("T-3", "S-1", "M-1", secret=fixed) == fixed
    assert reg.lookup("T-3") == (fixed, None, "S-1")
    assert reg.lookup("nope") is None


def test_register_rejects_bad_ids_and_secrets(reg):
    for bad in ("", "a/b", "a+b", "a#", "sp ace", "x" * 65, None):
        e = pytest.raises(RegistryError, reg.register, bad, "S-1", "M-1").value
        assert e.code == "bad_id"
    e = pytest.raises(RegistryError, reg.register, "T-4", "S-1", "M-1", secret=b"short").value
    assert e.code == "bad_secret"
    assert reg.device("T-4") is None


def test_devices_by_store(reg):
    assert [d["device_id"] for d in reg.devices()] == ["T-1", "T-2", "T-9"]
    assert [d["device_id"] for d in reg.devices("S-1")] == ["T-1", "T-2"]
    assert reg.devices("S-404") == []


def test_seqs_persist_across_reopen(db, reg):
    assert reg.accept_seq("T-1", 5)
    assert not reg.accept_seq("T-1", 5)  # not above: refused
    assert not reg.accept_seq("T-1", 3)
    assert reg.accept_seq("T-1", 9)
    assert [reg.next_host_seq("T-2") for _ in range(3)] == [1, 2, 3]
    reg.close()
    again = Registry(db)
    try:
        assert again.lookup("T-1")[1] == 9
        assert not again.accept_seq("T-1", 9)
        # One host keeps SPEC 3.1 strictly: nothing at or below the highest.
        assert again.accept_seq("T-1", 11)
        assert not again.accept_seq("T-1", 10)
        # Several workers (serve --shared): out of order within the window, each seq once.
        again.seq_window = SEQ_WINDOW
        assert again.accept_seq("T-1", 12)
        assert not again.accept_seq("T-1", 11)
        assert again.accept_seq("T-1", 10)  # refused (never applied) by the strict rule above
        assert not again.accept_seq("T-1", 9)
        assert again.accept_seq("T-1", 12 + SEQ_WINDOW)
        assert not again.accept_seq("T-1", 12) and not again.accept_seq("T-1", 11)
        assert again.accept_seq("T-1", 13)
        assert again.lookup("T-1")[1] == 12 + SEQ_WINDOW
        assert again.next_host_seq("T-2") == 4
        assert again.lookup("T-2")[1] is None
        assert pytest.raises(RegistryError, again.next_host_seq, "T-404").value.code \
            == "unknown_device"
    finally:
        again.close()


def test_a_new_terminals_first_seqs_out_of_order_are_each_accepted_once(reg):
    """Two workers may finish a new terminal's first messages out of order (its hello and the
    sales it queued): with the window, the seqs below the first one accepted are still new."""
    reg.seq_window = SEQ_WINDOW
    assert reg.accept_seq("T-1", 4)
    assert reg.accept_seq("T-1", 2) and reg.accept_seq("T-1", 3)
    assert not reg.accept_seq("T-1", 2) and not reg.accept_seq("T-1", 3)
    assert not reg.accept_seq("T-1", 4)
    assert reg.accept_seq("T-1", 1)
    # One host (the strict SPEC 3.1 rule): nothing below the highest, first seq or not.
    reg.seq_window = 1
    assert reg.accept_seq("T-2", 4)
    assert not reg.accept_seq("T-2", 3)


def test_presence_and_drops(reg):
    hello = {"fw": "1.0", "rt": "cpython", "boot": 3, "queue": 0, "trust_ver": 1, "rev_ver": 0}
    reg.record_hello("T-1", hello)
    reg.set_online("T-2", False, 123)
    reg.record_status("T-2", {"queue": 1, "queue_amt": 5, "oldest_at": None, "drops": 0,
                              "uptime": 9, "declined_unseen": 0})
    d1, d2 = reg.device("T-1"), reg.device("T-2")
    assert d1["online"] is True and d1["last_hello"] == hello
    assert d2["online"] is False and d2["last_status"]["queue_amt"] == 5
    reg.count_drop("T-1", "bad_mac")
    reg.count_drop("T-1", "bad_mac")
    reg.count_drop("X", "unknown_device")
    assert reg.drops() == {"T-1": {"bad_mac": 2}, "X": {"unknown_device": 1}}
    assert reg.drops("T-1") == {"bad_mac": 2}
    assert reg.drops("T-2") == {}


def test_device_config_has_exactly_the_spec5_keys(reg):
    cfg = reg.device_config(
        "T-1", {"host": "127.0.0.1", "port": 18830}, "var/T-1", [ROOT_KEY], "CNY",
        display={"driver": "jsonl", "path": "var/T-1/screen.jsonl"},
        printer={"driver": "file", "path": "var/T-1/printer.bin"},
        limits={"offline_max_charge": 100})
    assert set(cfg) == SPEC5_KEYS
    assert set(cfg["broker"]) == {"host", "port", "tls", "username", "password", "root"}
    assert cfg["broker"]["port"] == 18830 and cfg["broker"]["root"] == "pos/v1"
    assert cfg["secret_hex"] == reg.device("T-1")["secret"].hex()
    assert cfg["store_id"] == "S-1" and cfg["merchant_id"] == "M-1"
    assert cfg["scanner"] is None and cfg["console"] is None
    assert cfg["limits"]["offline_max_charge"] == 100
    assert cfg["limits"]["offline_max_age_s"] == 259200
    # The device's own parser takes it as it is.
    parsed = device_config.parse(cfg)
    assert parsed["secret_hex"] == cfg["secret_hex"]
    assert parsed["display"] == cfg["display"]


def test_device_config_rejects_bad_input(reg):
    cases = [
        (("T-404", {}, "d", [ROOT_KEY], "CNY"), {}, "unknown_device"),
        (("T-1", {}, "d", [ROOT_KEY], "cny"), {}, "bad_currency"),
        (("T-1", {}, "d", [], "CNY"), {}, "bad_root_keys"),
        (("T-1", {}, "d", ["AB" * 32], "CNY"), {}, "bad_root_keys"),
        (("T-1", {"tls_ca": 1}, "d", [ROOT_KEY], "CNY"), {}, "bad_broker"),
        (("T-1", {}, "d", [ROOT_KEY], "CNY"), {"limits": {"max": 1}}, "bad_limits"),
        (("T-1", {}, "d", [ROOT_KEY], "CNY"), {"scanner": {"port": "x"}}, "bad_driver"),
    ]
    for args, kw, code in cases:
        assert pytest.raises(RegistryError, reg.device_config, *args, **kw).value.code == code


# ---------------------------------------------------------------- charges

def test_charge_is_applied_once_and_repeats_return_the_original(reg):
    ch = Charges(reg)
    body = charge(1, cpn=[b"\x01"])
    first, fresh = ch.apply("T-1", body)
    assert fresh and first["st"] == "approved" and len(first["auth"]) == 6
    assert first["cpn"] == [{"cti": b"\x01", "st": "ok"}]
    messages.check("charge_result", first)
    again, fresh = ch.apply("T-1", body)
    assert not fresh and again == first
    rep = ch.report()
    assert rep["approved"] == {"count": 1, "amount": {"CNY": 1000}}
    assert rep["coupons_redeemed"] == 1 and rep["conflicts"] == []
    assert ch.result(body["cid"]) == first
    assert ch.result(body["cid"], "T-1") == first
    assert ch.result(b"\x00" * 16) is None


def test_another_terminals_cid_is_its_own_charge(reg):
    # Issue 16.8: T-B sending T-A's cid was answered with T-A's approval and never recorded.
    ch = Charges(reg, Rules(decline_over=5000))
    body = charge(60, cpn=[b"\x60"])
    mine = ch.process("T-1", body)
    theirs, fresh = ch.apply("T-2", dict(body, amt=9000, gross=9100))
    assert fresh and theirs["st"] == "declined" and theirs["code"] == "over_limit"
    assert "auth" not in theirs and mine["st"] == "approved"
    assert ch.result(body["cid"], "T-1") == mine and ch.result(body["cid"], "T-2") == theirs
    # Each terminal's repeat gets its own stored result.
    assert ch.process("T-1", body) == mine
    assert ch.process("T-2", dict(body, amt=9000, gross=9100)) == theirs
    rep = ch.report()
    assert rep["approved"]["count"] == 1 and rep["declined"]["count"] == 1


def test_same_cid_with_another_body_is_refused_and_changes_nothing(reg):
    ch = Charges(reg)
    body = charge(61, cpn=[b"\x61"])
    first = ch.process("T-1", body)
    before = ch.report()
    other = dict(body, amt=999999, gross=999999 + 100)
    res, fresh = ch.apply("T-1", other)
    assert not fresh
    assert res == {"cid": body["cid"], "st": "declined", "code": "cid_reused", "cpn": []}
    messages.check("charge_result", res)
    assert ch.report() == before  # no charge, no redemption recorded
    assert ch.result(body["cid"], "T-1") == first  # the stored decision stands
    assert reg.drops("T-1") == {"cid_reused": 1}
    # The original body still gets the original result.
    assert ch.process("T-1", body) == first
    assert reg.drops("T-1") == {"cid_reused": 1}


def test_idempotency_survives_reopening_the_database(db, reg):
    body = charge(2, cpn=[b"\x02"])
    first = Charges(reg).process("T-1", body)
    reg.close()
    reg2 = Registry(db)
    try:
        ch = Charges(reg2)
        assert ch.apply("T-1", body) == (first, False)
        assert cbor2.dumps(ch.process("T-1", body)) == cbor2.dumps(first)
        assert ch.report()["approved"]["count"] == 1
        assert ch.report()["coupons_redeemed"] == 1
    finally:
        reg2.close()


def test_over_limit_declines_above_the_threshold_only(reg):
    ch = Charges(reg, Rules(decline_over=5000))
    at = ch.process("T-1", charge(3, amt=5000))
    over = ch.process("T-1", charge(4, amt=5001, cpn=[b"\x04"]))
    assert at["st"] == "approved"
    assert over == {"cid": bytes([4]) * 16, "st": "declined", "code": "over_limit", "cpn": []}
    messages.check("charge_result", over)
    rep = ch.report()
    assert rep["declined"] == {"count": 1, "amount": {"CNY": 5001}, "codes": {"over_limit": 1}}
    # A declined sale redeemed nothing: the coupon is still free for the next charge.
    assert ch.process("T-2", charge(5, cpn=[b"\x04"]))["cpn"] == [{"cti": b"\x04", "st": "ok"}]


def test_member_blocklist(reg):
    ch = Charges(reg, Rules(blocked_members={"MEM-BAD"}))
    assert ch.process("T-1", charge(6, mem="MEM-BAD"))["code"] == "member_blocked"
    assert ch.process("T-1", charge(7, mem="MEM-OK"))["st"] == "approved"
    assert ch.process("T-1", charge(8))["st"] == "approved"


def test_random_declines_are_fixed_by_seed_and_cid(new_host_db):
    def declined(seed, rate, name):
        r = Registry(new_host_db(name.replace(".db", "")))
        try:
            r.register("T-1", "S-1", "M-1")
            ch = Charges(r, Rules(decline_rate=rate, seed=seed))
            out = set()
            for i in range(200):
                res = ch.process("T-1", charge(i))
                if res["st"] == "declined":
                    assert res["code"] == "random_decline"
                    out.add(i)
            return out
        finally:
            r.close()

    a = declined(42, 0.3, "a.db")
    assert declined(42, 0.3, "b.db") == a
    assert 30 <= len(a) <= 90  # sha256 draws: 60 expected
    assert declined(43, 0.3, "c.db") != a
    assert declined(42, 0.0, "d.db") == set()
    assert len(declined(42, 1.0, "e.db")) == 200


def test_rules_reject_bad_settings():
    for kw in ({"decline_over": -1}, {"decline_over": "5"}, {"decline_rate": 1.5},
               {"decline_rate": -0.1}):
        assert pytest.raises(ChargeError, Rules, **kw).value.code == "bad_rules"


def test_coupon_used_by_another_charge_is_a_conflict(reg):
    ch = Charges(reg)
    a = ch.process("T-1", charge(10, cpn=[b"\xaa", b"\xbb"]))
    b = ch.process("T-2", charge(11, cpn=[b"\xaa", b"\xcc"]))
    assert a["cpn"] == [{"cti": b"\xaa", "st": "ok"}, {"cti": b"\xbb", "st": "ok"}]
    # Accepted offline in good faith: the charge stands, the conflict is reported.
    assert b["st"] == "approved"
    assert b["cpn"] == [{"cti": b"\xaa", "st": "conflict"}, {"cti": b"\xcc", "st": "ok"}]
    # The same coupon twice in one sale is a second use too.
    c = ch.process("T-9", charge(12, cpn=[b"\xdd", b"\xdd"]))
    assert [x["st"] for x in c["cpn"]] == ["ok", "conflict"]
    rep = ch.report()
    assert [(x["cti"], x["device_id"], x["store_id"]) for x in rep["conflicts"]] == [
        ("aa", "T-2", "S-1"), ("dd", "T-9", "S-9")]
    assert rep["conflicts"][0]["cid"] == (bytes([11]) * 16).hex()
    assert rep["coupons_redeemed"] == 6
    # The repeat of the conflicting charge reports the same, and adds no use.
    assert ch.process("T-2", charge(11, cpn=[b"\xaa", b"\xcc"])) == b
    assert len(ch.report()["conflicts"]) == 2


def test_max_uses_from_issuance_and_from_the_hook(reg):
    ch = Charges(reg)
    ch.set_coupon_max_uses(b"\x10", 2)
    sts = [ch.process("T-1", charge(20 + i, cpn=[b"\x10"]))["cpn"][0]["st"] for i in range(3)]
    assert sts == ["ok", "ok", "conflict"]
    hooked = Charges(reg, coupon_max_uses=lambda cti: 3 if cti == b"\x11" else None)
    sts = [hooked.process("T-2", charge(30 + i, cpn=[b"\x11"]))["cpn"][0]["st"]
           for i in range(4)]
    assert sts == ["ok", "ok", "ok", "conflict"]
    assert pytest.raises(ChargeError, ch.set_coupon_max_uses, b"\x12", 0).value.code \
        == "bad_coupon"


def test_a_failure_mid_charge_leaves_nothing_behind(reg):
    calls = []

    def flaky(cti):
        calls.append(cti)
        if len(calls) == 2:
            raise OSError("issuance database unavailable")
        return None

    ch = Charges(reg, coupon_max_uses=flaky)
    body = charge(40, cpn=[b"\x41", b"\x42"])
    with pytest.raises(OSError):
        ch.process("T-1", body)
    assert ch.result(body["cid"]) is None
    assert ch.report()["coupons_redeemed"] == 0
    res = ch.process("T-1", body)  # the retry applies it whole
    assert res["cpn"] == [{"cti": b"\x41", "st": "ok"}, {"cti": b"\x42", "st": "ok"}]
    assert ch.report()["coupons_redeemed"] == 2


def test_bad_charge_input_raises_charge_error(reg):
    ch = Charges(reg)
    for body in (None, {}, {"cid": b"short"}, {"cid": "x" * 16}):
        assert pytest.raises(ChargeError, ch.process, "T-1", body).value.code == "bad_body"
    e = pytest.raises(ChargeError, ch.process, "T-404", charge(50)).value
    assert e.code == "unknown_device"
    assert ch.result(bytes([50]) * 16) is None


def test_database_file_is_wal(tmp_path):
    db = str(tmp_path / "wal.db")
    reg = Registry(db)
    try:
        assert reg.store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert reg.store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert os.path.exists(db)
    finally:
        reg.close()


def test_a_database_keyed_by_cid_alone_is_rebuilt_with_its_rows(tmp_path):
    # A host database from before the (device_id, cid) key: its charges answer repeats still.
    db = str(tmp_path / "old.db")
    body = charge(70, cpn=[b"\x70"])
    result = {"cid": body["cid"], "st": "approved", "auth": "ABC123",
              "cpn": [{"cti": b"\x70", "st": "ok"}]}
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE charges (cid BLOB PRIMARY KEY, device_id TEXT NOT NULL, store_id TEXT"
        " NOT NULL, body BLOB NOT NULL, result BLOB NOT NULL, status TEXT NOT NULL, code TEXT,"
        " auth TEXT, amt INTEGER NOT NULL, cur TEXT NOT NULL, received_at INTEGER NOT NULL,"
        " applied_at INTEGER NOT NULL);"
        "CREATE TABLE redemptions (cid BLOB NOT NULL, idx INTEGER NOT NULL, cti BLOB NOT NULL,"
        " device_id TEXT NOT NULL, store_id TEXT NOT NULL, at INTEGER NOT NULL,"
        " conflict INTEGER NOT NULL, PRIMARY KEY (cid, idx));"
        "CREATE INDEX redemptions_cti ON redemptions(cti);")
    conn.execute("INSERT INTO charges VALUES (?, 'T-1', 'S-1', ?, ?, 'approved', NULL, 'ABC123',"
                 " 1000, 'CNY', 5, 5)", (body["cid"], cbor2.dumps(body, canonical=True),
                                        cbor2.dumps(result)))
    conn.execute("INSERT INTO redemptions VALUES (?, 0, ?, 'T-1', 'S-1', 5, 0)",
                 (body["cid"], b"\x70"))
    conn.commit()
    conn.close()
    reg = Registry(db)
    try:
        reg.register("T-1", "S-1", "M-1")
        reg.register("T-2", "S-1", "M-1")
        ch = Charges(reg)
        assert ch.apply("T-1", body) == (result, False)
        mine, fresh = ch.apply("T-2", body)
        assert fresh and mine["cpn"] == [{"cti": b"\x70", "st": "conflict"}]
        assert ch.report()["coupons_redeemed"] == 2
        Charges(reg)  # opening again changes nothing
        assert ch.result(body["cid"], "T-1") == result
    finally:
        reg.close()


def test_report_lines_oldest_first(reg):
    clock = [1000]
    reg.clock = lambda: clock[0]
    ch = Charges(reg, Rules(decline_over=5000))
    ch.process("T-2", charge(80, cpn=[b"\x80"]))
    clock[0] = 1001
    ch.process("T-1", charge(81, amt=6000))
    clock[0] = 1002
    ch.process("T-9", charge(82, cpn=[b"\x80"]))
    lines = list(ch.lines())
    assert [(x["device_id"], x["cid"], x["at"]) for x in lines] == [
        ("T-2", "50" * 16, 1000), ("T-1", "51" * 16, 1001), ("T-9", "52" * 16, 1002)]
    assert lines[0]["status"] == "approved" and len(lines[0]["auth"]) == 6
    assert "code" not in lines[0] and lines[0]["conflicts"] == 0
    assert lines[1] == {"device_id": "T-1", "cid": "51" * 16, "kind": "sale", "amt": 6000,
                        "cur": "CNY", "status": "declined", "code": "over_limit", "at": 1001,
                        "conflicts": 0}
    assert lines[2]["conflicts"] == 1
