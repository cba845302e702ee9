"""The smallest MicroPython heap a terminal lives its day in (issue 14): `make bench-heap`.

    PYTHONPATH=. .venv/bin/python -m tests.bench_heap [--pending 2000] [--lo 96] [--hi 512]
        [--step 16] [--romfs]

The day (tests/support/heap_rig.py): 2 000 sales pending in the journal, boot, online against a
real mosquitto (the retained trust list installed: the root key's signature checked), a sale
with a coupon (its issuer's signature checked), then the drain of every charge to
`python -m host_sim serve`. The heap is the data heap: the whole `-X heapsize` of the unix port
minus the heap its imported code takes (tests/mp_code_heap.py, docs/decisions.md 2026-12-04
"Heap on MicroPython"). For each step, a binary search in --step KiB steps finds the smallest
data heap at which the day gets through that step; the two sizes above it are run too, and the
figure is raised past any that fails (MicroPython's heap is never compacted, so success is not
strictly monotonic in its size). One JSON line per run, then the table, then the result:
    {"min_heap_kib": N, "pending": 2000, "whole_heap_kib": M, "code_heap_kib": C, "steps": {...}}
With --romfs the terminal runs its code from a ROMFS image (tests/support/romfs.py: .mpy
bytecode executed in place, as from a board's flash) and the heap is the whole `-X heapsize`
minus the image: everything a board holds in RAM, the objects its imports make included. The
result then has "code": "romfs" and "image_kib" instead of "code_heap_kib".
"""
import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

from tests.support import heap_rig
from tests.support import romfs as romfs_image
from tests.support.broker import Broker


class Runs:
    def __init__(self, broker, pending, code, romfs=None):
        self.broker = broker
        self.pending = pending
        self.code = code
        self.romfs = romfs
        self.done = {}  # data heap KiB -> steps passed

    def steps(self, kib):
        if kib not in self.done:
            t0 = time.monotonic()
            with tempfile.TemporaryDirectory(prefix="heap-") as d:
                r = heap_rig.run(pathlib.Path(d), self.broker, kib * 1024, self.pending,
                                 self.code, device_id="T-H%d" % len(self.done),
                                 romfs=self.romfs)
            tail = r.pop("log_tail", "")
            r["s"] = round(time.monotonic() - t0, 1)
            if not all(r["steps"].values()):
                r["log_tail"] = tail[-600:]
            print(json.dumps(r))
            sys.stdout.flush()
            self.done[kib] = r["steps"]
        return self.done[kib]

    def passes(self, kib, step):
        return self.steps(kib)[step]


def smallest(runs, step, lo, hi, unit):
    """The smallest heap (KiB, a multiple of unit in [lo, hi]) at which `step` passes, checked
    again at the two sizes above; None when even hi fails."""
    if not runs.passes(hi, step):
        return None
    a, b = lo // unit, hi // unit  # b passes
    while a < b:
        m = (a + b) // 2
        if runs.passes(m * unit, step):
            b = m
        else:
            a = m + 1
    k = b
    while k < hi // unit:
        bad = [j for j in (k + 1, k + 2) if j <= hi // unit and not runs.passes(j * unit, step)]
        if not bad:
            break
        k = max(bad) + 1
    return k * unit


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tests.bench_heap")
    p.add_argument("--pending", type=int, default=heap_rig.PENDING)
    p.add_argument("--lo", type=int, default=96, help="KiB of data heap")
    p.add_argument("--hi", type=int, default=512, help="KiB of data heap")
    p.add_argument("--step", type=int, default=16, help="KiB")
    p.add_argument("--romfs", action="store_true",
                   help="run the code from a ROMFS image; the heap is all but the image")
    args = p.parse_args(argv)
    romfs = None
    if args.romfs:
        romfs = os.path.join(heap_rig.ROOT, "var", "bench", "agent.romfs")
        os.makedirs(os.path.dirname(romfs), exist_ok=True)
        code = romfs_image.build(romfs)
    else:
        code = heap_rig.code_heap()
    broker = Broker()
    broker.start()
    try:
        runs = Runs(broker, args.pending, code, romfs)
        found = {}
        for step in heap_rig.STEPS:
            found[step] = smallest(runs, step, args.lo, args.hi, args.step)
    finally:
        broker.close()
    code_kib = (code + 1023) // 1024
    if romfs:
        print("\nROMFS image of the code: %d KiB (tests/support/romfs.py)" % code_kib)
    else:
        print("\nimported code on the unix port: %d KiB (tests/mp_code_heap.py)" % code_kib)
    print("%-12s %14s %16s" % ("step", "RAM" if romfs else "data heap", "-X heapsize"))
    for step in heap_rig.STEPS:
        k = found[step]
        print("%-12s %14s %16s" % (step, "%d KiB" % k if k else "> %d KiB" % args.hi,
                                   "%d KiB" % (k + code_kib) if k else "-"))
    whole = found[heap_rig.STEPS[-1]]
    result = {"min_heap_kib": whole, "pending": args.pending,
              "whole_heap_kib": whole + code_kib if whole else None}
    if romfs:
        result.update(code="romfs", image_kib=code_kib)
    else:
        result["code_heap_kib"] = code_kib
    result["steps"] = found
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
