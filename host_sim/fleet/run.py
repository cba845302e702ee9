# The fleet simulator's orchestrator: registers N terminals in the host database, issues coupons
# and the trust list, starts host workers (`python -m host_sim serve --worker I`) and one shard
# process per CPU (host_sim/fleet/shard.py, N/shards real device agents each), plays the
# scenario (steady sales with an outage of part of the fleet, then a reconnect storm with a
# backlog, drained by 1, 2, 4... workers in turn) and checks at the end that every sale a
# terminal committed is in the host's charges table once: lost and duplicated must be 0.
#
#   python -m host_sim fleet --terminals 1000 --db URL --broker-port P [options]  (--help)
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from host_sim.fleet import cpu
from host_sim.fleet.storm import HostStorm
from host_sim.issuance import Keystore, write_text
from host_sim.procs import stop_process
from host_sim.registry import Registry
from host_sim.store import open_store

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MERCHANT = "M-FLEET"
CURRENCY = "CNY"
# A fresh (not repeated) charge in a worker's log (host_sim/host.py _on_charge).
APPLIED = re.compile(r" charge (\S+) cid=([0-9a-f]{32}) amt=\d+ \S+ -> (?:approved|declined)"
                     r"(?!.*\(repeat\))")


class FleetError(RuntimeError):
    pass


class Fleet:
    def __init__(self, db, broker_port, terminals, shards=None, work=None, broker_host="127.0.0.1",
                 per_store=10, coupons=200, outage_share=0.1, seed=1, log=None,
                 worker_args=()):
        """worker_args: more `serve` options for every worker (--amqp URL: RabbitMQ)."""
        self.db = db
        self.broker = (broker_host, broker_port)
        self.n = terminals
        self.shards_n = max(1, min(shards or os.cpu_count() or 1, terminals))
        self.own_work = work is None
        self.work = work or tempfile.mkdtemp(prefix="fleet-")
        self.per_store = per_store
        self.n_coupons = coupons
        self.outage_share = outage_share
        self.seed = seed
        self.log = log or (lambda line: None)
        self.worker_args = list(worker_args)
        self.devices = ["F%04d" % i for i in range(terminals)]
        self.workers = {}      # index -> Popen
        self.worker_logs = {}  # index -> [log paths] (a restarted worker gets a new file)
        self.shards = []
        self.extra_pids = {}   # name -> [pid]: more parts whose CPU a storm reports
        self.events = queue.Queue()
        self.trustlist_path = None
        self.coupons = []

    # ------------------------------------------------------------ set-up

    def prepare(self):
        """Keystore, coupons and trust list; every terminal registered and configured."""
        t0 = time.monotonic()
        ks = Keystore(os.path.join(self.work, "keys"), create=True)
        try:
            root = ks.create_root()
            ks.create_issuer(MERCHANT)
            self.coupons = ks.create_campaign("FLEET", "fleet", "pct", 10, cur=CURRENCY,
                                              quantity=self.n_coupons, iss=MERCHANT)
            self.trustlist_path = os.path.join(self.work, "trustlist.txt")
            write_text(self.trustlist_path, "PT1:", ks.trustlist())
        finally:
            ks.close()
        cfg_dir = os.path.join(self.work, "cfg")
        os.makedirs(cfg_dir, exist_ok=True)
        reg = Registry(self.db)
        self.configs = []
        try:
            for i, dev in enumerate(self.devices):
                reg.register(dev, "S%03d" % (i // self.per_store), MERCHANT)
                cfg = reg.device_config(dev, {"host": self.broker[0], "port": self.broker[1]},
                                        os.path.join(self.work, "data", dev), [root],
                                        CURRENCY)
                path = os.path.join(cfg_dir, dev + ".json")
                with open(path, "w") as f:
                    json.dump(cfg, f)
                self.configs.append(path)
        finally:
            reg.close()
        self.log("prepared %d terminals in %.1f s" % (self.n, time.monotonic() - t0))

    def start_workers(self, count, first=1):
        for i in range(first, first + count):
            self.start_worker(i)
        for i in range(first, first + count):
            self._wait_worker(i)

    def start_worker(self, i):
        path = os.path.join(self.work, "worker-%d.%d.log" % (i, len(self.worker_logs.get(i, []))))
        self.worker_logs.setdefault(i, []).append(path)
        args = [sys.executable, "-u", "-m", "host_sim", "serve", "--db", self.db,
                "--broker-host", self.broker[0], "--broker-port", str(self.broker[1]),
                "--worker", str(i)] + self.worker_args
        if i == 1 and self.trustlist_path:
            args += ["--trustlist", self.trustlist_path]
        with open(path, "w") as out:
            self.workers[i] = subprocess.Popen(args, cwd=ROOT, stdout=out,
                                               stderr=subprocess.STDOUT)

    def _wait_worker(self, i, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "host up" in _read(self.worker_logs[i][-1]):
                return
            if self.workers[i].poll() is not None:
                break
            time.sleep(0.05)
        raise FleetError("worker %d did not start: %s"
                         % (i, _read(self.worker_logs[i][-1])[-2000:]))

    def cpu_seconds(self):
        """CPU seconds so far of the terminals' shards, the workers and any `extra_pids` parts
        (the bench adds the broker and the database)."""
        groups = {"terminals": [p.pid for p in self.shards],
                  "workers": [p.pid for p in self.workers.values()]}
        groups.update(self.extra_pids)
        out = cpu.seconds(groups)
        out["machine"] = cpu.machine_seconds()
        return out

    def stop_workers(self):
        for i in list(self.workers):
            stop_process(self.workers.pop(i), timeout=30)

    def kill_worker(self, i):
        """SIGKILL: no goodbye, whatever it was doing."""
        p = self.workers.pop(i)
        p.kill()
        p.wait(10)

    def start_shards(self):
        per = [self.configs[k::self.shards_n] for k in range(self.shards_n)]
        outage = set(self.devices[:int(self.n * self.outage_share)])
        for k, configs in enumerate(per):
            plan = {"configs": configs, "broker": list(self.broker), "coupons": self.coupons,
                    "outage": [os.path.basename(c)[:-5] for c in configs
                               if os.path.basename(c)[:-5] in outage],
                    "seed": self.seed * 1000 + k}
            path = os.path.join(self.work, "shard-%d.json" % k)
            with open(path, "w") as f:
                json.dump(plan, f)
            err = open(os.path.join(self.work, "shard-%d.log" % k), "w")
            p = subprocess.Popen([sys.executable, "-m", "host_sim.fleet.shard", path], cwd=ROOT,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                 text=True, bufsize=1)
            err.close()
            self.shards.append(p)
            threading.Thread(target=self._read_shard, args=(k, p), daemon=True).start()
        self._collect("started", timeout=300)

    def _read_shard(self, k, p):
        for line in p.stdout:
            try:
                self.events.put((k, json.loads(line)))
            except ValueError:
                self.events.put((k, {"ev": "garbage", "line": line}))
        self.events.put((k, {"ev": "exit"}))

    def _collect(self, ev, timeout):
        """One `ev` event from every shard: [event, ...] in shard order."""
        got = {}
        deadline = time.monotonic() + timeout
        while len(got) < len(self.shards):
            left = deadline - time.monotonic()
            if left <= 0:
                raise FleetError("shards %s did not answer %r in %.0f s"
                                 % (sorted(set(range(len(self.shards))) - set(got)), ev, timeout))
            try:
                k, msg = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if msg.get("ev") == "exit":
                raise FleetError("shard %d exited: %s" % (k, _read(os.path.join(
                    self.work, "shard-%d.log" % k))[-3000:]))
            if msg.get("error"):
                raise FleetError("shard %d: %s failed: %s" % (k, msg["ev"], msg["error"]))
            if msg.get("ev") == ev:
                got[k] = msg
        return [got[k] for k in sorted(got)]

    def send(self, cmd, **args):
        """Sends a command to every shard (without waiting)."""
        line = json.dumps(dict(args, cmd=cmd)) + "\n"
        for p in self.shards:
            p.stdin.write(line)
            p.stdin.flush()

    def ask(self, cmd, wait=600, **args):
        """Sends a command to every shard and waits `wait` seconds for all answers."""
        self.send(cmd, **args)
        return self._collect(cmd, wait)

    # ------------------------------------------------------------ the end

    def verify(self, reports):
        """Every committed sale at the host exactly once: lost (committed, not at the host),
        duplicated (applied twice by the workers' own account, a result resolved twice at a
        terminal, or a host charge no terminal committed), unresolved (still pending)."""
        committed = {}
        double, pending, declined, coupons = 0, 0, 0, 0
        for rep in reports:
            for dev, t in rep["terminals"].items():
                for cid in t["committed"]:
                    committed[(dev, cid)] = True
                double += t["double_results"]
                pending += t["pending"]
                declined += t["declined"]
                coupons += t["coupons_used"]
        store = open_store(self.db)
        try:
            with store.read() as tx:
                rows = tx.execute("SELECT device_id, cid FROM charges").fetchall()
                conflicts = tx.execute(
                    "SELECT COUNT(*) FROM redemptions WHERE conflict=1").fetchone()[0]
        finally:
            store.close()
        host = {}
        for dev, cid in rows:
            key = (dev, bytes(cid).hex())
            host[key] = host.get(key, 0) + 1
        applied = {}
        for paths in self.worker_logs.values():
            for path in paths:
                for m in APPLIED.finditer(_read(path)):
                    applied[(m.group(1), m.group(2))] = applied.get((m.group(1), m.group(2)),
                                                                    0) + 1
        lost = sum(1 for k in committed if k not in host)
        extra = sum(1 for k in host if k not in committed)
        twice = sum(n - 1 for n in applied.values() if n > 1) + sum(
            n - 1 for n in host.values() if n > 1)
        return {"committed": len(committed), "host_charges": len(rows), "lost": lost,
                "duplicated": twice + extra + double, "unresolved": pending,
                "declined": declined, "coupons_used": coupons, "conflicts": conflicts,
                "fresh_applies_logged": sum(applied.values())}

    def stop_shards(self):
        """Stops the terminals' processes (their agents' idle loops take CPU too)."""
        for p in self.shards:
            if p.poll() is None:
                try:
                    p.stdin.write('{"cmd": "stop"}\n')
                    p.stdin.flush()
                except OSError:
                    pass
        for p in self.shards:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                stop_process(p)
        self.shards = []

    def close(self):
        self.stop_shards()
        self.stop_workers()
        if self.own_work:
            shutil.rmtree(self.work, ignore_errors=True)


def _read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def percentile(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def scenario(fleet, rate=20.0, duration=30.0, burst=3, scale=(1, 2, 4), workers=2,
             coupon_share=0.2, host_scale=(), storm_size=(200, 15), log=None):
    """The whole run; returns the report dict (the bench prints part of it as one line).
    host_scale: worker counts for host-only storms after the check (host_storms)."""
    log = log or fleet.log
    # the workers first, as a shop runs them: a terminal's first hello then finds a subscriber
    # (a shared subscription with no member drops it)
    fleet.start_workers(workers)
    if not fleet.shards:
        fleet.start_shards()
    shards = len(fleet.shards)
    out = {"terminals": fleet.n, "shards": shards, "rate": rate, "duration_s": duration}
    t = time.monotonic()
    online = sum(e["online"] for e in fleet.ask("wait_online", wait=300, timeout=240))
    out["connect_s"] = round(time.monotonic() - t, 2)
    log("%d/%d terminals online in %.1f s" % (online, fleet.n, out["connect_s"]))
    if online < fleet.n:
        raise FleetError("only %d of %d terminals came online" % (online, fleet.n))

    # steady selling; the outage group loses its network for the middle third
    fleet.ask("phase", name="steady")
    fleet.send("sell", rate=rate / shards, duration=duration, coupon_share=coupon_share)
    time.sleep(duration / 3)
    fleet.ask("cut", group="outage")
    log("outage: %d terminals cut" % int(fleet.n * fleet.outage_share))
    time.sleep(duration / 3)
    fleet.ask("restore", group="outage")
    sold = sum(e["sold"] for e in fleet._collect("sell", duration + 120))
    drained = fleet.ask("wait_drained", wait=300, timeout=240)
    out["steady_sales"] = sold
    log("steady: %d sales, pending after drain %d" % (sold, sum(e["pending"] for e in drained)))

    # reconnect storms with a backlog: every terminal cut, `burst` sales each, back at once
    out["storms"] = {}
    current = workers
    for n_workers in scale:
        if n_workers != current:
            fleet.stop_workers()
            fleet.start_workers(n_workers)
            current = n_workers
        fleet.ask("phase", name="storm%d" % n_workers)
        fleet.ask("cut", group="all")
        total = sum(e["sold"] for e in fleet.ask("burst", per_terminal=burst,
                                                  coupon_share=coupon_share))
        cpu0 = fleet.cpu_seconds()
        back = fleet.ask("restore", group="all")
        t_restore = min(e["at"] for e in back)
        online = fleet.ask("wait_online", wait=300, timeout=240)
        done = fleet.ask("wait_drained", wait=400, timeout=360)
        cpu1 = fleet.cpu_seconds()
        t_online = max(e["at"] for e in online)
        last = max(e["last_result"] or 0 for e in done)
        took = max(last - t_restore, 1e-3)
        storm = {"workers": n_workers, "charges": total, "drain_s": round(took, 2),
                 "charges_per_s": round(total / took, 1),
                 "all_online_s": round(t_online - t_restore, 2),
                 "pending": sum(e["pending"] for e in done)}
        storm.update(cpu_report(cpu0, cpu1, total, took))
        out["storms"][str(n_workers)] = storm
        log("storm with %d worker(s): %s" % (n_workers, json.dumps(storm)))

    reports = fleet.ask("report", wait=120)
    lat = {}
    for rep in reports:
        for key, xs in rep["latency_ms"].items():
            lat.setdefault(key, []).extend(xs)
    out["latency_ms"] = {k: {"n": len(v), "p50": percentile(v, 0.5), "p99": percentile(v, 0.99),
                             "max": max(v)} for k, v in sorted(lat.items())}
    if host_scale:
        # reported: the terminals go (their agents' idle loops take CPU too), before the
        # workers, which handle whatever the goodbyes sent; then only workers and database work
        fleet.stop_shards()
    fleet.stop_workers()
    out["check"] = fleet.verify(reports)
    if host_scale:
        out["host_storms"] = host_storms(fleet, host_scale, storm_size[0], storm_size[1], log)
    return out


def host_storms(fleet, scale, devices, per_device, log):
    """A round of pre-sealed charges (host_sim/fleet/storm.py) from `devices` more registered
    terminals per worker count in `scale`: the workers' own scaling, with the terminals' shards
    idle. Run after verify(): these charges are no fleet terminal's."""
    storm = HostStorm(fleet.db, fleet.broker, devices, per_device, currency=CURRENCY,
                      merchant=MERCHANT)
    storm.prepare()
    out = {}
    for n in scale:
        fleet.start_workers(n)
        try:
            messages = storm.seal_round()
            cpu0 = fleet.cpu_seconds()
            cpu0["publisher"] = time.process_time()  # this process only, not its children
            r = storm.run(messages)
            cpu1 = fleet.cpu_seconds()
            cpu1["publisher"] = time.process_time()
        finally:
            fleet.stop_workers()
        del cpu0["terminals"], cpu1["terminals"]  # stopped
        r["workers"] = n
        r.update(cpu_report(cpu0, cpu1, r["charges"], r["drain_s"]))
        out[str(n)] = r
        log("host-only storm with %d worker(s): %s" % (n, json.dumps(r)))
    return out


def cpu_report(cpu0, cpu1, charges, took):
    """CPU per charge of each part between two fleet.cpu_seconds(), and the cores they kept busy
    on average beside the whole machine's: both near the core count, the storm was bound by the
    CPU of whatever part took most, not by the workers; the machine's far above the parts', by
    other work."""
    used = {k: cpu1[k] - cpu0[k] for k in cpu1}
    machine = used.pop("machine")
    return {"cpu_ms_per_charge": {k: round(v * 1000 / charges, 3) for k, v in used.items()},
            "cores_busy": round(sum(used.values()) / took, 2),
            "machine_cores_busy": round(machine / took, 2)}


def clean(report):
    """Nothing lost, nothing twice: the fleet's check and every host-only storm's."""
    parts = [report["check"]] + list(report.get("host_storms", {}).values())
    return all(p["lost"] == 0 and p["duplicated"] == 0 for p in parts)


def bench_line(report):
    """The one JSON line of `make bench-fleet`."""
    steady = report["latency_ms"].get("steady/online", {})
    storms = report["storms"]
    best = max(storms.values(), key=lambda s: s["charges_per_s"]) if storms else {}
    return {"terminals": report["terminals"], "charges_per_s": best.get("charges_per_s"),
            "p99_ms": steady.get("p99"), "p50_ms": steady.get("p50"),
            "lost": report["check"]["lost"], "duplicated": report["check"]["duplicated"],
            "workers": {k: v["charges_per_s"] for k, v in storms.items()},
            "host_workers": {k: v["charges_per_s"]
                             for k, v in report.get("host_storms", {}).items()},
            "host_lost": sum(v["lost"] for v in report.get("host_storms", {}).values()),
            "host_duplicated": sum(v["duplicated"]
                                   for v in report.get("host_storms", {}).values())}


def parse_scale(text):
    return tuple(int(x) for x in text.split(",") if x)


def parse_storm(text):
    devices, _, per = text.partition("x")
    return int(devices), int(per)


def add_arguments(p):
    p.add_argument("--terminals", type=int, default=100)
    p.add_argument("--db", required=True, help="postgresql:// URL (or a SQLite path)")
    p.add_argument("--broker-host", default="127.0.0.1")
    p.add_argument("--broker-port", type=int, required=True)
    p.add_argument("--shards", type=int, help="terminal processes (default: one per CPU)")
    p.add_argument("--workers", type=int, default=2, help="host workers while selling")
    p.add_argument("--scale", default="1,2,4",
                   help="host workers for each reconnect storm, in turn")
    p.add_argument("--rate", type=float, default=20.0, help="sales per second, fleet-wide")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of steady selling")
    p.add_argument("--burst", type=int, default=3, help="sales per terminal while cut")
    p.add_argument("--host-scale", default="1,2,4",
                   help="host workers for each host-only storm (pre-sealed charges), in turn")
    p.add_argument("--storm", default="200x15", metavar="DEVICESxCHARGES",
                   help="host-only storm size: terminals x charges each")
    p.add_argument("--outage", type=float, default=0.1, help="share of the fleet cut")
    p.add_argument("--coupons", type=int, default=200)
    p.add_argument("--dir", help="work directory (kept); default a temp dir, removed")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--amqp", metavar="URL",
                   help="workers consume up messages from this RabbitMQ (serve --amqp)")


def main(args):
    def log(line):
        sys.stderr.write("fleet: %s\n" % line)
        sys.stderr.flush()

    scale = parse_scale(args.scale)
    fleet = Fleet(args.db, args.broker_port, args.terminals, shards=args.shards, work=args.dir,
                  broker_host=args.broker_host, coupons=args.coupons,
                  outage_share=args.outage, seed=args.seed, log=log,
                  worker_args=["--amqp", args.amqp] if args.amqp else ())
    try:
        fleet.prepare()
        report = scenario(fleet, rate=args.rate, duration=args.duration, burst=args.burst,
                          scale=scale, workers=args.workers, log=log,
                          host_scale=parse_scale(args.host_scale),
                          storm_size=parse_storm(args.storm))
    finally:
        fleet.close()
    print(json.dumps(report, sort_keys=True))
    return 0 if clean(report) else 1
