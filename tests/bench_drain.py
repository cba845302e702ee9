"""Drain benchmark (issue 4 item 8, issue 14): a terminal comes back with N queued charges.

    PYTHONPATH=. .venv/bin/python -m tests.bench_drain [--n 5000]
        [--runtime cpython|micropython|both] [--limit-s S] [--raw-reps 3] [--observe] [--keep]

Everything real, on one machine: mosquitto (tests/support/broker.py) on a loopback port of its
own, `python -m host_sim serve` on a fresh database, and one registered terminal
(`python -m device run`, or micropython) whose journal was filled beforehand with N pending
one-coupon sales by device.sales.queue and device.sales.sale. The figure is the time from starting
the terminal process to the host database holding all N charges, and the rate from 10 % of them
on. With --observe an observer client on the broker times each charge's round trip: host
(charge seen -> its charge_result seen) and terminal (charge_result seen -> the charge
`window` places later seen); it costs the machine what the baseline does not pay, so the
headline figure runs without it.

Baseline, same broker, same run, after the drain: a `paho` publisher process (`python -m
tests.bench_drain publish ...`) sends N QoS 1 messages of the size of one sealed `charge`
envelope; the time from starting it to a paho subscriber here having all N, and the rate from
its first message to its last. Medians of --raw-reps. Then the same at the size of a full
`charges` batch (protocol/batch_messages.py; the drain sends its charges up to that many to a
message once the host granted it): `raw_batch_size_per_s`, for the reader; the ratio keeps the
stricter one-charge size.

CPU: each process's CPU time (Linux /proc: the host, the terminal and mosquitto during the drain,
sampled with every poll, from the sample holding 10 % of the charges to the last; the raw
publisher, subscriber and mosquitto over each baseline run), per charge and per message. Both
runs keep the 2 cores busy, so `cpu_ratio` (raw CPU per message / drain CPU per charge) predicts
`ratio`: docs/bench.md reads it.

--limit-s stops waiting for the drain after S seconds: the figure is then the projected time
(start-up plus N at the rate measured so far) and "complete" is false. When no charge arrives
for STALL_S the drain has stopped: "stalled" is true, no projection, and the terminal's log tail
is included. Prints one JSON line per runtime, then {"drain_per_s", "raw_per_s", "ratio"} of
the first (`make bench-drain`: CPython, then MicroPython).
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt

from device.agent import FORWARD_POLL_S, WINDOW
from device.sales.queue import RETRY_BASE_MS
from device.sales.sale import charge_body
from host_sim.fleet import cpu
from host_sim.procs import stop_process
from host_sim.registry import Registry
from host_sim.store import open_store
from protocol import batch_messages, envelope, topics
from tests.bench_queue import BuildFS, fill
from tests.support.broker import Broker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICE_ID = "BENCH-T1"
STORE = "S-BENCH"
MERCHANT = "M-BENCH"
CUR = "CNY"
RAW_ROOT = "bench/v1"  # the baseline's topics: outside the host's subscriptions
POLL_S = 0.1
MP_WINDOW = 16  # device/agent.py WINDOW on MicroPython
STALL_S = 30.0  # no new charge at the host for this long: the drain has stopped (the terminal
                # retries a charge after RETRY_BASE_MS at the latest, so this is not a pause)
MP_HEAP = "4M"  # the tests' terminals' heap (the pending records stay on flash: docs/bench.md)


def root_key():
    with open(os.path.join(ROOT, "..", "shared", "vectors", "coupons.json")) as f:
        return json.load(f)["root_pub_hex"]


def _wait_file(path, text, timeout, proc=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with open(path, errors="replace") as f:
                if text in f.read():
                    return
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError("%r not in %s within %.0f s" % (text, path, timeout))


def device_cmd(runtime):
    if runtime == "micropython":
        mp = os.path.join(os.path.dirname(sys.executable), "micropython")
        return [mp, "-X", "heapsize=" + MP_HEAP], dict(os.environ, MICROPYPATH=ROOT + ":.frozen")
    return [sys.executable, "-u"], dict(os.environ, PYTHONPATH=ROOT)


class Rig:
    """Broker, host database with one registered terminal, its config and pre-filled journal."""

    def __init__(self, work, n):
        self.work = work
        self.n = n
        self.db = os.path.join(work, "host.db")
        self.data_dir = os.path.join(work, DEVICE_ID)
        self.cfg_path = os.path.join(work, "device.json")
        self.broker = Broker(log_types=("information",))  # no per-packet lines: they cost time
        self.host = None
        self.device = None

    def prepare(self):
        self.broker.start()
        found = re.search(r"mosquitto version (\S+)", self.broker.log())
        self.broker_version = found.group(1) if found else "unknown"
        reg = Registry(self.db)
        try:
            reg.register(DEVICE_ID, STORE, MERCHANT)
            cfg = reg.device_config(DEVICE_ID, {"host": "127.0.0.1", "port": self.broker.port},
                                    self.data_dir, [root_key()], CUR)
        finally:
            reg.close()
        self.secret = bytes.fromhex(cfg["secret_hex"])
        with open(self.cfg_path, "w") as f:
            json.dump(cfg, f)
        os.makedirs(self.data_dir, exist_ok=True)
        # The pending sales, committed by the queue itself (without the per-record fsync).
        q = fill(BuildFS(), self.data_dir + "/queue.log", self.n, at=int(time.time()) - 7200)
        self.sample = q.pending[0]
        self.journal_bytes = q.log.size

    def start_host(self):
        log = os.path.join(self.work, "host.log")
        self.host = subprocess.Popen(
            [sys.executable, "-u", "-m", "host_sim", "serve", "--db", self.db,
             "--broker-host", "127.0.0.1", "--broker-port", str(self.broker.port),
             "--client-id", "bench-host-%d" % os.getpid()],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), stdin=subprocess.DEVNULL,
            stdout=open(log, "w"), stderr=subprocess.STDOUT)
        _wait_file(log, "host up", 20, self.host)

    def start_device(self, runtime):
        cmd, env = device_cmd(runtime)
        self.device_log = os.path.join(self.work, "device.log")
        self.device = subprocess.Popen(cmd + ["-m", "device", "run", "--config", self.cfg_path],
                                       cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                       stdout=open(self.device_log, "w"),
                                       stderr=subprocess.STDOUT)

    def envelope_size(self, items=1):
        """Bytes of one sealed `charge` (items=1), or of a `charges` of that many."""
        body = charge_body(self.sample)
        mtype, body = ("charge", body) if items == 1 else ("charges", {"items": [body] * items})
        return len(envelope.seal(self.secret, DEVICE_ID, mtype, 1, int(time.time()), body,
                                 os.urandom(16)))

    def close(self):
        stop_process(self.device)
        stop_process(self.host)
        self.broker.close()


def _count(store):
    with store.read() as tx:
        return tx.execute("SELECT COUNT(*) FROM charges WHERE device_id=?",
                          (DEVICE_ID,)).fetchone()[0]


def _cpu(rig):
    """CPU seconds so far of the host, the terminal and the broker (Linux /proc: three files,
    not the whole table, which would cost the drain's cores a few ms at every poll)."""
    return {"host": cpu.process_seconds(rig.host.pid),
            "terminal": cpu.process_seconds(rig.device.pid),
            "broker": cpu.process_seconds(rig.broker.proc.pid)}


def drain(rig, runtime, limit_s):
    conn = open_store(rig.db)
    samples = []
    try:
        t0 = time.monotonic()
        rig.start_device(runtime)
        deadline = t0 + limit_s if limit_s else None
        count = 0
        progress = t0
        stalled = False
        while count < rig.n:
            time.sleep(POLL_S)
            got = _count(conn)
            now = time.monotonic()
            if got > count:
                progress = now
            count = got
            samples.append((now - t0, count, _cpu(rig)))
            if rig.device.poll() is not None:
                raise RuntimeError("device exited (%s): %s" % (rig.device.returncode,
                                                               _tail(rig.device_log)))
            if now - progress >= STALL_S:
                stalled = True
                break
            if deadline is not None and now >= deadline:
                break
    finally:
        conn.close()
    return samples, stalled


def _tail(path, n=1500):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


class Observer:
    """Watches the terminal's charges and the host's results on the broker (QoS 0, its own
    client) and times each charge's round trip: host (charge seen -> charge_result seen) and
    terminal (charge_result seen -> the charge `window` places later seen). A `charges` or
    `charge_results` batch counts for each of its items, at the batch's time."""

    def __init__(self, port, secret, root=topics.DEFAULT_ROOT):
        self.secret = secret
        self.seen = []  # (monotonic, mtype, payload); decoded after the run
        self._subscribed = threading.Event()
        subs = [(topics.up(root, DEVICE_ID, t), 0) for t in ("charge", "charges")] + \
               [(topics.down(root, DEVICE_ID, t), 0) for t in ("charge_result", "charge_results")]
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id="bench-obs-%d" % os.getpid(), protocol=mqtt.MQTTv311)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(subs)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_message = lambda c, u, msg: self.seen.append(
            (time.monotonic(), msg.topic.rsplit("/", 1)[1], msg.payload))
        self.client.connect("127.0.0.1", port, 30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("observer: no SUBACK")

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()

    def round_trips(self, window):
        sent = {}
        order = []
        result = {}
        for t, mtype, payload in self.seen:
            body = envelope.open_envelope(self.secret, payload, DEVICE_ID, mtype)["body"]
            items = body["items"] if mtype.endswith("s") else (body,)
            for item in items:
                cid = item["cid"]
                if mtype.startswith("charge_result"):
                    result.setdefault(cid, t)
                elif cid not in sent:
                    sent[cid] = t
                    order.append(cid)
        host = sorted(result[c] - sent[c] for c in order if c in result)
        term = sorted(sent[order[i + window]] - result[order[i]]
                      for i in range(len(order) - window) if order[i] in result)
        out = {"observed_charges": len(order)}
        for name, xs in (("host", host), ("terminal", term)):
            if xs:
                out[name + "_ms"] = {"p50": _ms(xs, 0.5), "p95": _ms(xs, 0.95),
                                     "max": round(xs[-1] * 1000, 1)}
        return out


def _ms(xs, q):
    return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1000, 1)


def _at(samples, count):
    """Seconds since start at which the host first held `count` charges."""
    for t, c, _ in samples:
        if c >= count:
            return t
    return None


def _cpu_per_charge(samples, lo):
    """CPU µs per charge of each process from the sample holding `lo` charges to the last (the
    steady drain: the terminal's boot and the first round trips left out)."""
    first = next((s for s in samples if s[1] >= lo), None)
    _, got, cpu1 = samples[-1]
    if first is None or got <= first[1]:
        return None
    out = {k: round((cpu1[k] - first[2][k]) * 1e6 / (got - first[1])) for k in cpu1}
    out["all"] = sum(out.values())
    return out


def summarize(samples, stalled, n):
    elapsed, got, _ = samples[-1]
    first = _at(samples, 1)
    out = {"complete": got >= n, "stalled": stalled, "received": got,
           "elapsed_s": round(elapsed, 3),
           "first_charge_s": round(first, 3) if first is not None else None}
    if stalled:
        # the rate up to the last charge that arrived; no projection: the drain had stopped
        last = _at(samples, got)
        lo = max(1, got // 10)
        t_lo = _at(samples, lo)
        if t_lo is not None and last > t_lo:
            out["rate_per_s"] = round((got - lo) / (last - t_lo), 2)
        out["drain_s"] = None
        return out
    # steady rate: from 10 % of the charges to the last sample
    lo = max(1, got // 10)
    t_lo = _at(samples, lo)
    if t_lo is not None and elapsed > t_lo and got > lo:
        out["rate_per_s"] = round((got - lo) / (elapsed - t_lo), 2)
    out["cpu_us_per_charge"] = _cpu_per_charge(samples, lo)
    if got >= n:
        out["drain_s"] = round(elapsed, 3)
    elif "rate_per_s" in out:
        out["drain_s"] = round(t_lo + (n - lo) / out["rate_per_s"], 3)  # projected
    else:
        out["drain_s"] = None
    return out


def host_repeats(rig):
    """Charges the host saw again (terminal retransmissions after the retry timer)."""
    with open(os.path.join(rig.work, "host.log"), errors="replace") as f:
        return sum(1 for line in f if line.rstrip().endswith("(repeat)"))


# -- the baseline: raw paho QoS 1 through the same broker --------------------------------------
class Counter:
    def __init__(self, port, topic_filter, n):
        self.n = n
        self.count = 0
        self.first_at = None
        self.done_at = None
        self.done = threading.Event()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id="bench-sub-%d" % os.getpid(), protocol=mqtt.MQTTv311)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic_filter, 1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, 30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("baseline subscriber: no SUBACK")

    def _on_message(self, client, userdata, msg):
        self.count += 1
        if self.count == 1:
            self.first_at = time.monotonic()
        if self.count == self.n:
            self.done_at = time.monotonic()
            self.done.set()

    def reset(self):
        self.count = 0
        self.first_at = None
        self.done_at = None
        self.done.clear()

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def raw_publish(port, n, size, reps, broker_pid):
    """The baseline's runs: (times, streams, CPU µs per message of each part, summed over the
    runs): the publisher process (it reports its own CPU time), the subscriber (this process:
    its paho thread, the main thread only waits) and the broker."""
    topic = topics.up(RAW_ROOT, DEVICE_ID, "charge")
    sub = Counter(port, RAW_ROOT + "/#", n)
    times = []
    streams = []
    spent = {"publisher": 0.0, "subscriber": 0.0, "broker": 0.0}
    try:
        for _ in range(reps):
            sub.reset()
            broker0 = cpu.process_seconds(broker_pid)
            mine0 = time.process_time()
            t0 = time.monotonic()
            pub = subprocess.run(
                [sys.executable, "-m", "tests.bench_drain", "publish", "--port", str(port),
                 "--n", str(n), "--size", str(size), "--topic", topic],
                cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True,
                timeout=120)
            if pub.returncode != 0:
                raise RuntimeError("baseline publisher failed: %s" % pub.stderr.decode()[-800:])
            if not sub.done.wait(60):
                raise RuntimeError("baseline: %d of %d messages arrived" % (sub.count, n))
            times.append(sub.done_at - t0)
            streams.append(sub.done_at - sub.first_at)
            spent["publisher"] += json.loads(pub.stdout.decode().strip().splitlines()[-1])["cpu_s"]
            spent["subscriber"] += time.process_time() - mine0
            spent["broker"] += cpu.process_seconds(broker_pid) - broker0
    finally:
        sub.close()
    per_msg = {k: round(v * 1e6 / (n * reps)) for k, v in spent.items()}
    per_msg["all"] = sum(per_msg.values())
    return times, streams, per_msg


def publisher(argv):
    """The baseline's publisher process: N QoS 1 publishes, then waits for every PUBACK."""
    p = argparse.ArgumentParser(prog="python -m tests.bench_drain publish")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--topic", required=True)
    args = p.parse_args(argv)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                         client_id="bench-pub-%d" % os.getpid(), protocol=mqtt.MQTTv311)
    client.connect("127.0.0.1", args.port, 30)
    client.loop_start()
    last = None
    cpu0 = time.process_time()  # the publishing, not the interpreter's start-up
    for _ in range(args.n):
        last = client.publish(args.topic, os.urandom(args.size), qos=1)
    last.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()
    print(json.dumps({"cpu_s": time.process_time() - cpu0}))  # all its threads
    return 0 if last.is_published() else 1


def median(xs):
    xs = sorted(xs)
    k = len(xs)
    return xs[k // 2] if k % 2 else (xs[k // 2 - 1] + xs[k // 2]) / 2


def run(n, runtime, limit_s, raw_reps, keep=False, observe=False):
    work = os.path.join(ROOT, "var", "bench", "drain-%d" % os.getpid())
    os.makedirs(work, exist_ok=True)
    rig = Rig(work, n)
    window = WINDOW if runtime == "cpython" else MP_WINDOW
    out = {"n": n, "runtime": runtime, "window": window,
           "forward_poll_s": FORWARD_POLL_S, "retry_base_s": RETRY_BASE_MS / 1000,
           "observed": observe}
    try:
        rig.prepare()
        out["broker"] = rig.broker_version
        out["journal_bytes"] = rig.journal_bytes
        out["envelope_bytes"] = rig.envelope_size()
        out["batch_items"] = min(window, batch_messages.MAX_ITEMS)
        out["batch_envelope_bytes"] = rig.envelope_size(out["batch_items"])
        rig.start_host()
        # The observer (a paho client decoding every charge and result) costs the machine
        # what the raw baseline does not pay: the headline figure runs without it.
        obs = Observer(rig.broker.port, rig.secret) if observe else None
        try:
            samples, stalled = drain(rig, runtime, limit_s)
        finally:
            if obs is not None:
                obs.close()
        out.update(summarize(samples, stalled, n))
        if obs is not None:
            out.update(obs.round_trips(window))
        out["host_repeats"] = host_repeats(rig)
        if stalled:
            out["device_log_tail"] = _tail(rig.device_log, 800)
        stop_process(rig.device)
        stop_process(rig.host)
        raw, streams, out["raw_cpu_us_per_msg"] = raw_publish(
            rig.broker.port, n, out["envelope_bytes"], raw_reps, rig.broker.proc.pid)
        out["raw_s"] = round(median(raw), 3)
        out["raw_runs_s"] = [round(t, 3) for t in raw]
        # first to last message at the subscriber: the rate without the publisher's start-up
        out["raw_per_s"] = round((n - 1) / median(streams), 1)
        # The same baseline at the size of the drain's full `charges` messages: what paho moves
        # in messages of that size (fewer per second than of one charge's size)
        _, streams, _ = raw_publish(rig.broker.port, n // out["batch_items"] * 4,
                                    out["batch_envelope_bytes"], raw_reps, rig.broker.proc.pid)
        out["raw_batch_size_per_s"] = round((n // out["batch_items"] * 4 - 1) / median(streams),
                                            1)
        if out["drain_s"]:
            out["drain_vs_raw"] = round(out["drain_s"] / median(raw), 2)
        if out.get("rate_per_s"):
            out["ratio"] = round(out["rate_per_s"] / out["raw_per_s"], 3)
        if out.get("cpu_us_per_charge"):
            # both runs keep the 2 cores busy: the ratio their CPU costs predict
            out["cpu_ratio"] = round(out["raw_cpu_us_per_msg"]["all"]
                                     / out["cpu_us_per_charge"]["all"], 3)
    finally:
        rig.close()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "publish":
        return publisher(argv[1:])
    p = argparse.ArgumentParser(prog="python -m tests.bench_drain")
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--runtime", choices=("cpython", "micropython", "both"), default="cpython")
    p.add_argument("--limit-s", type=float, default=0.0, help="0: wait for all N")
    p.add_argument("--raw-reps", type=int, default=3)
    p.add_argument("--observe", action="store_true",
                   help="time each round trip with an observer client (it slows the drain)")
    p.add_argument("--keep", action="store_true", help="keep var/bench/drain-PID")
    args = p.parse_args(argv)
    runtimes = ("cpython", "micropython") if args.runtime == "both" else (args.runtime,)
    results = []
    for rt in runtimes:
        out = run(args.n, rt, args.limit_s, args.raw_reps, args.keep, args.observe)
        print(json.dumps(out))
        sys.stdout.flush()
        results.append(out)
    # the last line: the first runtime's drain against its raw baseline (make bench-drain)
    head = results[0]
    print(json.dumps({"drain_per_s": head.get("rate_per_s"), "raw_per_s": head["raw_per_s"],
                      "ratio": head.get("ratio")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
