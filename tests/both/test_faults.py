# Faults found by probing (issue 16), on both runtimes: a damaged journal, a full disk, host
# settings with keys or values the device cannot keep, a replayed `redeemed` after a power cut, a
# task that dies. Each of these failed on the main of 2026-12-03.
import asyncio
import json

from device import config
from device.agent import Agent
from device.console.commands import Commands
from device.console.lines import Console
from device.ports.clock import FixedClock
from device.ports.storage import LOG_MAGIC, PosixFS, frame
from device.sales.sale import make_sale
from device.screens import messages
from device.staff import pins
from device.tasks import Tasks
from protocol import cbor, envelope, topics
from tests.both.util import tmpdir

NOW = 1795400000
TECH = pins.hash_pin("2468", b"tech-salt-000001", 1000)
SECRET = bytes(range(32))


class Quiet:
    def write(self, text):
        pass


class Clock(FixedClock):
    def __init__(self, t=NOW):
        FixedClock.__init__(self, t, build_time=NOW - 86400)


class FullFS(PosixFS):
    """A disk with no room left: nothing new can be written, bytes already there can be
    overwritten in place (as on a POSIX filesystem)."""

    full = False

    def write_atomic(self, path, data):
        if self.full:
            raise OSError(28, "No space left on device")
        return PosixFS.write_atomic(self, path, data)

    def open_append(self, path):
        app = PosixFS.open_append(self, path)
        fs = self

        class Full:
            def write(self, data):
                if fs.full:
                    raise OSError(28, "No space left on device")
                app.write(data)

            def sync(self):
                app.sync()

            def close(self):
                app.close()
        return Full()

    def free_bytes(self, path):
        return 0 if self.full else PosixFS.free_bytes(self, path)


def cfg(d, **kw):
    obj = {"device_id": "T-0300", "store_id": "S-001", "merchant_id": "M-ACME",
           "currency": "CNY", "secret_hex": SECRET.hex(), "root_keys": ["cd" * 32],
           "data_dir": d + "/data", "pins": {"tech": TECH}}
    obj.update(kw)
    return config.parse(obj)


def agent(d, fs=None, clock=None):
    return Agent(cfg(d), fs or PosixFS(), clock or Clock(), log_out=Quiet())


def console(a):
    con = Console(Commands(a.view, None, fs=a.fs, clock=a.clock, log_out=Quiet()))

    def call(line):
        return json.loads(con.feed(line.encode() + b"\n")[0].decode())
    return call


def sale(a, n, amt=500):
    return make_sale(bytes([n]) * 16, a.queue.take_receipt_no(), amt, [], "CNY", NOW, True,
                     "clerk")


def down(mtype, body, seq, dev="T-0300"):
    return (topics.down("pos/v1", dev, mtype),
            envelope.seal(SECRET, dev, mtype, seq, NOW, body, bytes(16)))


# -- 2. a damaged header or first page ----------------------------------------------------------
def test_damaged_journal_header_starts_and_keeps_every_valid_record():
    d = tmpdir("fault-header")
    a = agent(d)
    for n in (1, 2, 3):
        a.queue.commit(sale(a, n, 100 * n))
    a.queue.log.close()
    path = a.queue.log.path
    raw = PosixFS().read(path)
    PosixFS().write_atomic(path, b"\x00\x13\x37\x00" + raw[4:])
    b = agent(d)
    assert [r["amt"] for r in b.queue.pending] == [100, 200, 300]
    st = b.status.heartbeat_body()["journal"]
    assert st["skipped_bytes"] == 4 and st["damage_events"] == 1 and st["unacknowledged"] == 1
    assert PosixFS().read(path + ".damaged")[:4] == b"\x00\x13\x37\x00"


# -- 4. a committed record damaged in the middle: counted, in status, selftest fails -----------
def test_damage_in_the_middle_is_counted_reported_and_must_be_acknowledged():
    d = tmpdir("fault-middle")
    a = agent(d)
    for n in (1, 2, 3):
        a.queue.commit(sale(a, n))
    a.queue.log.close()
    path = a.queue.log.path
    raw = bytearray(PosixFS().read(path))
    second = 4 + len(frame(cbor.dumps(a.queue.pending[0])))
    raw[second + 20] ^= 0xFF
    PosixFS().write_atomic(path, bytes(raw))
    b = agent(d)
    assert [r["cid"][0] for r in b.queue.pending] == [1, 3]
    hb = b.status.heartbeat_body()
    assert hb["journal"]["skipped_bytes"] > 0 and hb["journal"]["unacknowledged"] == 1
    assert b.metrics.get("journal_damage") == 1
    assert any("JOURNAL DAMAGE" in line for line in b.events.tail(20))
    call = console(b)
    assert call("login 2468")["ok"]
    st = call("selftest")
    assert st["passed"] is False and "journal" in st["failures"]
    assert call("status")["journal"]["unacknowledged"] == 1
    assert call("journal show")["events"][0]["skipped_bytes"] > 0
    assert call("journal ack")["acknowledged"] == 1
    assert "journal" not in call("selftest")["failures"]
    # The next boot reads a clean journal: the damage is not counted again.
    c = agent(d)
    assert c.status.journal()["skipped_bytes"] == 0
    assert c.status.journal()["unacknowledged"] == 0 and c.damage.total == 1


def test_unreadable_records_are_set_aside_and_reported_once():
    d = tmpdir("fault-badrec")
    a = agent(d)
    a.queue.commit(sale(a, 1))
    a.queue.log.append([cbor.dumps({"r": "sale", "v": 99, "x": 1})])
    a.queue.log.close()
    b = agent(d)
    assert b.queue.bad_records == 1 and b.damage.unacknowledged() == 1
    assert PosixFS().exists(b.queue.log.path + ".damaged")
    c = agent(d)
    assert c.queue.bad_records == 0 and c.damage.total == 1 and len(c.queue.pending) == 1


# -- 3. a full disk -------------------------------------------------------------------------------
def test_a_full_disk_starts_refuses_new_sales_and_keeps_the_console():
    d = tmpdir("fault-full")
    fs = FullFS()
    a = agent(d, fs)
    a.queue.commit(sale(a, 1))
    a.queue.log.close()
    fs.full = True
    b = agent(d, fs)  # used to die in counters.py with ENOSPC
    assert len(b.queue.pending) == 1
    res = b.till.commit_sale(300, [])
    assert res["ok"] is False and res["reason"] == messages.STORAGE_FULL
    assert len(b.queue.pending) == 1
    assert messages.STORAGE_FULL[0] in b.clerk.refresh(NOW)[0][2]
    # Forwarding still has its records and status/console answer.
    assert b.queue.due(0)[0]["cid"] == bytes([1]) * 16
    assert b.status.heartbeat_body()["queue"] == 1
    call = console(b)
    assert call("status")["ok"]
    # A first start on a full disk (nothing there yet) starts too.
    e = tmpdir("fault-full-new")
    fs2 = FullFS()
    fs2.full = True
    PosixFS().makedirs(e + "/data")
    c = agent(e, fs2)
    assert c.till.commit_sale(300, [])["ok"] is False


def test_pin_lockout_survives_a_restart_on_a_full_disk():
    d = tmpdir("fault-full-pin")
    fs = FullFS()
    agent(d, fs)  # first boot made the state files whole
    fs.full = True
    b = agent(d, fs)
    call = console(b)
    for _ in range(5):
        assert call("login 0000")["ok"] is False
    assert call("login 2468")["error"] == "locked"
    c = agent(d, fs)
    assert console(c)("login 2468")["error"] == "locked"
    # The seq counters too: numbering after the restart stays above what was used.
    used = c.counters.next_seq()
    again = agent(d, fs).counters.next_seq()
    assert again > used


# -- 5. and 6. host settings --------------------------------------------------------------------
def test_host_config_unknown_keys_refused_and_counted_same_on_both_runtimes():
    d = tmpdir("fault-config")
    a = agent(d)
    topic, data = down("config", {"limits": {"offline_max_charge": 77, "colour": 5},
                                  "pins": {"root": "x"}, "frobnicate": True}, 10)
    a.downlink.receive(topic, data)
    assert a.settings.limits()["offline_max_charge"] == 77
    assert "colour" not in a.settings.limits() and "root" not in a.settings.pins()
    assert a.metrics.get("config_unknown_key") == 3
    saved = json.loads(PosixFS().read(a.data_dir + "/host_settings.json"))
    assert saved == {"limits": {"offline_max_charge": 77}}
    # A bytes value never gets in (it used to make every later save fail on CPython).
    topic, data = down("config", {"limits": {"offline_max_total": b"\x01"}}, 11)
    a.downlink.receive(topic, data)
    assert a.metrics.get("drop_bad_body") == 1 and a.settings.limits()["offline_max_total"] != 1
    assert agent(d).settings.limits()["offline_max_charge"] == 77


def test_host_cannot_lock_the_technician_out():
    d = tmpdir("fault-pbkdf2")
    a = agent(d)
    slow = "pbkdf2-sha256$10000000$ab$" + "0f" * 32
    topic, data = down("config", {"pins": {"tech": slow}}, 5)
    a.downlink.receive(topic, data)
    assert a.metrics.get("drop_bad_body") == 1 and a.settings.pins()["tech"] == TECH
    # Settings an older firmware saved with such a hash are ignored at boot (the recovery).
    PosixFS().write_atomic(a.data_dir + "/host_settings.json",
                           json.dumps({"pins": {"tech": slow}}).encode())
    b = agent(d)
    assert b.settings.pins()["tech"] == TECH and b.metrics.get("bad_host_settings") == 1
    assert console(b)("login 2468")["ok"]
    # The same bound on a provisioned config.
    try:
        cfg(d, pins={"tech": slow})
        raise AssertionError("accepted")
    except config.ConfigError as e:
        assert e.key == "pins.tech"


def test_huge_status_interval_is_refused():
    a = agent(tmpdir("fault-interval"))
    topic, data = down("config", {"status_interval_s": 1 << 40}, 3)
    a.downlink.receive(topic, data)
    assert a.settings.status_interval_s() == 60 and a.metrics.get("drop_bad_body") == 1


# -- 7. `redeemed` replayed after a power cut -----------------------------------------------------
def test_redeemed_replayed_after_a_power_cut_is_not_applied_again():
    d = tmpdir("fault-redeemed")
    a = agent(d)
    cti = b"\x42" * 16
    topic, data = down("redeemed", {"cti": [cti]}, 7)
    a.downlink.receive(topic, data)
    assert a.queue.ledger.uses(cti) == 1
    # Power cut: the counters were not flushed; the broker redelivers the same message.
    b = agent(d)
    b.downlink.receive(topic, data)
    assert b.queue.ledger.uses(cti) == 1 and b.metrics.get("drop_stale_seq") == 1
    # Keyed by its own id too: the same redemption under a new seq adds nothing.
    rid = b"\x09" * 16
    b.downlink.receive(*down("redeemed", {"cti": [cti], "rid": rid}, 8))
    b.downlink.receive(*down("redeemed", {"cti": [cti], "rid": rid}, 9))
    assert b.queue.ledger.uses(cti) == 2
    assert agent(d).queue.ledger.uses(cti) == 2


# -- 9. no task of the agent dies silently --------------------------------------------------------
def test_a_failing_task_is_restarted_and_counted():
    import device.tasks as tasks_mod
    from device.metrics import Metrics
    metrics = Metrics()
    lines = []
    runs = []

    async def flaky():
        runs.append(1)
        if len(runs) < 3:
            raise OverflowError("sleep_ms too big")
        await asyncio.sleep(10)

    async def main():
        saved = tasks_mod.RESTART_PAUSE_S
        tasks_mod.RESTART_PAUSE_S = 0
        t = Tasks(metrics, lines.append)
        try:
            t.start("status", flaky)
            for _ in range(20):
                await asyncio.sleep(0.01)
        finally:
            t.cancel()
            tasks_mod.RESTART_PAUSE_S = saved

    asyncio.run(main())
    assert len(runs) == 3 and metrics.get("task_restarts_status") == 2
    assert "task status failed" in lines[0]


def test_old_journals_without_a_header_magic_prefix_still_start():
    # A journal cut to nothing but frames (its first page lost) starts with its records.
    d = tmpdir("fault-nohdr")
    a = agent(d)
    a.queue.commit(sale(a, 5))
    a.queue.log.close()
    raw = PosixFS().read(a.queue.log.path)
    assert raw[:4] == LOG_MAGIC
    PosixFS().write_atomic(a.queue.log.path, raw[4:])
    assert [r["cid"][0] for r in agent(d).queue.pending] == [5]


# -- 10. driver paths are confined ----------------------------------------------------------------
def test_display_and_printer_paths_stay_inside_the_data_dir():
    # What `config set` changes is confined (config.parse(confine=...)); the operator's own
    # file and a provision may put them anywhere (SPEC 5 sets no rule).
    d = tmpdir("fault-paths")
    base = {"device_id": "T-0300", "store_id": "S-001", "merchant_id": "M-ACME",
            "currency": "CNY", "secret_hex": SECRET.hex(), "root_keys": ["cd" * 32],
            "data_dir": d + "/data", "pins": {"tech": TECH}}
    for bad in ("../../etc/passwd", d + "/data/../../x", "/tmp/screen.jsonl", "screen.jsonl"):
        try:
            config.parse(dict(base, display={"driver": "jsonl", "path": bad}),
                         confine=("display",))
            raise AssertionError("accepted %s" % bad)
        except config.ConfigError as e:
            assert e.key == "display.path", bad
    ok = config.parse(dict(base, display={"driver": "jsonl", "path": d + "/data/screen.jsonl"},
                           printer={"driver": "file", "path": "/dev/usb/lp0"}),
                      confine=config.FILE_DRIVERS)
    assert ok["printer"]["path"] == "/dev/usb/lp0"
    rel = config.parse(dict(base, data_dir="./var/T-0300",
                            display={"driver": "jsonl", "path": "var/T-0300/screen.jsonl"}),
                       confine=("display",))
    assert rel["display"]["path"] == "var/T-0300/screen.jsonl"
    anywhere = cfg(d, display={"driver": "jsonl", "path": d + "/screen.jsonl"})
    assert anywhere["display"]["path"] == d + "/screen.jsonl"
    for bad in ("", 7, "a\x00b"):
        try:
            cfg(d, printer={"driver": "file", "path": bad})
            raise AssertionError("accepted %r" % (bad,))
        except config.ConfigError as e:
            assert e.key == "printer.path", bad
