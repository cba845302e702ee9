"""Fleet benchmark (issue 15): `make bench-fleet`.

    PYTHONPATH=. .venv/bin/python -m tests.bench_fleet [--terminals 1000] [--rate 20]
        [--duration 60] [--burst 3] [--scale 1,2,4] [--workers 2] [--host-scale 1,2,4]
        [--storm 200x15] [--full]

Everything real on this machine: mosquitto (tests/support/broker.py) and a throwaway PostgreSQL
(tests/support/postgres.py) on loopback ports of their own, host workers (`python -m host_sim
serve --worker N`), and the terminals as real device agents, one shard process per CPU
(host_sim/fleet). The scenario is host_sim/fleet/run.py's: steady sales at --rate with a tenth
of the fleet cut for the middle third, then one reconnect storm with --burst sales per terminal
per worker count of --scale; after the check, a host-only storm (--storm terminals x charges,
sealed beforehand and published by one light client: the workers' own scaling, with no terminal
CPU in the way) per worker count of --host-scale. Prints one JSON line:
{"terminals", "charges_per_s" (best storm drain), "p99_ms" (steady sales made online, commit to
result on flash), "lost", "duplicated", "workers" (storm drain per worker count), "host_workers"
(host-only storm per worker count), ...}; --full prints the whole report instead.
"""
import argparse
import json
import sys

from host_sim.fleet.run import Fleet, bench_line, clean, parse_scale, parse_storm, scenario
from tests.support.broker import Broker
from tests.support.postgres import Postgres


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tests.bench_fleet")
    p.add_argument("--terminals", type=int, default=1000)
    p.add_argument("--rate", type=float, default=20.0)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--burst", type=int, default=3)
    p.add_argument("--scale", default="1,2,4")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--host-scale", default="1,2,4")
    p.add_argument("--storm", default="200x15")
    p.add_argument("--full", action="store_true")
    args = p.parse_args(argv)

    def log(line):
        sys.stderr.write("bench-fleet: %s\n" % line)
        sys.stderr.flush()

    broker = Broker()  # its log is the start-up signal (PLATFORM_NOTES: buffered otherwise)
    pg = Postgres()
    fleet = None
    try:
        broker.start()
        pg.start()
        fleet = Fleet(pg.new_database("fleet"), broker.port, args.terminals, log=log)
        fleet.extra_pids = {"broker": [broker.proc.pid], "database": [pg.proc.pid]}
        fleet.prepare()
        report = scenario(fleet, rate=args.rate, duration=args.duration, burst=args.burst,
                          scale=parse_scale(args.scale), workers=args.workers, log=log,
                          host_scale=parse_scale(args.host_scale),
                          storm_size=parse_storm(args.storm))
    finally:
        if fleet is not None:
            fleet.close()
        pg.close()
        broker.close()
    log(json.dumps(report, sort_keys=True))
    print(json.dumps(report if args.full else bench_line(report)))
    return 0 if clean(report) else 1


if __name__ == "__main__":
    sys.exit(main())
