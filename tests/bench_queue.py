# Charge-queue benchmark (issue 4 item 8), same script on both runtimes; prints one JSON line.
#   PYTHONPATH=. .venv/bin/python tests/bench_queue.py
#   MICROPYPATH=.:.frozen .venv/bin/micropython -X heapsize=32M tests/bench_queue.py
# Files go to var/bench/queue-<random> (removed at the end). Keys:
#   commit_per_s, raw_per_s, commit_vs_raw: ChargeQueue.commit of a one-coupon sale on a real
#       file (PosixFS, one fsync each) against a raw append + fsync (MicroPython: flush) of the
#       same framed bytes to another file of the same directory, one of each in turn, with the
#       agent's maintenance between two sales untimed (queue.tidy(): the clerk does not wait
#       for it); rates are
#       medians over COMMIT_REPS batches of COMMIT_BATCH, the ratio the median of the batches'
#       ratios
#   bytes: journal bytes per sale commit and per result record, the CBOR payloads alone, and
#       bytes written per charge amortised with compaction at the default retention (online:
#       each sale resolved before the next; over STEADY charges from an empty journal, sales
#       without a coupon and with one fresh coupon each) and while draining a backlog of
#       BACKLOG pending sales (compaction rewrites every pending sale each time)
#   boot: ChargeQueue.open() in ms for journals of 10/100/1000/2000/5000 pending sales and of
#       5000 resolved and compacted sales with 10 pending (their coupons expired, or still live),
#       the raw read of the same file, the file size; on MicroPython the heap the open queue holds
#       (5000 pending need a heap of about 32 MB to build and open: -X heapsize=32M).
#       Medians of BOOT_REPS; the file is in the page cache (warm boot). With --journals DIR the
#       journals are made there once and kept (bench.py boots the same files on both runtimes)
import gc
import os
import sys

from device.ports.storage import PosixFS, RecordLog, frame
from device.sales.queue import ChargeQueue
from device.sales.sale import make_sale
from protocol import cbor

MICRO = sys.implementation.name == "micropython"
COMMIT_BATCH = 60
COMMIT_REPS = 9
STEADY = 1020           # 20 compactions at the default retention (50)
BACKLOG = 1000
BOOT_REPS = 3
NOW = 1800000000        # sale time; coupons live 30 days unless said otherwise
DAY = 86400
# name, pending, resolved history, coupon expiry (None: live 30 days). 2000 pending is the default
# offline_max_count; the history cases are compacted as the agent does, their coupons expired
# before the last compaction (the ledger is pruned) or still live (one ledger entry each).
BOOT_CASES = (("pending_10", 10, 0, None), ("pending_100", 100, 0, None),
              ("pending_1000", 1000, 0, None), ("pending_2000", 2000, 0, None),
              ("pending_5000", 5000, 0, None), ("history_5000_expired", 10, 5000, NOW + 1),
              ("history_5000_live", 10, 5000, None))

if MICRO:
    import time

    def _us():
        return time.ticks_us()

    def _since(t0):
        return time.ticks_diff(time.ticks_us(), t0)
else:
    from time import perf_counter

    def _us():
        return perf_counter()

    def _since(t0):
        return (perf_counter() - t0) * 1e6

try:
    _fsync = os.fsync
except AttributeError:  # MicroPython: flush() fsyncs on the unix port
    _fsync = None


# -- file systems for building journals and counting bytes ---------------------------------------
class _UnsyncedAppender:
    def __init__(self, path):
        self._f = open(path, "ab")

    def write(self, data):
        self._f.write(data)

    def sync(self):
        self._f.flush()  # building only: no fsync (the queue reads records back from the file)

    def close(self):
        self._f.close()


class BuildFS(PosixFS):
    """PosixFS without the per-append sync: fills journals fast; the bytes are the same."""

    def open_append(self, path):
        return _UnsyncedAppender(path)


class _CountingAppender:
    def __init__(self, inner, fs):
        self._inner = inner
        self._fs = fs

    def write(self, data):
        self._fs.written += len(data)
        self._inner.write(data)

    def sync(self):
        self._inner.sync()

    def close(self):
        self._inner.close()


class CountingFS:
    """Counts the bytes written through an FS: appends and whole-file replacements."""

    def __init__(self, inner):
        self.inner = inner
        self.written = 0

    def write_atomic(self, path, data):
        if isinstance(data, (bytes, bytearray)):
            data = [data]
        fs = self

        def counted():
            for c in data:
                fs.written += len(c)
                yield c
        self.inner.write_atomic(path, counted())

    def open_append(self, path):
        return _CountingAppender(self.inner.open_append(path), self)

    def read(self, path):
        return self.inner.read(path)

    def open_read(self, path):
        return self.inner.open_read(path)

    def exists(self, path):
        return self.inner.exists(path)

    def size(self, path):
        return self.inner.size(path)

    def remove(self, path):
        self.inner.remove(path)

    def makedirs(self, path):
        self.inner.makedirs(path)


# -- records -------------------------------------------------------------------------------------
def cti_of(n):
    return n.to_bytes(8, "big")  # 8-byte serials like the shared vectors'


def sale(n, coupon=True, exp=None, at=NOW):
    """Sale n: 100.00 CNY sold offline at at+n, with one 10.00 coupon of its own (cti n)."""
    cpn = []
    if coupon:
        cpn.append({"cti": cti_of(n), "cmp": "WINTER", "disc": 1000,
                    "exp": at + 30 * DAY if exp is None else exp})
    return make_sale(os.urandom(16), n, 10000, cpn, "CNY", at + n, True, "clerk")


def result_body(rec):
    """A charge_result as host_sim answers an approved charge."""
    return {"cid": rec["cid"], "st": "approved", "auth": "A1B2C3",
            "cpn": [{"cti": c["cti"], "st": "ok"} for c in rec["cpn"]]}


def maintain(q, now):
    """What the agent's forward loop does between records: compact, then checkpoint, when
    due (the clock: one record a second, a clerk's pace)."""
    q.tidy()
    if q.needs_compaction():
        q.compact(now)
    if q.needs_checkpoint(now * 1000):
        q.checkpoint(now * 1000)


def resolve(q, rec, now):
    """What the agent does with a result: record it, then its maintenance."""
    q.on_result(result_body(rec), now)
    maintain(q, now)


def fill(fs, path, pending, history=0, exp=None, at=NOW):
    """A journal of `history` resolved sales (compacted as the agent does) then `pending`,
    with the checkpoints the agent writes on the way."""
    fs.remove(path)
    q = ChargeQueue(RecordLog(fs, path)).open()
    for _ in range(history):
        rec = sale(q.take_receipt_no(), exp=exp, at=at)
        q.commit(rec)
        resolve(q, rec, at + q.next_n)
    for _ in range(pending):
        q.commit(sale(q.take_receipt_no(), exp=exp, at=at))
        maintain(q, at + q.next_n)
    q.log.close()
    return q


# -- measurements --------------------------------------------------------------------------------
def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def _raw_append(f, blob):
    t0 = _us()
    f.write(blob)
    f.flush()
    if _fsync is not None:
        _fsync(f.fileno())
    return _since(t0)


def _queue_commit(q, rec):
    t0 = _us()
    q.commit(rec)
    us = _since(t0)
    q.tidy()  # the agent's maintenance between two sales (not the clerk's wait): untimed
    return us


def bench_commit(d):
    fs = PosixFS()
    q = ChargeQueue(RecordLog(fs, d + "/commit.log")).open()
    f = open(d + "/raw.log", "ab")
    raw = []
    ours = []
    try:
        for _ in range(COMMIT_REPS):
            recs = [sale(q.take_receipt_no()) for _ in range(COMMIT_BATCH)]
            blobs = [frame(cbor.dumps(r)) for r in recs]
            gc.collect()
            t_raw = t_ours = 0
            # one of each in turn, the order swapped every time: load elsewhere hits both alike
            for i in range(COMMIT_BATCH):
                if i % 2:
                    t_ours += _queue_commit(q, recs[i])
                    t_raw += _raw_append(f, blobs[i])
                else:
                    t_raw += _raw_append(f, blobs[i])
                    t_ours += _queue_commit(q, recs[i])
            raw.append(t_raw)
            ours.append(t_ours)
    finally:
        f.close()
        q.log.close()
    commit = COMMIT_BATCH * 1e6 / median(ours)
    base = COMMIT_BATCH * 1e6 / median(raw)
    # the ratio of each batch (both sides under the same load), then their median
    ratio = median([raw[i] / ours[i] for i in range(COMMIT_REPS)])
    return {"commit_per_s": _r(commit), "raw_per_s": _r(base), "commit_vs_raw": _r(ratio),
            "commit_ms": _r(median(ours) / COMMIT_BATCH / 1000),
            "raw_ms": _r(median(raw) / COMMIT_BATCH / 1000), "batch": COMMIT_BATCH,
            "reps": COMMIT_REPS}


def _steady(d, coupon):
    fs = CountingFS(BuildFS())
    q = ChargeQueue(RecordLog(fs, d + "/steady.log")).open()
    fs.written = 0
    compactions = 0
    for _ in range(STEADY):
        rec = sale(q.take_receipt_no(), coupon)
        q.commit(rec)
        q.on_result(result_body(rec), rec["at"])
        if q.needs_compaction():
            q.compact(rec["at"])
            compactions += 1
    q.log.close()
    return fs.written / STEADY, compactions, len(q.ledger)


def bench_bytes(d):
    fs = CountingFS(BuildFS())
    q = ChargeQueue(RecordLog(fs, d + "/bytes.log")).open()
    rec = sale(q.take_receipt_no())
    size0 = q.log.size
    q.commit(rec)
    sale_b = q.log.size - size0
    body = result_body(rec)
    q.on_result(body, NOW)
    result_b = q.log.size - size0 - sale_b
    payload = len(cbor.dumps(rec)) + len(cbor.dumps(q.resolved[-1][1]))
    q.log.close()
    out = {"sale": sale_b, "result": result_b, "per_charge": sale_b + result_b,
           "payload_per_charge": payload, "retention": q.retention}
    per, comps, ledger = _steady(d, False)
    out["steady_no_coupon"] = _r(per)
    per, comps, ledger = _steady(d, True)
    out["steady_coupon"] = _r(per)
    out["steady_charges"] = STEADY
    out["steady_compactions"] = comps
    out["steady_ledger_entries"] = ledger
    out["steady_vs_append"] = _r(per / (sale_b + result_b))
    # A backlog drained: every compaction rewrites all the sales still pending.
    bfs = CountingFS(BuildFS())
    path = d + "/backlog.log"
    fill(bfs, path, BACKLOG)
    q = ChargeQueue(RecordLog(bfs, path)).open()
    bfs.written = 0
    for rec in list(q.pending):
        resolve(q, rec, NOW + BACKLOG)
    q.log.close()
    out["backlog"] = BACKLOG
    out["backlog_per_charge"] = _r(sale_b + bfs.written / BACKLOG)
    out["backlog_vs_append"] = _r((sale_b + bfs.written / BACKLOG) / (sale_b + result_b))
    return out


def _boot_once(path):
    gc.collect()
    if MICRO:
        before = gc.mem_alloc()
    t0 = _us()
    q = ChargeQueue(RecordLog(PosixFS(), path)).open()
    us = _since(t0)
    heap = None
    if MICRO:
        gc.collect()
        heap = gc.mem_alloc() - before
    facts = (len(q.pending), len(q.resolved), len(q.ledger), q.log.skipped_bytes,
             q.log.torn_bytes, q.bad_records)
    del q
    return us, heap, facts


def _read_once(path):
    t0 = _us()
    data = PosixFS().read(path)
    us = _since(t0)
    return us, len(data)


def _boot_case(path):
    opens = []
    reads = []
    heap = None
    size = 0
    for _ in range(BOOT_REPS):
        us, heap, facts = _boot_once(path)
        opens.append(us)
        us, size = _read_once(path)
        reads.append(us)
    # skipped/torn bytes and bad records: what replay could not read (0 in a sound journal)
    out = {"pending": facts[0], "retained": facts[1], "ledger": facts[2], "skipped": facts[3],
           "torn": facts[4], "bad_records": facts[5], "open_ms": _r(median(opens) / 1000),
           "read_ms": _r(median(reads) / 1000), "bytes": size,
           "open_vs_read": _r(median(opens) / median(reads))}
    if MICRO:
        out["heap_bytes"] = heap
    return out


def build_journals(d):
    """One journal per BOOT_CASES entry, made by the queue itself; `ready` marks them done."""
    fs = BuildFS()
    for name, pending, history, exp in BOOT_CASES:
        fill(fs, d + "/" + name + ".log", pending, history, exp)
    fs.write_atomic(d + "/ready", b"")


def bench_boot(d):
    if not PosixFS().exists(d + "/ready"):
        build_journals(d)
    out = {}
    for name, _, _, _ in BOOT_CASES:
        out[name] = _boot_case(d + "/" + name + ".log")
    return out


def _r(x):
    return float("%.3f" % x)  # round() leaves long float reprs on MicroPython


def _workdir():
    # Made level by level from the top: a fresh clone has no var/ yet (issue 16, point 11).
    path = "var/bench/queue-%08x" % int.from_bytes(os.urandom(4), "big")
    PosixFS().makedirs(path)
    return path


def _cleanup(d):
    for name in os.listdir(d):
        os.remove(d + "/" + name)
    os.rmdir(d)


def _journals_arg():
    argv = sys.argv
    for i in range(len(argv) - 1):
        if argv[i] == "--journals":
            return argv[i + 1]
    return None


def main():
    import json
    d = _workdir()
    journals = _journals_arg()
    if journals is not None:
        PosixFS().makedirs(journals)
    try:
        out = {"rt": "micropython" if MICRO else "cpython"}
        out["commit"] = bench_commit(d)
        out["bytes"] = bench_bytes(d)
        out["boot"] = bench_boot(journals or d)
    finally:
        _cleanup(d)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
