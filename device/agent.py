# The agent: builds the ports, the cores, the peripherals and the store services, wires them
# together (each core gets its collaborators in its constructor) and runs the tasks. It decides
# nothing itself: decisions live in the sans-I/O cores (queue, verifier, trust lists, till,
# screens, console, downlink gate); this module only moves events between them and the outside.
#
# A service (device/services.py lists them) is a module whose install(agent) registers what it
# adds: queue kinds, downlink handlers, screens, till gates, console commands, status facts,
# tasks (add_task) and what to save when the terminal stops (on_stop). Adding one never edits
# this file.
import asyncio

from device import crypto, firmware, services
from device.charge_batches import ChargeBatches
from device.console import selftest
from device.console.commands import Commands, ConsoleView
from device.console.lines import Console
from device.counters import Counters
from device.coupons.verifier import Verifier
from device.delivery import GroupedDelivery
from device.downlink import Downlink
from device.eventlog import EventLog
from device.host_settings import HostSettings
from device.metrics import Metrics
from device.peripherals import Peripherals
from device.ports import runtime
from device.ports.clock import Clock, ticks_ms
from device.ports.storage import PosixFS, RecordLog
from device.sales.damage import JournalDamage
from device.sales.queue import ChargeQueue
from device.sales.till import Till
from device.screens import messages
from device.screens.clerk import Clerk
from device.staff.pins import Lockout
from device.staff.roles import LOCK_FILE, Roles
from device.status import Status, heartbeat_delay
from device.tasks import Tasks
from device.trust.lists import TrustError, TrustStore
from device.uplink import Uplink
from protocol import topics

IO_POLL_S = 0.02
FORWARD_POLL_S = 0.2
# Records in flight (sent, not yet answered): SPEC 4's window. The host answers a batch at a
# time, so the window keeps several batches coming; smaller where RAM is small (each record of
# the window is held decoded).
WINDOW = 16 if runtime.MICROPYTHON else 256
LINK_RETRY_S = 2
LINK_RETRY_MAX_S = 60
CONSOLE_LOCK_FILE = "/console_lock.json"
# Below this much free flash no new sale is taken: the journal's next compaction needs room for
# a whole copy, and what is already recorded must keep forwarding (a sale record is ~250 B).
MIN_FREE_BYTES = 65536


class Agent:
    def __init__(self, cfg, fs=None, clock=None, config_path=None, log_out=None):
        self.cfg = cfg
        self.config_path = config_path  # provision, config set and factory reset write it
        self.log_out = log_out          # console mode writes log lines to stderr
        self.events = EventLog()        # the ring behind the console's `log tail`
        self.fs = fs = fs or PosixFS()
        self.clock = clock = clock or Clock()
        self.metrics = metrics = Metrics()
        log = self.log
        self.device_id = cfg["device_id"]
        self.data_dir = d = cfg["data_dir"]
        self.shop = {k: cfg[k] for k in ("device_id", "store_id", "merchant_id", "currency")}
        root = cfg["broker"]["root"]
        secret = bytes.fromhex(cfg["secret_hex"])
        fs.makedirs(d)
        self.counters = Counters(fs, d + "/counters.json", log=log).open()
        self.settings = HostSettings(fs, d, cfg, metrics, log).load()
        self.uplink = Uplink(self.device_id, secret, root, self.counters, clock, metrics)
        self.downlink = Downlink(self.device_id, secret, root, self.counters, metrics, log)
        self.queue = ChargeQueue(RecordLog(fs, d + "/queue.log"), window=WINDOW)
        self.trust = TrustStore(fs, d, [bytes.fromhex(k) for k in cfg["root_keys"]]).open()
        self.verifier = Verifier(self.trust)
        self.roles = Roles(self.settings, Lockout(fs, d + LOCK_FILE, clock).open(), self.queue,
                           clock, self.shop, metrics, log)
        self.till = Till(self.shop, self.queue, self.verifier, clock, self.settings,
                         self.uplink, self.roles, metrics, log)
        self.clerk = Clerk(self.till, self.roles, currency=cfg["currency"])
        self.peripherals = Peripherals(cfg, clock, metrics, log)
        self.damage = JournalDamage(fs, d, log).load()
        self.status = Status(self.shop, self.queue, self.counters, metrics, self.trust,
                             self.uplink, self.damage)
        self.view = ConsoleView(cfg=cfg, data_dir=d, status=self.status, settings=self.settings,
                                queue=self.queue, trust=self.trust, till=self.till,
                                events=self.events,
                                lockout=Lockout(fs, d + CONSOLE_LOCK_FILE, clock).open(),
                                selftest=self._selftest, damage=self.damage, log=log)
        self.tasks = Tasks(metrics, log)
        self._kick = None
        self.link = None
        self.console = None
        self.on_connect_hooks = []
        self._service_tasks = []   # (name, fn) started by run()
        self._stop_hooks = []
        self.downlink.on("redeemed", self._on_redeemed)
        self.downlink.on("config", self._on_config, durable=True)
        self.downlink.on_fleet("trustlist", self._on_list("trustlist"))
        self.downlink.on_fleet("revocations", self._on_list("revocations"))
        self.queue.listen(on_commit=self._queued, on_resolve=self._queued, replay=False)
        self.delivery = GroupedDelivery(self.downlink.receive, self.queue, metrics, log)
        self._in_flight = 0
        self._sending = {}  # ids whose send awaits its PUBACK
        self._forwarding_on = None  # the link's connect count once on_connect has run
        self._forward_errors = 0
        self.till.add_gate(self._storage_gate)
        self.clerk.add_idle_lines(self._storage_lines)
        for name in services.SERVICES:
            __import__(name, None, None, ["install"]).install(self)
        for kind in self.queue.kinds.values():
            self.downlink.on(kind.answer, self._on_answer(kind.answer))
        self.batches = ChargeBatches(self.queue.window, metrics, log, on_grant=self._queued)
        self.downlink.on("caps", self.batches.on_caps)
        self.downlink.on("charge_results", self.batches.results(self._on_answer("charge_result")))
        runtime.settle()
        self.queue.open()  # the largest state (the pending index) packs in low
        # An answer already on flash was accepted with its seq: a replay of it is stale.
        self.downlink.restore_seq(self.queue.host_seq)
        self._check_journal()

    def _check_journal(self):
        q = self.queue
        if not q.bad_records and not q.log.skipped_bytes:
            return
        self.metrics.inc("journal_damage")
        saved = q.log.damaged_copy
        if saved is None and q.bad_records:
            saved = q.log.path + ".damaged"
            raw = self.fs.read(q.log.path)
            try:
                self.fs.write_atomic(saved, raw)
            except OSError:
                saved = None
        self.damage.record(self.clock.now(), q.bad_records, q.log.skipped_bytes, saved)
        if q.bad_records:
            try:
                q.compact(self.clock.now())  # so the same records are not counted at every boot
            except Exception as e:
                self.log("journal not rewritten: %s" % e)

    # -- what services add besides their collaborators' extension points -----------------------
    def add_task(self, name, fn):
        """`await fn()` runs under the task supervisor for as long as the terminal runs."""
        self._service_tasks.append((name, fn))

    def on_stop(self, fn):
        """fn() runs when the terminal stops on purpose (end of run, reboot; not after a
        factory reset): what a service keeps in memory goes to flash."""
        self._stop_hooks.append(fn)

    def flush(self):
        """Saves what is kept in memory between writes: the counters, the queue's checkpoint
        (the next boot replays nothing), then each on_stop."""
        try:
            self.counters.flush()
        except OSError as e:
            self.log("counters not saved: %s" % e)
        try:
            self.queue.checkpoint(ticks_ms())
        except Exception as e:
            self.log("queue checkpoint not written: %s" % e)
        for fn in self._stop_hooks:
            try:
                fn()
            except Exception as e:  # one service's failure must not skip the others
                self.log("not saved at stop: %s %s" % (type(e).__name__, e))

    # -- logging ---------------------------------------------------------------------------------
    def log(self, text):
        line = "[%s] %s" % (self.cfg["device_id"], text)
        if self.log_out is None:
            print(line)
        else:
            self.log_out.write(line + "\n")
        self.events.add(self.clock.now(), text)

    def _selftest(self):
        return selftest.run(self.peripherals, self.fs, self.data_dir, self.clock, self.uplink,
                            self.trust, self.status.journal)

    # -- downlink effects -------------------------------------------------------------------------
    def _on_answer(self, mtype):
        def handle(body, seq):
            if self.queue.on_answer(mtype, body, self.clock.now(), seq) is None:
                self.metrics.inc("result_unmatched")
            elif body.get("st") == "declined":
                self.metrics.inc("declined")
        return handle

    def _on_redeemed(self, body, seq):
        self.queue.add_redeemed(body["cti"], self.clock.now(), seq, body.get("rid"))

    def _on_config(self, body, seq):
        self.settings.apply(body)

    def _on_list(self, what):
        def handle(payload):
            try:
                if what == "trustlist":
                    ver = self.trust.install_trustlist(payload)
                else:
                    ver = self.trust.install_revocations(payload)
            except TrustError as e:
                if e.code == "rollback":
                    # Retained lists come again on every reconnect: not an error when ours.
                    self.metrics.inc("fleet_not_newer")
                else:
                    self.metrics.inc("drop_fleet_" + e.code)
                    self.log("%s refused: %s" % (what, e.message))
                return
            self.log("installed %s ver %d" % (what, ver))
        return handle

    def storage_full(self):
        free = self.fs.free_bytes(self.data_dir)
        return self.queue.log.needs_repair() or (free is not None and free < MIN_FREE_BYTES)

    def _storage_gate(self, action):
        if self.storage_full():
            self.metrics.inc("refused_storage_full")
            return messages.STORAGE_FULL
        return None

    def _storage_lines(self):
        return [messages.STORAGE_FULL[0]] if self.storage_full() else []

    def _queued(self, *args):
        # The queue's own signal: a commit (or an answer freeing the window) wakes the forwarder.
        if self._kick is not None:
            self._kick.set()

    # -- link ------------------------------------------------------------------------------------
    async def _on_connect(self, link):
        await link.subscribe([(t, 1) for t in topics.device_subscriptions(
            self.uplink.root, self.device_id)])
        await link.publish(self.uplink.state_topic(), self.uplink.state_payload(True),
                           retain=True)
        self.batches.reset(ticks_ms())
        await self.uplink.send("hello", self.batches.offer(self.status.hello_body()))
        self.queue.link_up()
        # the forwarder sends on this connection from here on (after link_up: a record sent
        # earlier on it would go out twice)
        self._forwarding_on = link.stats.get("connects")
        # Records the host answered "not decided yet" are asked about once per connection.
        for rec in self.queue.waiting_due():
            mtype, body = self.queue.message(rec)
            await self.uplink.send(mtype, body)
        for fn in self.on_connect_hooks:
            await fn()
        self._queued()

    async def _start_link(self):
        from device.ports.link import make_link
        will = (self.uplink.state_topic(), self.uplink.state_payload(False), 1, True)
        delay = LINK_RETRY_S
        while self.link is None:
            try:
                self.link = make_link(self.cfg["broker"], self.device_id, will, self._on_connect,
                                      self.delivery.one,
                                      keepalive=self.cfg["broker"]["keepalive"],
                                      on_oversized=self.downlink.oversized,
                                      on_messages=self.delivery.many,
                                      max_inflight=self.queue.window + 16)
            except Exception as e:
                # A broker setting that cannot work yet (certificates not installed...):
                # sell offline, show why on the console, and try again.
                self.metrics.inc("link_config_error")
                self.log("MQTT link not started (retry in %d s): %s" % (delay, e))
                await asyncio.sleep(delay)
                delay = min(delay * 2, LINK_RETRY_MAX_S)
        self.uplink.link = self.link
        runtime.settle()  # the boot's garbage goes before the link reads
        await self.link.run()

    # -- tasks -----------------------------------------------------------------------------------
    async def _status_loop(self):
        while True:
            await asyncio.sleep(heartbeat_delay(self.settings.status_interval_s(),
                                                crypto.random_bytes(1)[0]))
            if self.uplink.online:
                try:
                    await self.uplink.send("status", self.status.heartbeat_body())
                except Exception as e:
                    self.metrics.inc("status_failed")
                    self.log("status not sent: %s" % e)
            self.counters.flush()

    async def _forward_loop(self):
        q = self.queue
        while True:
            try:
                await asyncio.wait_for(self._kick.wait(), FORWARD_POLL_S)
            except asyncio.TimeoutError:
                pass
            self._kick.clear()
            link = self.link
            if self.uplink.online and link.stats.get("connects") == self._forwarding_on \
                    and self.batches.settled(ticks_ms()):
                # What is due goes out together, without waiting for earlier PUBACKs: one task
                # and one write for all of it, each record sealed with its own seq (SPEC 3.1).
                now = ticks_ms()
                batch = []
                for rec in q.due(now):
                    if self._in_flight >= q.window:
                        break
                    rid = q.id_of(rec)
                    if rid in self._sending:
                        continue  # its last send still waits for the PUBACK: not twice at once
                    mtype, body = q.message(rec)
                    q.sent(rid, now, crypto.random_bytes(1)[0] / 256)
                    self._in_flight += 1
                    self._sending[rid] = True
                    batch.append((rid, mtype, body))
                if batch:
                    asyncio.create_task(self._forward(batch))
            if q.needs_compaction():
                try:
                    q.compact(self.clock.now())
                except Exception as e:  # out of memory or flash: keep forwarding, retry later
                    self.metrics.inc("compaction_failed")
                    self.log("compaction failed: %s %s" % (type(e).__name__, e))
            q.tidy()
            now = ticks_ms()
            if q.needs_checkpoint(now):
                try:
                    q.checkpoint(now)
                except Exception as e:  # the journal stays the truth: a longer boot, no loss
                    self.metrics.inc("checkpoint_failed")
                    self.log("queue checkpoint failed: %s %s" % (type(e).__name__, e))

    async def _forward(self, batch):
        """batch: [(rid, mtype, body)], published together; a record whose publish failed is
        due again at once (after a reconnect: all of them)."""
        try:
            sends = self.batches.group(batch)
            try:
                errors = await self.uplink.send_many([(m, b) for m, b, _ in sends])
            except Exception as e:  # offline, or the link's bug: none of them left
                errors = [e] * len(sends)
            failed = None
            for i, (mtype, _, rids) in enumerate(sends):
                error = errors[i]
                if error is not None:
                    for rid in rids:
                        self.metrics.inc("forward_failed")
                        self.queue.unsent(rid)
                    if failed is None:
                        failed = (mtype, error)
            if failed is None:
                self._forward_errors = 0
            else:
                if not self._forward_errors:  # one line per outage, not one per record
                    self.log("%s not forwarded: %s" % failed)
                self._forward_errors += 1
        finally:
            for rid, _, _ in batch:
                self._sending.pop(rid, None)
            self._in_flight -= len(batch)
            if self._in_flight + len(batch) >= self.queue.window:
                self._queued()  # the window was full: room in it again

    async def _io_loop(self):
        last_refresh = 0
        clerk = self.clerk
        perform = self.peripherals.perform
        while True:
            now = self.clock.now()
            for ev in self.peripherals.poll():
                if ev[0] == "console":
                    self._on_console(ev[1])
                elif ev[0] == "scan":
                    perform(clerk.scan(ev[1], now), True)
                elif ev[0] == "bad_scan":
                    perform(clerk.bad_scan(ev[1], now), True)
                else:
                    perform(clerk.key(ev[1], now), True)
            perform(clerk.tick(now))
            if now != last_refresh:
                # Idle facts (online, queue) change under the screen: redraw once a second.
                last_refresh = now
                perform(clerk.refresh(now))
            await asyncio.sleep(IO_POLL_S)

    def _on_console(self, data):
        try:
            self.peripherals.reply("console", self.console.feed(data))
        finally:
            code = self.console.commands.exit_code
            if code is not None:
                # reboot / factory-reset: the reply is out (or the port is gone): restart
                self.restart(code, flush=not self.console.commands.reset_done)

    def restart(self, code, flush=True):
        """Stops the terminal for a restart (device/ports/runtime.restart)."""
        self.log("restarting (exit %d)" % code)
        if flush:
            self.flush()
        self.queue.log.close()
        self.peripherals.close()
        runtime.restart(code)

    def console_for(self, config_path, console_cfg=None):
        """The technician console of this terminal (a serial port's, or stdin's)."""
        return Console(Commands(self.view, config_path, fs=self.fs, clock=self.clock,
                                console_cfg=console_cfg, log_out=self.log_out))

    async def run(self, console_port=None, console=None, io=True):
        """Runs until stopped. console_port/console: the console an unprovisioned start
        handed over (its port, and the session attached to this terminal). io=False: no
        peripherals and no I/O loop (the fleet simulator drives the clerk itself)."""
        self._kick = asyncio.Event()
        self.console = console or self.console_for(self.config_path)
        if io:
            self.peripherals.open(console_port)
            self.peripherals.perform(self.clerk.refresh(self.clock.now()))
        self.log("fw %s on %s, boot %d, queue %d" % (firmware.FW, runtime.NAME,
                                                     self.counters.boot, self.queue.count()))
        self.tasks.start("status", self._status_loop)
        self.tasks.start("forward", self._forward_loop)
        if io:
            self.tasks.start("io", self._io_loop)
        for name, fn in self._service_tasks:
            self.tasks.start(name, fn)
        try:
            await self._start_link()
        finally:
            self.tasks.cancel()
            self.flush()
