"""The shop rig for end-to-end tests: real mosquitto, `python -m host_sim serve`, real terminal
processes (`-m device run`) with keypad, scanner and console on pseudo-terminals, and coupons,
trust list and publication from the issuance keystore (host_sim/issuance.py).

    shop = Shop(tmp_path, broker); shop.start_host()
    t = shop.terminal("T-A", "cpython")          # registered, configured, started
    t.sell(1234); t.status()["queue"]["pending"]; t.kill(); t.start()
    shop.report(); shop.charges("T-A"); shop.fresh_applies()
    shop.run_host()    # or: the host in this process (outage, config), with the store services
    shop.members("add", "M-0001", "--name", "Ada", "--tier", "gold", "--balance", "50000")

Both hosts run the store services of `serve` (host_sim/services.py).
Used by tests/integration/test_store_wide.py, test_rotation_e2e.py, test_power_cut.py,
test_broker_flaps.py, test_offline_limits.py, test_bookings.py and test_members.py (the host
runs the store services of `serve`: bookings, members).
"""
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import termios
import threading
import time

import paho.mqtt.client as mqtt

from device.screens import messages
from host_sim import issue, members_cli
from host_sim.issuance import Keystore, write_text
from host_sim.registry import Registry
from protocol import envelope, topics
from tests.support.terminal import DeviceProcess, Pty, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STORE = "S-001"
MERCHANT = "M-ACME"
CUR = "CNY"
DAY = 86400
VERDICT_OF = {text: code for code, text in messages.VERDICT_TEXT.items()}
BAD_SCAN = b"\x01\x02\r\n"  # an unreadable code: a cheap marker between two checks
SYNC = "PC1:SYNC"  # not base45 (4 digits): `malformed`, a verdict the Feeder never draws
POLL_S = 0.03  # the Feeder scans a check this often
# A fresh (not repeated) charge in the host's log: "charge T-A cid=<hex> amt=N CNY -> approved"
_APPLIED = re.compile(r" charge (\S+) cid=([0-9a-f]{32}) amt=(\d+) \S+ -> (approved|declined)"
                      r"(?!.*\(repeat\))")


class Shop:
    """Host side of one store: an issuance keystore (root + issuer key), the host database and
    a `host_sim serve` subprocess on the given broker."""

    def __init__(self, tmp_path, broker, clock=time.time):
        self.dir = tmp_path
        self.broker = broker
        self.db = str(tmp_path / "host.db")
        self.keys = str(tmp_path / "keys")
        self.ks = Keystore(self.keys, clock=clock, create=True)
        self.root_key = self.ks.create_root()
        self.host = None
        self.terminals = []
        Registry(self.db).close()  # the schema exists before the first register

    def start_host(self, *args):
        """`host_sim serve` on the broker; args are extra serve options (--latency 0.2, ...)."""
        with open(self.dir / "host.log", "a") as log:
            self.host = subprocess.Popen(
                [sys.executable, "-u", "-m", "host_sim", "serve", "--db", self.db,
                 "--broker-host", "127.0.0.1", "--broker-port", str(self.broker.port),
                 "--client-id", "host-" + self.dir.name] + [str(a) for a in args],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: "host up" in self.host_log(), 15, self.host_log)

    def run_host(self, **kw):
        """The host in this process (host_sim.host.Host) with the store services, logging to
        host.log like `serve`: for tests that withhold answers (outage) or send `config`."""
        from host_sim.host import Host
        from host_sim.services import SERVICES

        log = open(self.dir / "host.log", "a", buffering=1)
        self._host_log_file = log
        self.host = Host(self.db, broker_port=self.broker.port,
                         client_id="host-" + self.dir.name, services=SERVICES,
                         log=lambda line: log.write("%.3f %s\n" % (time.time(), line)), **kw)
        self.host.start()
        return self.host

    def members(self, *argv):
        """`python -m host_sim members --db DB --keystore KEYS ARGV...` run in this process:
        its output, one dict per JSON line (the host's outbox takes what it publishes)."""
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = members_cli.main(["--db", self.db, "--keystore", self.keys] + list(argv))
        assert rc == 0, (argv, out.getvalue())
        return [json.loads(line) for line in out.getvalue().splitlines()]

    def host_log(self):
        try:
            with open(self.dir / "host.log") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def publish(self, trustlist=None, revocations=None):
        """The keystore's lists (or the given COSE bytes) retained on the broker, via the
        issuer's own `publish` command; the coupons' max uses go to the host database.
        Returns the command's JSON summary."""
        argv = ["--keys", self.keys, "publish", "--db", self.db,
                "--broker-port", str(self.broker.port)]
        for what, data in (("trustlist", trustlist), ("revocations", revocations)):
            if data is not None:
                path = str(self.dir / ("%s-%d.txt" % (what, time.monotonic_ns())))
                prefix = "PT1:" if what == "trustlist" else "PR1:"
                write_text(path, prefix, data)
                argv += ["--" + what, path]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert issue.main(argv) == 0
        return json.loads(out.getvalue())

    def terminal(self, device_id, runtime="cpython", port=None, start=True, **cfg):
        """A registered terminal; cfg overrides config keys (limits, status_interval_s, ...).
        start=False leaves it configured but not running (to prepare its data_dir first)."""
        t = Terminal(self, device_id, runtime, port or self.broker.port, cfg)
        self.terminals.append(t)
        if start:
            t.start()
        return t

    def report(self):
        """The charges part of `python -m host_sim report`."""
        out = subprocess.run([sys.executable, "-m", "host_sim", "report", "--db", self.db],
                             cwd=ROOT, check=True, capture_output=True, timeout=30)
        return json.loads(out.stdout)["charges"]

    def charges(self, device_id=None):
        """The host's charges (`report --charges`): [(cid bytes, amt, status)], oldest first."""
        out = subprocess.run([sys.executable, "-m", "host_sim", "report", "--db", self.db,
                              "--charges"], cwd=ROOT, check=True, capture_output=True,
                             timeout=30)
        rows = [json.loads(line) for line in out.stdout.decode().splitlines()]
        return [(bytes.fromhex(r["cid"]), r["amt"], r["status"]) for r in rows
                if device_id in (None, r["device_id"])]

    def fresh_applies(self):
        """{cid hex: times the host log says it applied that cid fresh (not as a repeat)}:
        the host's own account of applying a charge, independent of the table's key."""
        counts = {}
        for m in _APPLIED.finditer(self.host_log()):
            counts[m.group(2)] = counts.get(m.group(2), 0) + 1
        return counts

    def close(self):
        for t in self.terminals:
            t.stop()
        if self.host is not None and not hasattr(self.host, "poll"):
            self.host.stop()  # run_host's, in this process
            self._host_log_file.close()
        elif self.host is not None and self.host.poll() is None:
            self.host.terminate()
            try:
                self.host.wait(10)
            except subprocess.TimeoutExpired:
                self.host.kill()
                self.host.wait(10)
        self.ks.close()


class Terminal:
    """One registered terminal as a real `-m device run` process: keypad, scanner and console
    on pseudo-terminals, the display read back from its jsonl file."""

    def __init__(self, shop, device_id, runtime, port, overrides=None):
        self.device_id = device_id
        self.runtime = runtime
        self.keypad, self.scanner, self.console = Pty(), Pty(), Pty()
        data_dir = shop.dir / device_id
        self.data_dir = str(data_dir)
        self.screen_path = str(data_dir / "screen.jsonl")
        self.printer_path = str(data_dir / "printer.bin")
        reg = Registry(shop.db)
        try:
            reg.register(device_id, STORE, MERCHANT)
            cfg = reg.device_config(
                device_id, {"host": "127.0.0.1", "port": port}, str(data_dir), [shop.root_key],
                CUR, scanner={"driver": "serial", "port": self.scanner.slave_path, "baud": 9600},
                keypad={"driver": "serial", "port": self.keypad.slave_path},
                display={"driver": "jsonl", "path": self.screen_path},
                printer={"driver": "file", "path": self.printer_path},
                console={"driver": "serial", "port": self.console.slave_path})
        finally:
            reg.close()
        cfg.update(overrides or {})
        self.cfg = cfg
        self.secret = bytes.fromhex(cfg["secret_hex"])
        self.cfg_path = str(shop.dir / (device_id + ".json"))
        with open(self.cfg_path, "w") as f:
            json.dump(cfg, f)
        self.log_path = shop.dir / (device_id + ".log")
        self.frames = []
        self._pos = 0
        self.proc = None
        self.mp_heap = "4M"  # MicroPython's -X heapsize
        self.mp_romfs = None  # MicroPython runs the code of this ROMFS image, not the sources

    # -- process ---------------------------------------------------------------------------
    def start(self, timeout=30, env=None):
        """env: variables for the device process (POS_CLOCK_CORRECTION_S sets its clock)."""
        # Keys, scans and commands sent while the terminal was off are lost, as on a real line:
        # none of them may reach the next boot.
        for pty in (self.keypad, self.scanner, self.console):
            termios.tcflush(pty.slave, termios.TCIFLUSH)
        self.proc = DeviceProcess(self.runtime, self.cfg_path, ROOT, self.log_path, env=env,
                                  heap=self.mp_heap, romfs=self.mp_romfs)
        # The first frame is drawn after the serial ports are open: input is safe from then on.
        self.wait_frame(lambda f: True, timeout, start=len(self.read_frames()))

    def stop(self):
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def kill(self):
        """Power cut: SIGKILL, nothing flushed."""
        if self.proc is not None:
            self.proc.kill()
            self.proc = None

    def tail(self, n=3000):
        try:
            with open(self.log_path) as f:
                text = f.read()[-n:]
        except FileNotFoundError:
            text = "(never started)"
        return "%s (%s%s) log:\n%s" % (self.device_id, self.runtime,
                                       "" if self.proc else ", stopped", text)

    def status(self):
        """The console's status reply, or None while the device cannot answer."""
        try:
            return self.console.command("status", timeout=2)
        except (AssertionError, ValueError):
            return None

    def wait_status(self, pred, timeout=20):
        return wait_until(lambda: (lambda s: s if s and pred(s) else None)(self.status()),
                          timeout, self.tail, interval=0.05)

    # -- display ---------------------------------------------------------------------------
    def read_frames(self):
        try:
            with open(self.screen_path, "rb") as f:
                f.seek(self._pos)
                data = f.read()
        except FileNotFoundError:
            return self.frames
        end = data.rfind(b"\n") + 1
        self._pos += end
        for line in data[:end].splitlines():
            self.frames.append(json.loads(line))
        return self.frames

    def wait_frame(self, pred, timeout=10, start=0):
        def find():
            for f in self.read_frames()[start:]:
                if pred(f):
                    return f
            return None
        return wait_until(find, timeout, self.tail, interval=0.01)

    # -- input -----------------------------------------------------------------------------
    def press(self, *keys):
        self.keypad.write("".join(k + "\n" for k in keys).encode())

    def scan(self, text):
        self.scanner.write(text.encode() + b"\r\n")

    def check(self, token, timeout=10):
        """The terminal's stateful verdict on token: (code, frame). Asked on the sale screen of
        a sale opened for it and then cancelled, so nothing is recorded (the min spend of a
        coupon is judged against that sale's total)."""
        self.open_sale(10000)
        f = self.sale_check(token, timeout)
        self.press("CANCEL")
        return sale_verdict(f), f

    def sale_check(self, token, timeout=10):
        """Scans token on the open sale screen; the frame that answers it."""
        mark = len(self.read_frames())
        # The unreadable code first, on the same line (from when the display skipped a repeated
        # frame even for a scan; the answer's frame still comes right after its own).
        self.scanner.write(BAD_SCAN + token.encode() + b"\r\n")
        return self.wait_frame(is_sale_check, timeout, mark)

    def open_sale(self, amount):
        mark = len(self.read_frames())
        # CLEAR first: it leaves a committed/coupon screen and does nothing on idle.
        self.press("CLEAR", *str(amount), "ENTER")
        return self.wait_frame(lambda f: f["screen"] == "sale", 10, mark)

    def commit(self):
        mark = len(self.read_frames())
        self.press("ENTER")
        return self.wait_frame(lambda f: f["screen"] in ("committed", "refused"), 10, mark)

    def sell(self, amount, *tokens):
        """A whole sale: amount, ENTER, each coupon accepted, ENTER; the committed frame."""
        self.open_sale(amount)
        for n, tok in enumerate(tokens, 1):
            f = self.sale_check(tok)
            assert any(line.startswith("%d coupon" % n) for line in f["lines"]), f
        f = self.commit()
        assert f["screen"] == "committed", f
        return f


def is_sale_check(frame):
    """A sale frame answering a scan (not the unreadable-code marker, not a key)."""
    last = frame["lines"][-1] if frame["lines"] else ""
    return frame["screen"] == "sale" and last not in (messages.UNREADABLE, messages.HINT_SALE)


def sale_verdict(frame):
    """The verdict code a sale frame shows for the scan it answers."""
    msg = frame["lines"][-1]
    if msg in VERDICT_OF:
        return VERDICT_OF[msg]
    if msg == messages.ALREADY_IN_SALE or msg == messages.NO_DISCOUNT or msg.startswith("-"):
        return "ok"  # verified ok; added to the sale, or already in it
    return msg


class Feeder:
    """Scans `token` on a terminal's sale screen every period, alternating with an unreadable
    code so that each check draws a frame (the display skips a frame equal to the last one).

    On exit it scans SYNC and waits for its answer: every scan fed before has then been
    handled, and none can land on a later screen (the agent reads keypad and scanner in one
    loop, in no fixed order on MicroPython, so keys pressed next could overtake them)."""

    def __init__(self, terminal, token, period=POLL_S):
        self.terminal = terminal
        self.token = token.encode() + b"\r\n"
        self.period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.terminal.scanner.write(self.token)
            self._stop.wait(self.period / 2)
            self.terminal.scanner.write(BAD_SCAN)
            self._stop.wait(self.period / 2)

    def __enter__(self):
        self._mark = len(self.terminal.read_frames())
        self._thread.start()
        return self

    def __exit__(self, exc_type, *exc):
        self._stop.set()
        self._thread.join(5)
        if exc_type is None:
            self.terminal.scan(SYNC)
            self.terminal.wait_frame(lambda f: f["screen"] == "sale" and f["lines"][-1] ==
                                     messages.VERDICT_TEXT["malformed"], 10, self._mark)


def refusal_delay(terminal, since, code, start, timeout=10):
    """Waits until a sale-screen check on terminal (frames from index start) shows `code` at
    or after `since`; returns the delay in s from since to that frame. An upper bound: the
    Feeder scans every POLL_S and the agent polls its serial ports every 20 ms."""
    def hit(f):
        return is_sale_check(f) and f["at"] >= since and sale_verdict(f) == code
    f = terminal.wait_frame(hit, timeout, start)
    # Nothing refused the coupon before `since`: the change came after it.
    early = [g for g in terminal.frames[start:] if is_sale_check(g) and g["at"] < since]
    assert all(sale_verdict(g) == "ok" for g in early), early
    return f["at"] - since


class ResultWatch:
    """Every charge_result the host publishes, opened with the terminals' secrets."""

    def __init__(self, broker, terminals):
        self.secrets = {t.device_id: t.secret for t in terminals}
        self.results = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id="watch-%d" % os.getpid())
        self.client.on_connect = lambda c, u, fl, rc, p: c.subscribe(
            "pos/v1/dev/+/down/charge_result", qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        assert self._subscribed.wait(10)

    def _on_message(self, client, userdata, msg):
        _, dev, _ = topics.parse("pos/v1", msg.topic)
        body = envelope.open_envelope(self.secrets[dev], msg.payload, dev,
                                      "charge_result")["body"]
        with self._lock:
            self.results.append((dev, body))

    def get(self):
        with self._lock:
            return list(self.results)

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


