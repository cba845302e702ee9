# VIP renewal scheduler benchmark (SPEC 8.2): one JSON line per figure.
#   PYTHONPATH=. .venv/bin/python -m tests.bench_vip [--members N] [--db URL] [--fail-rate P]
# A population of N memberships (default 100 000; 80 % monthly gold, 20 % quarterly silver,
# anchors spread over one day, Jan 31 2027, a month end) on a fresh SQLite file in
# var/bench/vip-<random> (removed at the end; synchronous=FULL as the host runs it) or a given
# PostgreSQL database; half of the members have a stored balance that pays the first renewals,
# the others pay through the simulator's gateway (fail rate 2 % by default). Figures:
#   enrol         the tick that charges every first period (bulk enrolment)
#   idle          a tick with nothing due
#   reminders     the tick that records the 5-day reminders of every monthly renewal
#   renewal       the tick that renews every monthly membership (the quarterly ones wait)
#   downtime_90d  the tick after 90 days with the host down: every missed period of every
#                 membership charged in order (reminders first), retries left to later ticks
# Each: seconds, microseconds per membership, and what the tick did (charges, failures,
# reminders). One process, one scheduler.
import argparse
import json
import os
import shutil
import sys
import time
from collections import Counter

from host_sim import members, periods, vip
from host_sim.billing import DAY, Gateway
from host_sim.store import is_url, open_store

ANCHOR = periods.utc(2027, 1, 31)


def emit(figure, n, seconds, events, engine):
    acts = Counter(e["act"] for e in events)
    print(json.dumps({"bench": "vip", "figure": figure, "engine": engine, "members": n,
                      "seconds": round(seconds, 3),
                      "us_per_member": round(seconds * 1e6 / n, 1),
                      "paid": acts["paid"], "failed": acts["failed"],
                      "reminders": acts["reminder"], "lapsed": acts["lapsed"]},
                     sort_keys=True))
    sys.stdout.flush()


def populate(store, eng, n, chunk=2000):
    store.schema(members.SCHEMA)
    with store.transaction() as tx:
        gold = eng.set_plan(tx, "vip", "gold", 9900, "month")
        silver = eng.set_plan(tx, "vip", "silver", 25000, "quarter")
    for lo in range(0, n, chunk):
        with store.transaction() as tx:
            for i in range(lo, min(n, lo + chunk)):
                mid = "M%06d" % i
                if i % 2 == 0:
                    members.add(tx, mid, "M-ACME", "", "", 30000, ANCHOR - DAY)
                eng.create(tx, "vip", mid, silver if i % 5 == 4 else gold,
                           ANCHOR + (i * 86399) // n)
            if store.kind == "postgres" and lo <= chunk:
                # A table that grew from empty in seconds: plan with real statistics (the
                # server's autovacuum would do it within a minute).
                tx.execute("ANALYZE billing_subs")
                tx.execute("ANALYZE members")
    if store.kind == "postgres":
        with store.transaction() as tx:
            tx.execute("ANALYZE billing_subs")


def timed(eng, now, gateway):
    t0 = time.perf_counter()
    events = eng.tick("vip", now, gateway)
    return time.perf_counter() - t0, events


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tests.bench_vip")
    ap.add_argument("--members", type=int, default=100000)
    ap.add_argument("--db", help="postgresql:// URL of an empty database (default: SQLite)")
    ap.add_argument("--fail-rate", type=float, default=0.02)
    args = ap.parse_args(argv)
    n = args.members
    tmp = None
    if args.db and is_url(args.db):
        where = args.db
    else:
        tmp = os.path.join("var", "bench", "vip-%s" % os.urandom(4).hex())
        os.makedirs(tmp)
        where = os.path.join(tmp, "host.db")
    store = open_store(where)
    try:
        eng = vip.engine(store)
        kind = store.kind
        t0 = time.perf_counter()
        populate(store, eng, n)
        print(json.dumps({"bench": "vip", "figure": "populate", "engine": kind, "members": n,
                          "seconds": round(time.perf_counter() - t0, 3)}))
        gw = Gateway(args.fail_rate, 1)
        emit("enrol", n, *timed(eng, ANCHOR + DAY, gw), kind)
        emit("idle", n, *timed(eng, ANCHOR + DAY + 60, gw), kind)
        # Monthly renewals on Feb 28: reminders from Feb 23, charges from Feb 28 00:00 on.
        emit("reminders", n, *timed(eng, periods.utc(2027, 2, 24), gw), kind)
        emit("renewal", n, *timed(eng, periods.utc(2027, 3, 1), gw), kind)
        emit("downtime_90d", n, *timed(eng, periods.utc(2027, 3, 1) + 90 * DAY, gw), kind)
    finally:
        store.close()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
