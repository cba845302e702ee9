# The host's core shape on both engines (SQLite file, PostgreSQL): dispatch by type to a store
# service, on_hello and on_charge (decline rolls back the service's writes), the host outbox,
# batches that fall back to one transaction per message, charges keyed by (device, cid) and
# numbers too big for the database. Real mosquitto; terminals faked with protocol.envelope.
import threading
import time

import pytest

from host_sim import service
from host_sim.charges import Rules
from host_sim.service import FLEET, Out
from host_sim.store import open_store
from protocol import cbor
from tests.integration.test_host import (
    HELLO,
    WAIT,
    _late_subscriber,
    charge,
    drops_total,
    host_rig,
)


@pytest.fixture
def shop(broker, host_db):
    """test_host.py's: a host with T-A and T-B in store S-1 and T-C in S-2, fake terminals."""
    yield from host_rig(broker, host_db)


class Tally:
    """A test service: points per member. member_query answers member_info (and counts the
    queries); on_hello sends the store's (empty) bookings; on_charge earns a point per 100 of a
    member charge, except member "POOR", whose charge writes first and then declines."""

    name = "tally"
    SCHEMA = """
    CREATE TABLE IF NOT EXISTS tally_points (
        mid TEXT PRIMARY KEY,
        pts INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS tally_queries (
        device_id TEXT PRIMARY KEY,
        n         INTEGER NOT NULL
    );
    """
    gate = None  # (entered, release) events: a query says it is in, then waits

    def __init__(self, ctx):
        self.ctx = ctx
        self.up = {"member_query": self.query}

    def _points(self, tx, mid):
        row = tx.execute("SELECT pts FROM tally_points WHERE mid=?", (mid,)).fetchone()
        return row[0] if row else 0

    def query(self, tx, msg):
        if Tally.gate is not None:
            Tally.gate[0].set()
            Tally.gate[1].wait(WAIT)
        tx.execute("INSERT INTO tally_queries (device_id, n) VALUES (?, 1) ON CONFLICT"
                   " (device_id) DO UPDATE SET n = tally_queries.n + 1", (msg.device_id,))
        body = {"qid": msg.body["qid"], "mid": msg.body["mid"], "bal": 0,
                "pts": self._points(tx, msg.body["mid"]), "tier": "", "vip_exp": None,
                "st": "active"}
        return [Out(msg.device_id, "member_info", body)]

    def on_hello(self, tx, msg):
        return [Out(msg.device_id, "bookings", {"ver": 1, "items": []})]

    def on_charge(self, tx, charge):
        mid = charge["body"].get("mem")
        if mid is None:
            return None, {}
        pts = self._points(tx, mid) + charge["body"]["amt"] // 100
        tx.execute("INSERT INTO tally_points (mid, pts) VALUES (?, ?) ON CONFLICT (mid)"
                   " DO UPDATE SET pts = excluded.pts", (mid, pts))
        if mid == "POOR":
            return "insufficient_balance", {"bal": 5, "auth": "FORGED"}
        return None, {"pts": pts}


def member_charge(n, mem, amt=1000):
    return dict(charge(n, amt), kind="member", mem=mem)


def queries(db, dev):
    store = open_store(db)
    try:
        with store.read() as tx:
            row = tx.execute("SELECT n FROM tally_queries WHERE device_id=?", (dev,)).fetchone()
            pts = dict(tx.execute("SELECT mid, pts FROM tally_points").fetchall())
        return (row[0] if row else 0), pts
    finally:
        store.close()


def served(shop, **kw):
    shop.host.stop()
    return shop.new_host(services=[Tally], **kw)


def test_a_service_gets_its_types_hello_and_charges(shop):
    host = served(shop)
    a = shop.terminal("T-A")
    a.send("hello", HELLO)
    [(mtype, p)] = a.wait(1)
    assert mtype == "bookings" and p["body"] == {"ver": 1, "items": []}
    a.send("member_query", {"qid": b"q" * 16, "mid": "M-7"})
    mtype, p = a.wait(2)[1]
    assert mtype == "member_info" and p["body"]["qid"] == b"q" * 16 and p["body"]["pts"] == 0
    a.send("charge", member_charge(1, "M-7", amt=2500))
    mtype, p = a.wait(3)[2]
    assert mtype == "charge_result" and p["body"]["st"] == "approved" and p["body"]["pts"] == 25
    # Declined by the service: its write is rolled back, its extra merged (not over "auth").
    a.send("charge", member_charge(2, "POOR", amt=700))
    mtype, p = a.wait(4)[3]
    assert p["body"] == {"cid": bytes([2]) * 16, "st": "declined",
                         "code": "insufficient_balance", "cpn": [], "bal": 5}
    # The repeat gets the stored result, extras and all; the service is not asked again.
    a.send("charge", member_charge(1, "M-7", amt=2500))
    assert a.wait(5)[4][1]["body"] == a.wait(3)[2][1]["body"]
    n, pts = queries(host.store.where, "T-A")
    assert n == 1 and pts == {"M-7": 25}  # nothing of POOR's
    assert host.metrics()["processed"] == {"hello": 1, "member_query": 1, "charge": 3}
    assert host.registry.device("T-A")["last_seq"] == a.seq
    assert a.errors == []


def test_the_host_outbox_reaches_terminals_and_the_fleet(shop, broker):
    host = served(shop)
    a = shop.terminal("T-A")
    trust = cbor.dumps(cbor.Tag(18, [b"\xa1\x01\x27", {}, b"outbox", bytes(64)]))
    # Pushed by another process (a command line, a scheduler): its own store connection.
    other = open_store(host.store.where)
    try:
        with other.transaction() as tx:
            service.push(tx, "T-A", "config", {"status_interval_s": 45}, time.time())
            service.push(tx, "T-GONE", "config", {"status_interval_s": 45}, time.time())
            service.push(tx, FLEET, "trustlist", trust, time.time())
        with other.read() as tx:
            assert tx.execute("SELECT COUNT(*) FROM host_outbox").fetchone()[0] == 3
    finally:
        other.close()
    [(mtype, p)] = a.wait(1)
    assert mtype == "config" and p["body"] == {"status_interval_s": 45}
    assert _late_subscriber(broker.port, shop.root, 1) == [
        (shop.root + "/fleet/down/trustlist", trust, True)]
    assert host.wait_for(lambda: host.metrics()["charges"]["outbox_sent"] == 2, WAIT)
    with host.store.read() as tx:
        assert tx.execute("SELECT COUNT(*) FROM host_outbox").fetchone()[0] == 0
    # The device's seq order holds with the host's own answers after it.
    a.send("charge", charge(9))
    mtype, p2 = a.wait(2)[1]
    assert mtype == "charge_result" and p2["seq"] == p["seq"] + 1 and a.errors == []


def test_a_failing_message_in_a_batch_does_not_take_the_others_down(shop):
    def max_uses(cti):
        if cti == b"\xee":
            raise RuntimeError("issuance lookup failed")
        return None

    Tally.gate = entered, release = threading.Event(), threading.Event()
    try:
        host = served(shop, coupon_max_uses=max_uses)
        a, b = shop.terminal("T-A"), shop.terminal("T-B")
        # The worker waits inside the query's transaction while the next messages queue up.
        a.send("member_query", {"qid": b"q" * 16, "mid": "M-1"})
        assert entered.wait(WAIT)
        a.send("charge", charge(1))
        b.send("charge", charge(2, cpn=[b"\xee"]))  # raises inside the batch
        b.send("charge", charge(3))
        a.send("status", {"queue": 0, "queue_amt": 0, "oldest_at": None, "drops": 0,
                          "uptime": 1, "declined_unseen": 0})
        assert host.wait_for(lambda: host.waiting() == 4, WAIT)
        release.set()
        assert [m for m, _ in a.wait(2)] == ["member_info", "charge_result"]
        [(mtype, p)] = b.wait(1)
        assert mtype == "charge_result" and p["body"]["cid"] == bytes([3]) * 16
        assert drops_total(host, 1)
        # one transaction per message now: the status may still be on its way
        assert host.wait_for(lambda: host.metrics()["processed"].get("status") == 1, WAIT)
        m = host.metrics()
        assert m["drops"] == {"T-B": {"internal_error": 1}}
        assert m["batches"]["fallbacks"] == 1 and m["batches"]["largest"] == 4
        assert m["processed"] == {"member_query": 1, "charge": 2, "status": 1}
        assert host.charges.result(bytes([2]) * 16) is None
        # T-B's failed seq was not accepted, its later one was: a retry gets through.
        assert host.registry.device("T-B")["last_seq"] == b.seq
    finally:
        Tally.gate = None


def test_cid_keys_are_per_terminal_and_a_reused_cid_is_refused(shop):
    host = shop.host
    a, b = shop.terminal("T-A"), shop.terminal("T-B")
    mine = charge(40, amt=1200)
    a.send("charge", mine)
    [(_, ra)] = a.wait(1)
    assert ra["body"]["st"] == "approved"
    # T-B with T-A's cid: its own decision and its own record, never T-A's result.
    b.send("charge", dict(mine, amt=3300, gross=3300))
    [(_, rb)] = b.wait(1)
    assert rb["body"]["st"] == "approved" and rb["body"]["auth"] != ra["body"]["auth"]
    assert host.charges.result(mine["cid"], "T-B") == rb["body"]
    # T-A again with the same body: the stored result; with another body: refused.
    a.send("charge", mine)
    assert a.wait(2)[1][1]["body"] == ra["body"]
    a.send("charge", dict(mine, amt=1, gross=1))
    _, rr = a.wait(3)[2]
    assert rr["body"] == {"cid": mine["cid"], "st": "declined", "code": "cid_reused",
                          "cpn": []}
    assert host.metrics()["drops"] == {"T-A": {"cid_reused": 1}}
    rep = host.charges.report()
    assert rep["approved"] == {"count": 2, "amount": {"CNY": 4500}}
    assert rep["declined"]["count"] == 0
    assert host.charges.result(mine["cid"], "T-A") == ra["body"]


def test_numbers_beyond_the_database_are_dropped_never_internal_errors(shop):
    host = shop.host
    a = shop.terminal("T-A")
    huge = 1 << 63
    a.send("charge", dict(charge(50), amt=huge, gross=huge))
    a.send("hello", HELLO, seq=huge)  # authentic, but no database integer holds the seq
    assert drops_total(host, 2)
    assert host.metrics()["drops"] == {"T-A": {"bad_body": 1, "malformed": 1}}
    assert host.metrics()["charges"]["errors"] == 0
    a.seq = 1
    a.send("charge", charge(51))
    [(_, res)] = a.wait(1)
    assert res["body"]["st"] == "approved"


def test_services_are_refused_when_they_claim_a_type_twice(host_db):
    from host_sim.host import Host, HostError

    class Greedy(Tally):
        def __init__(self, ctx):
            self.up = {"charge": self.query}

    class Unknown(Tally):
        def __init__(self, ctx):
            self.up = {"weather": self.query}

    for bad in ([Greedy], [Tally, Tally], [Unknown]):
        with pytest.raises(HostError):
            Host(host_db, services=bad, rules=Rules())


def _transient_error(store):
    """What the engine raises when another worker's transaction won: retried, never dropped."""
    if store.kind == "postgres":
        import psycopg

        return psycopg.errors.DeadlockDetected("deadlock detected")
    import sqlite3

    return sqlite3.OperationalError("database is locked")


def test_a_transient_database_error_runs_the_message_again_not_dropped(shop):
    calls = []

    def max_uses(cti):
        calls.append(cti)
        if len(calls) == 1:
            raise _transient_error(shop.host.store)
        return None

    host = served(shop, coupon_max_uses=max_uses)
    a = shop.terminal("T-A")
    a.send("charge", charge(60, cpn=[b"\xee"]))
    [(mtype, res)] = a.wait(1)
    assert mtype == "charge_result" and res["body"]["st"] == "approved"
    m = host.metrics()
    assert m["drops"] == {} and m["charges"]["errors"] == 0
    assert m["charges"]["retries"] == 1 and len(calls) == 2


def test_answers_reserve_terminals_rows_in_one_order_no_deadlock(shop):
    """Another worker's batch holds T-A's row and then wants T-B's (batches take terminals in
    order) while this host reserves seqs for answers listed T-B first: the host waits for T-A
    before touching T-B, so neither transaction is a deadlock's victim."""
    host = shop.host
    if host.store.kind != "postgres":
        pytest.skip("SQLite has one writer at a time: no row locks to order")
    a, b = shop.terminal("T-A"), shop.terminal("T-B")
    other = open_store(host.store.where)
    errors, sealed = [], []

    def deliver():
        try:
            sealed.extend(host._deliver([Out("T-B", "bookings", {"ver": 1, "items": []}),
                                         Out("T-A", "bookings", {"ver": 2, "items": []})]))
        except Exception as e:  # noqa: BLE001 - the test reports it
            errors.append(e)

    try:
        with other.transaction() as tx:
            tx.execute("UPDATE devices SET host_seq = host_seq WHERE device_id='T-A'")
            t = threading.Thread(target=deliver)
            t.start()
            time.sleep(0.5)  # the host's reservation is waiting now
            tx.execute("UPDATE devices SET host_seq = host_seq WHERE device_id='T-B'")
        t.join(WAIT)
    finally:
        other.close()
    assert errors == [] and host.metrics()["charges"]["retries"] == 0
    assert [seq for _, _, seq in sealed] == [1, 1]
    assert [p["body"]["ver"] for _, p in b.wait(1)] == [1]
    assert [p["body"]["ver"] for _, p in a.wait(1)] == [2]
