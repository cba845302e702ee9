# The agent: wires the ports, the cores and the drivers together, and owns the asyncio tasks.
#
# Everything that decides something lives in a sans-I/O core (queue, verifier, trust, console,
# clerk screens); this module only moves bytes and events between them and the outside.
import json

try:
    import asyncio
except ImportError:  # pragma: no cover - boards ship it as uasyncio
    import uasyncio as asyncio

from device import crypto
from device import firmware as build
from device.counters import Counters
from device.coupons.verifier import Verifier
from device.eventlog import EventLog
from device.metrics import Metrics
from device.ports import runtime as rt
from device.ports.clock import Clock, ticks_diff, ticks_ms
from device.ports.storage import PosixFS, RecordLog
from device.sales.queue import ChargeQueue
from device.sales.sale import charge_body
from device.trust.lists import TrustError, TrustStore
from protocol import cbor, envelope, messages, topics

# Downlink types whose replay would do harm: their seq is written to flash before they act.
DURABLE_SEQ_TYPES = ("config",)
IO_POLL_S = 0.02
FORWARD_POLL_S = 0.2
LINK_RETRY_S = 2
LINK_RETRY_MAX_S = 60


class Agent:
    def __init__(self, cfg, fs=None, clock=None):
        self.config_path = None   # set by device/main.py: provision, config set, factory reset
        self.console_port = None  # a console handed over by an unprovisioned start
        self.log_out = None       # console mode writes log lines to stderr
        self.events = EventLog()  # the ring behind the console's `log tail`
        self.cfg = cfg
        self.fs = fs or PosixFS()
        self.clock = clock or Clock()
        self.metrics = Metrics()
        self.device_id = cfg["device_id"]
        self.root = cfg["broker"]["root"]
        self.secret = bytes.fromhex(cfg["secret_hex"])
        self.data_dir = cfg["data_dir"]
        self.fs.makedirs(self.data_dir)
        self.counters = Counters(self.fs, self.data_dir + "/counters.json").open()
        self.guard = envelope.SeqGuard({"host": self.counters.host_seq})
        self.queue = ChargeQueue(RecordLog(self.fs, self.data_dir + "/queue.log")).open()
        roots = [bytes.fromhex(k) for k in cfg["root_keys"]]
        self.trust = TrustStore(self.fs, self.data_dir, roots).open()
        self.verifier = Verifier(self.trust)
        self.link = None
        self.started_ms = ticks_ms()
        self._kick = None
        self.console = None
        self.clerk = None
        self.display = None
        self.printer = None
        self.drivers = {}

    # -- facts for hello, status and the console ----------------------------------------------
    @property
    def online(self):
        return self.link is not None and self.link.connected

    def trust_ver(self):
        return self.trust.trust_ver

    def rev_ver(self):
        return self.trust.rev_ver

    def uptime(self):
        return ticks_diff(ticks_ms(), self.started_ms) // 1000

    def hello_body(self):
        return {"fw": build.FW, "rt": rt.NAME, "boot": self.counters.boot,
                "queue": len(self.queue.pending), "trust_ver": self.trust_ver(),
                "rev_ver": self.rev_ver()}

    def status_body(self):
        count, amount, oldest = self.queue.totals()
        return {"queue": count, "queue_amt": amount, "oldest_at": oldest,
                "drops": self.metrics.drops(), "uptime": self.uptime(),
                "declined_unseen": len(self.queue.unacked)}

    # -- uplink ----------------------------------------------------------------------------------
    def seal(self, mtype, body):
        return envelope.seal(self.secret, self.device_id, mtype, self.counters.next_seq(),
                             self.clock.now(), body, crypto.random_bytes(16))

    async def send(self, mtype, body, retain=False):
        await self.link.publish(topics.up(self.root, self.device_id, mtype),
                                self.seal(mtype, body), retain=retain)
        self.metrics.inc("sent_" + mtype)

    def state_payload(self, online):
        return cbor.dumps({"online": online, "at": self.clock.now()})

    async def on_connect(self, link):
        await link.subscribe([(t, 1) for t in topics.device_subscriptions(self.root,
                                                                           self.device_id)])
        await link.publish(topics.state(self.root, self.device_id), self.state_payload(True),
                           retain=True)
        await self.send("hello", self.hello_body())
        self.queue.link_up()

    # -- downlink --------------------------------------------------------------------------------
    def on_message(self, topic, payload):
        """Every inbound publish; never raises (bad input is counted and dropped)."""
        try:
            kind, dev, mtype = topics.parse(self.root, topic)
        except ValueError:
            self.metrics.inc("drop_bad_topic")
            return
        try:
            if kind == "fleet":
                self._on_fleet(mtype, payload)
            elif kind == "down" and dev == self.device_id:
                self._on_down(mtype, payload)
            else:
                self.metrics.inc("drop_wrong_topic")
        except Exception as e:  # the link must survive whatever a handler does
            self.metrics.inc("handler_errors")
            self.log("handler error on %s: %s %s" % (topic, type(e).__name__, e))

    def on_oversized(self, topic, size):
        """A downlink over the link's packet limit: skipped unread and acknowledged by it."""
        self.metrics.inc("drop_oversized")
        self.log("oversized message on %s (%d bytes) dropped" % (topic, size))

    def _on_down(self, mtype, payload):
        try:
            msg = envelope.open_envelope(self.secret, payload, self.device_id, mtype)
            self.guard.check("host", msg["seq"])
        except envelope.EnvelopeError as e:
            self.metrics.inc("drop_" + e.code)
            return
        handler = getattr(self, "_down_" + mtype, None)
        if handler is not None:
            try:
                messages.check(mtype, msg["body"])
            except messages.MessageError as e:
                self.metrics.inc("drop_bad_body")
                self.log("bad %s body: %s" % (mtype, e))
                return
        # Authentic and fresh: the seq counts even for a type this firmware does not know.
        self.guard.accept("host", msg["seq"])
        self.counters.accept_host_seq(msg["seq"], mtype in DURABLE_SEQ_TYPES)
        if handler is None:
            self.metrics.inc("drop_unknown_type")
            return
        handler(msg["body"])

    def _down_charge_result(self, body):
        if self.queue.on_result(body, self.clock.now()) is None:
            self.metrics.inc("result_unmatched")
            return
        if body["st"] == "declined":
            self.metrics.inc("declined")
        self.kick_forwarder()  # the window has room again: send the next charge now

    def _down_redeemed(self, body):
        self.queue.add_redeemed(body["cti"], self.clock.now())

    def _down_config(self, body):
        changed = []
        if "limits" in body:
            self.cfg["limits"].update(body["limits"])
            changed.append("limits")
        if "pins" in body:
            self.cfg["pins"].update(body["pins"])
            changed.append("pins")
        if "status_interval_s" in body:
            self.cfg["status_interval_s"] = body["status_interval_s"]
            changed.append("status_interval_s")
        self._save_host_settings()
        self.log("config from host: %s" % ",".join(changed))

    def _save_host_settings(self):
        # Host-managed settings survive a reboot beside (not inside) the provisioned config.
        keep = {"limits": self.cfg["limits"], "pins": self.cfg["pins"],
                "status_interval_s": self.cfg["status_interval_s"]}
        self.fs.write_atomic(self.data_dir + "/host_settings.json", json.dumps(keep).encode())

    def load_host_settings(self):
        raw = self.fs.read(self.data_dir + "/host_settings.json")
        if not raw:
            return
        try:
            saved = json.loads(raw)
            messages.check("config", saved)
        except (ValueError, messages.MessageError):
            self.metrics.inc("bad_host_settings")
            return
        self.cfg["limits"].update(saved.get("limits", {}))
        self.cfg["pins"].update(saved.get("pins", {}))
        self.cfg["status_interval_s"] = saved.get("status_interval_s",
                                                  self.cfg["status_interval_s"])

    def _on_fleet(self, what, payload):
        try:
            if what == "trustlist":
                ver = self.trust.install_trustlist(payload)
            else:
                ver = self.trust.install_revocations(payload)
        except TrustError as e:
            if e.code == "rollback":
                # Retained lists come again on every reconnect: not an error when already ours.
                self.metrics.inc("fleet_not_newer")
            else:
                self.metrics.inc("drop_fleet_" + e.code)
            return
        self.log("installed %s ver %d" % (what, ver))

    # -- tasks -----------------------------------------------------------------------------------
    def log(self, text):
        line = "[%s] %s" % (self.device_id, text)
        if self.log_out is None:
            print(line)
        else:
            self.log_out.write(line + "\n")
        self.events.add(self.clock.now(), text)

    async def _status_loop(self):
        while True:
            await asyncio.sleep(self.cfg["status_interval_s"])
            if self.online:
                try:
                    await self.send("status", self.status_body())
                except Exception as e:
                    self.metrics.inc("status_failed")
                    self.log("status not sent: %s" % e)
            self.counters.flush()

    def kick_forwarder(self):
        if self._kick is not None:
            self._kick.set()

    async def _forward_loop(self):
        while True:
            try:
                await asyncio.wait_for(self._kick.wait(), FORWARD_POLL_S)
            except asyncio.TimeoutError:
                pass
            self._kick.clear()
            if not self.online:
                continue
            for rec in self.queue.due(ticks_ms()):
                try:
                    await self.send("charge", charge_body(rec))
                except Exception as e:
                    self.metrics.inc("forward_failed")
                    self.log("charge not forwarded: %s" % e)
                    break
                self.queue.sent(rec["cid"], ticks_ms(), crypto.random_bytes(1)[0] / 256)
            if self.queue.needs_compaction():
                try:
                    self.queue.compact(self.clock.now())
                except Exception as e:  # out of memory or flash: keep forwarding, retry later
                    self.metrics.inc("compaction_failed")
                    self.log("compaction failed: %s %s" % (type(e).__name__, e))

    async def _io_loop(self):
        last_refresh = 0
        while True:
            for name, (port, handler) in self.drivers.items():
                try:
                    data = port.read_available()
                    if data:
                        for out in handler(data) or ():
                            port.write(out)
                except Exception as e:  # a flaky port must not stop the till
                    self.metrics.inc("io_error_" + name)
                    self.log("%s: %s" % (name, e))
            if self.clerk is not None:
                now = self.clock.now()
                self.perform(self.clerk.tick(now))
                if now != last_refresh:
                    # Idle facts (online, queue) change under the screen: redraw once a second.
                    last_refresh = now
                    self.perform(self.clerk.refresh(now))
            await asyncio.sleep(IO_POLL_S)

    # -- clerk side ------------------------------------------------------------------------------
    def perform(self, actions):
        for act in actions:
            try:
                if act[0] == "show":
                    self.display.show(act[1], act[2])
                elif act[0] == "print":
                    self.printer.print(act[1])
            except Exception as e:  # paper out or a full disk: the sale itself is safe
                self.metrics.inc("%s_errors" % ("display" if act[0] == "show" else "printer"))
                self.log("%s failed: %s" % (act[0], e))

    def _on_scanner(self, data):
        now = self.clock.now()
        for ev in self.scan_framer.feed(data):
            if ev[0] == "scan":
                self.metrics.inc("scans")
                self.perform(self.clerk.scan(ev[1], now))
            else:
                self.metrics.inc("bad_scans")
                self.perform(self.clerk.bad_scan(ev[1], now))

    def _on_keypad(self, data):
        now = self.clock.now()
        for ev in self.key_framer.feed(data):
            if ev[0] == "key":
                self.perform(self.clerk.key(ev[1], now))
            else:
                self.metrics.inc("bad_keys")

    def open_drivers(self):
        from device.console.commands import Commands
        from device.console.lines import Console
        from device.drivers.display import NullDisplay, open_display
        from device.drivers.keypad import KeyFramer
        from device.drivers.printer import open_printer
        from device.drivers.scanner import ScanFramer
        from device.drivers.serial import open_serial
        from device.sales.till import Till
        from device.screens.clerk import Clerk
        cfg = self.cfg
        self.driver_errors = {}
        if self.console is None:
            # An unprovisioned start hands over its console (and session) already attached.
            self.console = Console(Commands(self, self.config_path))
        self.display = NullDisplay()
        if cfg["display"]:
            try:
                self.display = open_display(cfg["display"], self.clock.now_f)
            except Exception as e:
                self._driver_failed("display", e)
        self.printer = None
        if cfg["printer"]:
            try:
                self.printer = open_printer(cfg["printer"])
            except Exception as e:
                self._driver_failed("printer", e)
        self.clerk = Clerk(Till(self), currency=cfg["currency"])
        self.scan_framer = ScanFramer()
        self.key_framer = KeyFramer()
        if self.console_port is not None:
            self.drivers["console"] = (self.console_port, self._on_console)
        for name, handler in (("console", self._on_console), ("scanner", self._on_scanner),
                              ("keypad", self._on_keypad)):
            if cfg[name] and name not in self.drivers:
                try:
                    self.drivers[name] = (open_serial(cfg[name]), handler)
                except Exception as e:
                    self._driver_failed(name, e)
        self.perform(self.clerk.refresh(self.clock.now()))

    def _driver_failed(self, name, e):
        # Keep selling without the broken part; selftest reports it.
        self.driver_errors[name] = "%s: %s" % (type(e).__name__, e)
        self.metrics.inc("open_failed_" + name)
        self.log("cannot open %s: %s" % (name, e))

    def _on_console(self, data):
        port = self.drivers["console"][0]
        try:
            for out in self.console.feed(data):
                port.write(out)
        finally:
            code = self.console.commands.exit_code
            if code is not None:
                # reboot / factory-reset: the reply is out (or the port is gone): restart
                self.restart(code, flush=not self.console.commands.reset_done)
        return ()

    def restart(self, code, flush=True):
        """Stops the terminal for a restart: boards reset; the unix and desktop runtimes exit
        with `code` (device/main.py finishes a factory reset, a supervisor starts us again)."""
        self.log("restarting (exit %d)" % code)
        if flush:
            try:
                self.counters.flush()
            except OSError as e:
                self.log("counters not saved: %s" % e)
        self.queue.log.close()
        for port, _ in self.drivers.values():
            try:
                port.close()
            except Exception:
                pass
        self.drivers = {}
        import sys
        if rt.MICROPYTHON and sys.platform not in ("linux", "darwin", "win32"):
            import machine
            machine.reset()
        raise SystemExit(code)

    async def run(self):
        from device.ports.link import make_link
        self._kick = asyncio.Event()
        self.load_host_settings()
        self.open_drivers()
        will = (topics.state(self.root, self.device_id), self.state_payload(False), 1, True)
        self.log("fw %s on %s, boot %d, queue %d" % (build.FW, rt.NAME, self.counters.boot,
                                                     len(self.queue.pending)))
        tasks = [asyncio.create_task(self._status_loop()),
                 asyncio.create_task(self._forward_loop()),
                 asyncio.create_task(self._io_loop())]
        try:
            delay = LINK_RETRY_S
            while self.link is None:
                try:
                    self.link = make_link(self.cfg["broker"], self.device_id, will,
                                          self.on_connect, self.on_message,
                                          keepalive=self.cfg["broker"]["keepalive"],
                                          on_oversized=self.on_oversized)
                except Exception as e:
                    # A broker setting that cannot work yet (certificates not installed...):
                    # sell offline, show why on the console, and try again.
                    self.metrics.inc("link_config_error")
                    self.log("MQTT link not started (retry in %d s): %s" % (delay, e))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, LINK_RETRY_MAX_S)
            await self.link.run()
        finally:
            for t in tasks:
                t.cancel()
            self.counters.flush()
