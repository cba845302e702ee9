"""A MicroPython terminal's whole day in a small heap (issue 14): 2 000 sales pending in its
journal, it boots, goes online against a real mosquitto, sells with a coupon, then drains
every charge to `python -m host_sim serve`. Used by tests/integration/test_heap.py (the
acceptance, at a data heap of 256 KiB) and tests/bench_heap.py (the smallest heap per step).

The heap: the unix port keeps the bytecode of every imported module in its heap. So the
terminal runs with `-X heapsize` = the heap its code takes (tests/mp_code_heap.py, measured in a
fresh process) + the data heap asked for; anything the run imports beyond that set counts
against the data heap (docs/decisions.md, 2026-12-04 "Heap on MicroPython"). With a ROMFS image
(romfs=) the code runs from the image as from a board's flash, and the heap beyond the image is
all the RAM a board would need, the objects the imports make included (2026-12-05).
"""
import json
import os
import subprocess
import sys
import time

from device.ports.storage import PosixFS, RecordLog
from device.sales.queue import ChargeQueue
from device.sales.sale import make_sale
from tests.support.shop import CUR, DAY, MERCHANT, Shop

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PENDING = 2000
STEPS = ("boot", "online", "coupon_sale", "drain")
# 2 000 offline sales plus the coupon sale: above the default offline_max_count (2 000)
LIMITS = {"offline_max_charge": 50000, "offline_max_total": 10 ** 9,
          "offline_max_count": 5000, "offline_max_age_s": 30 * DAY}


def code_heap():
    """Bytes of heap the agent's imported code takes on the unix port."""
    mp = os.path.join(os.path.dirname(sys.executable), "micropython")
    out = subprocess.run([mp, "-X", "heapsize=4M", "tests/mp_code_heap.py"], cwd=ROOT,
                         env=dict(os.environ, MICROPYPATH=ROOT + ":.frozen"),
                         capture_output=True, timeout=60, check=True)
    return json.loads(out.stdout.decode().strip().splitlines()[-1])["code_heap"]


def offline_journal(data_dir, n, now):
    """n sales committed offline over the last day through the device's own queue, with the
    checkpoints its maintenance writes (one record a second, a clerk's pace)."""
    fs = PosixFS()
    fs.makedirs(data_dir)
    q = ChargeQueue(RecordLog(fs, data_dir + "/queue.log")).open()
    for i in range(n):
        at = now - DAY + i * 30
        q.commit(make_sale(os.urandom(16), q.take_receipt_no(), 100 + i % 9000, [], CUR, at,
                           True, "clerk"))
        if q.needs_checkpoint(at * 1000):
            q.checkpoint(at * 1000)
    q.log.close()


def run(tmp_path, broker, data_heap, pending=PENDING, code=None, device_id="T-H", romfs=None):
    """The day at `data_heap` bytes of data heap: {"steps": {step: ok}, "heap": {step: the
    status' heap after it}, "heapsize": the -X heapsize used, "code_heap"}. Stops at the first
    step that fails. Runs on one broker need their own device_id (its persistent session
    keeps what an earlier run left queued). romfs: a ROMFS image of the code (tests/support/
    romfs.py) the terminal runs from; `code` is then the image's size, and the data heap is all
    the rest: what a board holds in RAM (import-time objects included)."""
    if romfs is not None:
        code = os.path.getsize(romfs)
    code = code_heap() if code is None else code
    heapsize = code + data_heap
    out = {"steps": {s: False for s in STEPS}, "heap": {}, "heapsize": heapsize,
           "code_heap": code, "data_heap": data_heap, "pending": pending}
    shop = Shop(tmp_path, broker)
    try:
        shop.ks.create_issuer(MERCHANT, nbf=int(time.time()) - DAY)
        token = shop.ks.create_campaign("TEN-OFF", "10 off", "amt", 1000, cur=CUR,
                                        iss=MERCHANT, quantity=1)[0]
        shop.publish()
        t = shop.terminal(device_id, "micropython", start=False, limits=dict(LIMITS))
        t.mp_heap = "%dK" % ((heapsize + 1023) // 1024)
        t.mp_romfs = romfs
        offline_journal(t.data_dir, pending, int(time.time()))
        out["steps"]["boot"] = _step(out, t, "boot", lambda: (
            t.start(60), _wait(t, lambda s: s["queue"]["pending"] == pending, 60)))
        if not out["steps"]["boot"]:
            return out
        out["steps"]["online"] = _step(out, t, "online", lambda: _wait(
            t, lambda s: s["online"] and s["trust_ver"] == shop.ks.trust_ver, 60))
        if not out["steps"]["online"]:
            return out
        out["steps"]["coupon_sale"] = _step(out, t, "coupon_sale", lambda: (
            t.sell(5000, token),
            _wait(t, lambda s: s["queue"]["pending"] == pending + 1, 30)))
        if not out["steps"]["coupon_sale"]:
            return out
        shop.start_host()
        out["steps"]["drain"] = _step(out, t, "drain", lambda: _wait(
            t, lambda s: s["queue"]["pending"] == 0, 300)) and \
            len(shop.charges(device_id)) == pending + 1
        return out
    finally:
        out["log_tail"] = _tail(tmp_path / (device_id + ".log"))
        shop.close()


class OutOfMemory(AssertionError):
    pass


def _wait(t, pred, timeout):
    """Waits for a status matching pred; gives up at once when the terminal is gone or its
    link keeps failing for lack of memory (a smaller heap then cannot get there)."""
    end = time.monotonic() + timeout
    while True:
        st = t.status()
        if st is not None and "queue" not in st:
            # the console's error reply instead of a status: out of memory answering it
            if "MemoryError" in str(st):
                raise OutOfMemory(str(st))
            st = None
        if st is not None:
            if pred(st):
                return st
            link = st.get("link") or {}
            if "MemoryError" in str(link.get("last_error")) and \
                    link.get("connect_failures", 0) >= 3:
                raise OutOfMemory(link["last_error"])
        if t.proc is None or not t.proc.alive():
            raise OutOfMemory("the terminal exited")
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.1)


def _step(out, t, name, fn):
    try:
        fn()
    except AssertionError:
        return False
    if t.proc is None or not t.proc.alive():
        return False
    st = t.status()
    if st is None:
        return False
    out["heap"][name] = st.get("heap")
    m = st.get("metrics", {})
    # a step that got through only by restarting a task, or with a memory error on the way,
    # did not pass
    if any(k.startswith("task_restarts") for k in m):
        return False
    return "MemoryError" not in t.tail(100000)


def _tail(path, n=2000):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""
