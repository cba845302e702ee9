# The host simulator against real mosquitto: terminals are faked here with protocol.envelope and
# paho, so every byte on the wire is what a real terminal would send.
import json
import os
import signal
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from device import config as device_config
from host_sim.charges import Rules
from host_sim.host import Host
from protocol import base45, cbor, envelope, messages, topics

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WAIT = 10.0


def _client(client_id):
    return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                       clean_session=True, protocol=mqtt.MQTTv311)


class Terminal:
    """A fake terminal: seals uplinks with its secret, opens what the host sends it."""

    def __init__(self, broker, root, dev, secret):
        self.root, self.dev, self.secret = root, dev, secret
        self.seq = 0
        self.inbox = []  # (mtype, payload) in arrival order
        self.guard = envelope.SeqGuard()
        self.errors = []
        self._cv = threading.Condition()
        self._subscribed = threading.Event()
        self.client = _client("term-%s-%s" % (dev, os.urandom(4).hex()))
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect("127.0.0.1", broker.port, 30)
        self.client.subscribe(topics.device_subscriptions(root, dev)[0], 1)
        self.client.loop_start()
        assert self._subscribed.wait(WAIT)

    def _on_message(self, client, userdata, msg):
        kind, dev, mtype = topics.parse(self.root, msg.topic)
        try:
            p = envelope.open_envelope(self.secret, msg.payload, dev, mtype)
            self.guard.accept("host", p["seq"])
            messages.check(mtype, p["body"])
        except ValueError as e:
            self.errors.append(e)
            return
        with self._cv:
            self.inbox.append((mtype, p))
            self._cv.notify_all()

    def seal(self, mtype, body, seq=None, secret=None, dev=None):
        if seq is None:
            self.seq += 1
            seq = self.seq
        return envelope.seal(secret or self.secret, dev or self.dev, mtype, seq,
                             int(time.time()), body, os.urandom(16))

    def publish(self, mtype, data, topic_dev=None):
        info = self.client.publish(topics.up(self.root, topic_dev or self.dev, mtype), data, 1)
        info.wait_for_publish(WAIT)

    def send(self, mtype, body, **kw):
        data = self.seal(mtype, body, **kw)
        self.publish(mtype, data)
        return data

    def wait(self, n, timeout=WAIT):
        """The first n messages received (fails when fewer arrive in time)."""
        with self._cv:
            assert self._cv.wait_for(lambda: len(self.inbox) >= n, timeout), self.inbox
            return list(self.inbox[:n])

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def shop(broker, host_db):
    """A host on a root of its own, with T-A and T-B in store S-1 and T-C in S-2."""
    yield from host_rig(broker, host_db)


def host_rig(broker, host_db):
    """The `shop` fixture's generator (tests/integration/test_host_dispatch.py uses it too)."""
    root = "t%s/pos/v1" % os.urandom(4).hex()
    made = {"terminals": [], "hosts": []}

    def host(**kw):
        h = Host(host_db, "127.0.0.1", broker.port, root=root,
                 client_id="host-" + root.split("/")[0], **kw)
        made["hosts"].append(h)
        return h.start(WAIT)

    h = host()
    secrets = {}
    for dev, store in (("T-A", "S-1"), ("T-B", "S-1"), ("T-C", "S-2")):
        secrets[dev] = h.registry.register(dev, store, "M-1")

    def terminal(dev, secret=None):
        t = Terminal(broker, root, dev, secret or secrets[dev])
        made["terminals"].append(t)
        return t

    class Shop:
        pass

    s = Shop()
    s.root, s.host, s.secrets, s.terminal, s.new_host = root, h, secrets, terminal, host
    yield s
    for t in made["terminals"]:
        t.close()
    for h in made["hosts"]:
        try:
            h.stop()
        except Exception:  # noqa: BLE001 - a host a test already stopped
            pass


HELLO = {"fw": "0.1.0", "rt": "cpython", "boot": 1, "queue": 0, "trust_ver": 0, "rev_ver": 0}
STATUS = {"queue": 2, "queue_amt": 1500, "oldest_at": None, "drops": 0, "uptime": 60,
          "declined_unseen": 0}


def charge(n, amt=1000, cpn=()):
    cpn = [{"cti": cti, "cmp": "SPRING", "disc": 100} for cti in cpn]
    return {"cid": bytes([n]) * 16, "kind": "sale", "gross": amt + 100 * len(cpn), "amt": amt,
            "cur": "CNY", "at": 1800000000 + n, "off": False, "clerk": "c1", "cpn": cpn}


def drops_total(host, n):
    return host.wait_for(lambda: host.metrics()["drops_total"] >= n, WAIT)


def test_hello_status_charge_and_redeemed_to_the_store_only(shop):
    a, b, c = shop.terminal("T-A"), shop.terminal("T-B"), shop.terminal("T-C")
    host = shop.host
    a.send("hello", HELLO)
    a.send("status", STATUS)
    a.send("charge", charge(1, cpn=[b"\xc1\x01"]))
    [(mtype, res)] = a.wait(1)
    assert mtype == "charge_result"
    body = res["body"]
    assert body["cid"] == bytes([1]) * 16 and body["st"] == "approved" and body["auth"]
    assert body["cpn"] == [{"cti": b"\xc1\x01", "st": "ok"}]
    assert res["dev"] == "T-A" and res["seq"] == 1
    d = host.registry.device("T-A")
    assert d["online"] and d["last_hello"] == HELLO and d["last_status"] == STATUS
    assert d["last_seq"] == 3
    # The other terminal of S-1 learns of the coupon; S-2 and the sender do not.
    [(mtype, red)] = b.wait(1)
    assert mtype == "redeemed" and red["body"]["cti"] == [b"\xc1\x01"]
    assert set(red["body"]) == {"cti", "rid"} and len(red["body"]["rid"]) == 16
    # A marker sent after the fact arrives first at C and second at A: nothing came before.
    host.send("T-C", "config", {"status_interval_s": 30})
    host.send("T-A", "config", {"status_interval_s": 30})
    assert [m for m, _ in c.wait(1)] == ["config"]
    assert [m for m, _ in a.wait(2)] == ["charge_result", "config"]
    m = host.metrics()
    assert m["processed"] == {"hello": 1, "status": 1, "charge": 1}
    assert m["charges"]["approved"] == 1 and m["charges"]["redeemed_sent"] == 1
    assert m["drops_total"] == 0 and m["latency_ms"]["count"] == 1
    assert a.errors == [] and b.errors == [] and c.errors == []


def test_bad_uplinks_are_dropped_and_counted(shop):
    a = shop.terminal("T-A")
    host = shop.host
    a.seq = 4
    a.send("hello", HELLO)
    assert host.wait_for(lambda: host.registry.device("T-A")["last_seq"] == 5, WAIT)
    a.send("status", STATUS, seq=5)  # replayed seq
    a.send("status", STATUS, seq=4)  # older seq
    a.send("status", STATUS, secret=os.urandom(32))  # forged MAC
    # Sealed by T-B with its own secret, published on T-A's topic: T-A's secret fails it.
    a.publish("status", a.seal("status", STATUS, secret=shop.secrets["T-B"], dev="T-B"))
    # Sealed with T-A's secret but naming T-B inside.
    a.publish("status", a.seal("status", STATUS, dev="T-B"))
    a.publish("hello", a.seal("status", STATUS))  # type differs from the topic
    a.publish("status", b"\xff\x00garbage")
    a.send("status", {"queue": -1})  # authentic, but not a status body
    a.send("weather", {"sunny": True})  # authentic, unknown type
    ghost = shop.terminal("T-X", secret=os.urandom(32))
    ghost.send("hello", HELLO)
    assert drops_total(host, 10)
    drops = host.metrics()["drops"]
    assert drops == {
        "T-A": {"stale_seq": 2, "bad_mac": 2, "wrong_device": 1, "wrong_type": 1,
                "malformed": 1, "bad_body": 1, "unknown_type": 1},
        "T-X": {"unknown_device": 1},
    }
    # None of that moved the seq except the authentic unknown type; the host still serves.
    assert host.registry.device("T-A")["last_seq"] == a.seq
    a.send("charge", charge(9))
    [(mtype, res)] = a.wait(1)
    assert mtype == "charge_result" and res["body"]["st"] == "approved"
    assert host.metrics()["charges"]["errors"] == 0


def test_repeated_charge_gets_the_original_result_even_after_outage_and_restart(shop):
    a = shop.terminal("T-A")
    host = shop.host
    first_env = a.send("charge", charge(2, cpn=[b"\x22"]))
    [(_, r1)] = a.wait(1)
    a.send("charge", charge(2, cpn=[b"\x22"]))  # retransmission: fresh envelope, same body
    _, r2 = a.wait(2)[1]
    assert r2["body"] == r1["body"] and r2["seq"] == r1["seq"] + 1
    # Outage: the charge is decided, its result withheld.
    host.outage = True
    a.send("charge", charge(3, amt=777))
    assert host.wait_for(lambda: host.metrics()["charges"]["withheld"] == 1, WAIT)
    host.outage = False
    # The host restarts on the same database and broker session.
    host.stop()
    host2 = shop.new_host()
    a.send("charge", charge(3, amt=777))
    _, r3 = a.wait(3)[2]
    assert r3["body"]["cid"] == bytes([3]) * 16 and r3["body"]["st"] == "approved"
    assert r3["seq"] == r2["seq"] + 1  # the host seq went on from the database
    assert host2.charges.result(bytes([3]) * 16) == r3["body"]
    a.publish("charge", first_env)  # an old envelope replayed after the restart
    assert drops_total(host2, 1)
    assert host2.metrics()["drops"] == {"T-A": {"stale_seq": 1}}
    rep = host2.charges.report()
    assert rep["approved"] == {"count": 2, "amount": {"CNY": 1777}}
    assert rep["coupons_redeemed"] == 1
    assert host2.metrics()["charges"]["repeats"] == 1


def test_declines_and_latency_from_the_rules(shop):
    shop.host.stop()
    host = shop.new_host(rules=Rules(decline_over=5000), latency_s=0.2)
    a = shop.terminal("T-A")
    a.send("charge", charge(4, amt=6000))
    [(_, res)] = a.wait(1)
    assert res["body"] == {"cid": bytes([4]) * 16, "st": "declined", "code": "over_limit",
                           "cpn": []}
    # Arrival to publish: at least the injected latency.
    assert host.metrics()["latency_ms"]["min"] >= 200


def test_state_messages_update_presence(shop, broker):
    host = shop.host
    pub = _client("state-" + os.urandom(4).hex())
    pub.connect("127.0.0.1", broker.port, 30)
    pub.loop_start()
    try:
        def state(dev, payload):
            pub.publish(topics.state(shop.root, dev), payload, 1, retain=True) \
                .wait_for_publish(WAIT)

        state("T-B", cbor.dumps({"online": True, "at": 1700000000}))
        assert host.wait_for(lambda: host.registry.device("T-B")["online"], WAIT)
        assert host.registry.device("T-B")["last_seen"] == 1700000000
        state("T-B", cbor.dumps({"online": False, "at": 1700000100}))
        assert host.wait_for(lambda: not host.registry.device("T-B")["online"], WAIT)
        state("T-B", cbor.dumps({"online": "yes", "at": 1}))
        state("T-Z", cbor.dumps({"online": True, "at": 1}))
        assert drops_total(host, 2)
        assert host.metrics()["drops"] == {"T-B": {"malformed": 1},
                                           "T-Z": {"unknown_device": 1}}
        for dev in ("T-B", "T-Z"):
            state(dev, b"")  # clear the retained messages (ignored by the host)
    finally:
        pub.disconnect()
        pub.loop_stop()


def _late_subscriber(port, root, n):
    got = []
    done = threading.Event()
    sub = _client("late-" + os.urandom(4).hex())

    def on_message(client, userdata, msg):
        got.append((msg.topic, msg.payload, msg.retain))
        if len(got) >= n:
            done.set()

    sub.on_message = on_message
    sub.connect("127.0.0.1", port, 30)
    sub.subscribe(root + "/fleet/down/#", 1)
    sub.loop_start()
    try:
        assert done.wait(WAIT), got
    finally:
        sub.disconnect()
        sub.loop_stop()
    return sorted(got)


def test_retained_lists_reach_a_late_subscriber(shop, broker):
    trust = cbor.dumps(cbor.Tag(18, [b"\xa1\x01\x27", {}, b"trust", bytes(64)]))
    revs = cbor.dumps([b"\xa1\x01\x26", {}, b"revs", bytes(64)])
    shop.host.publish_trustlist(trust)
    shop.host.publish_revocations(revs)
    shop.host.stop()  # the lists stay on the broker without the host
    got = _late_subscriber(broker.port, shop.root, 2)
    assert got == [(shop.root + "/fleet/down/revocations", revs, True),
                   (shop.root + "/fleet/down/trustlist", trust, True)]


# ---------------------------------------------------------------- command line

def _cli(*args, **kw):
    env = dict(os.environ, PYTHONPATH=ROOT_DIR)
    return subprocess.run([sys.executable, "-m", "host_sim"] + list(args), cwd=ROOT_DIR,
                          env=env, capture_output=True, text=True, timeout=60, **kw)


def test_cli_register_serve_report(broker, tmp_path, host_db):
    db = host_db  # a SQLite path or a postgresql:// URL: --db takes both
    root = "c%s/pos/v1" % os.urandom(4).hex()
    out = str(tmp_path / "T-7.json")
    r = _cli("register", "T-7", "--db", db, "--store", "S-7", "--merchant", "M-7",
             "--currency", "CNY", "--root-key", "cd" * 32, "--broker-port", str(broker.port),
             "--root", root, "--data-dir", str(tmp_path / "T-7"), "--keypad-port", "/dev/pts/8",
             "--tech-pin", "1234", "--config-out", out)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["secret_rotated"] is False
    cfg = json.load(open(out))
    assert os.stat(out).st_mode & 0o077 == 0
    parsed = device_config.parse(cfg)
    assert parsed["broker"]["port"] == broker.port and parsed["broker"]["root"] == root
    assert cfg["display"] == {"driver": "jsonl", "path": str(tmp_path / "T-7/screen.jsonl")}
    assert cfg["printer"] == {"driver": "file", "path": str(tmp_path / "T-7/printer.bin")}
    assert cfg["keypad"] == {"driver": "serial", "port": "/dev/pts/8"}
    assert cfg["scanner"] is None and cfg["console"] is None
    assert list(cfg["pins"]) == ["tech"]

    trust = cbor.dumps([b"\xa1\x01\x27", {}, b"payload", bytes(64)])
    tl = tmp_path / "trust.txt"
    tl.write_text("PT1:" + base45.encode(trust) + "\n")
    bad = tmp_path / "bad.txt"
    bad.write_text("PR1:" + base45.encode(trust))
    r = _cli("serve", "--db", db, "--broker-port", str(broker.port), "--root", root,
             "--trustlist", str(bad).replace("bad", "missing"))
    assert r.returncode == 1 and "cannot read" in r.stderr
    r = _cli("serve", "--db", db, "--broker-port", str(broker.port), "--root", root,
             "--trustlist", str(bad))
    assert r.returncode == 1 and "PT1:" in r.stderr

    env = dict(os.environ, PYTHONPATH=ROOT_DIR)
    proc = subprocess.Popen([sys.executable, "-m", "host_sim", "serve", "--db", db,
                             "--broker-port", str(broker.port), "--root", root,
                             "--client-id", "cli-" + root[:9], "--trustlist", str(tl),
                             "--decline-over", "100"],
                            cwd=ROOT_DIR, env=env, stdout=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "published trustlist" in line:
                break
        assert _late_subscriber(broker.port, root, 1) == [
            (root + "/fleet/down/trustlist", trust, True)]
        t = Terminal(broker, root, "T-7", bytes.fromhex(cfg["secret_hex"]))
        try:
            t.send("charge", charge(7, amt=500))
            [(_, res)] = t.wait(1)
            assert res["body"]["code"] == "over_limit"
        finally:
            t.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0
    log = "".join(lines) + rest
    assert "charge T-7 cid=%s amt=500 CNY -> declined code=over_limit" % ("07" * 16) in log
    assert log.rstrip().endswith("host down")

    r = _cli("report", "--db", db)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["charges"]["declined"] == {"count": 1, "amount": {"CNY": 500},
                                          "codes": {"over_limit": 1}}
    [dev] = rep["devices"]
    assert dev["device_id"] == "T-7" and dev["last_seq"] == 1 and "secret" not in dev
    r = _cli("report", "--db", db, "--charges")
    assert r.returncode == 0, r.stderr
    [line] = [json.loads(x) for x in r.stdout.splitlines()]
    assert line == {"device_id": "T-7", "cid": "07" * 16, "kind": "sale", "amt": 500,
                    "cur": "CNY", "status": "declined", "code": "over_limit",
                    "at": line["at"], "conflicts": 0}
    assert abs(line["at"] - time.time()) < 120
    assert _cli("report", "--db", str(tmp_path / "none.db")).returncode == 1
    r = _cli("report", "--db", "postgresql://nobody:secret@127.0.0.1:9/none")
    assert r.returncode == 1 and "cannot open" in r.stderr and "secret" not in r.stderr
    assert _cli("serve").returncode == 2


def test_a_failing_handler_is_counted_and_the_host_goes_on(shop):
    def max_uses(cti):
        if cti == b"\xee":
            raise RuntimeError("issuance lookup failed")
        return None

    shop.host.stop()
    host = shop.new_host(coupon_max_uses=max_uses)
    a = shop.terminal("T-A")
    a.send("charge", charge(5, cpn=[b"\xee"]))
    assert drops_total(host, 1)
    assert host.metrics()["drops"] == {"T-A": {"internal_error": 1}}
    assert host.metrics()["charges"]["errors"] == 1
    assert host.charges.result(bytes([5]) * 16) is None  # rolled back, nothing applied
    a.send("charge", charge(6))
    [(_, res)] = a.wait(1)
    assert res["body"]["cid"] == bytes([6]) * 16 and res["body"]["st"] == "approved"
