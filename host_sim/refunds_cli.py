# The supervisor's review of refunds (SPEC 8.3; host_sim/refunds.py), JSON lines out:
#   python -m host_sim refunds --db DB list [--all]       # waiting for review, oldest first
#   python -m host_sim refunds --db DB approve RID [--device ID] [--by NAME]
#   python -m host_sim refunds --db DB reject RID --reason TEXT [--device ID] [--by NAME]
#   python -m host_sim refunds --db DB settings [--refund-window-s S] [--refund-auto-max MINOR]
#       [--refund-fee-pct P]    (prints {"refund_window_s", "refund_auto_max", "refund_fee_pct"})
# RID is the refund id in hex (as `list` and the refund receipt print it) or a unique start of
# it. approve and reject change the refund and queue the final refund_result for the terminal
# that asked in the host outbox, in one transaction; the serving host sends it.
# Exit codes: 0 done, 1 failure (message on stderr), 2 bad arguments.
import argparse
import sys
import time

from host_sim import cli, refunds, service
from host_sim.refunds import RefundError


def _print(obj):
    sys.stdout.write(service.to_json(obj) + "\n")


def _int(text):
    v = int(text)
    if not 0 <= v <= refunds.MAX_INT:
        raise argparse.ArgumentTypeError("must be an integer >= 0")
    return v


def build_parser():
    p = argparse.ArgumentParser(prog="python -m host_sim refunds",
                                description="Review refunds and set the refund rules.")
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="refunds waiting for review")
    ls.add_argument("--all", action="store_true", help="every refund, oldest first")
    for name, text in (("approve", "grant a waiting refund"),
                       ("reject", "refuse a waiting refund")):
        a = sub.add_parser(name, help=text)
        a.add_argument("rid", help="refund id in hex, or a unique start of it")
        a.add_argument("--device", help="the terminal that asked, when two rids match")
        a.add_argument("--by", default="supervisor", help="who decides (kept with the refund)")
        if name == "reject":
            a.add_argument("--reason", required=True, help="told to the terminal (64 chars)")
    s = sub.add_parser("settings", help="show or change the refund rules")
    # SPEC 8.3's names (refund_window_s, ...), and the short ones of earlier releases.
    s.add_argument("--refund-window-s", "--window-s", dest="window_s", type=_int,
                   help="refunds only this long after the charge")
    s.add_argument("--refund-auto-max", "--auto-max", dest="auto_max", type=_int,
                   help="amounts above it wait for review")
    s.add_argument("--refund-fee-pct", "--fee-pct", dest="fee_pct", type=_int,
                   help="fee kept, percent (0..100)")
    cli.db_anywhere(p, sub, "SQLite path or postgresql:// URL")
    return p


def run(args, store, now):
    with store.transaction() as tx:
        if args.command == "list":
            for r in (refunds.every(tx) if args.all else refunds.waiting(tx)):
                _print(refunds.public(r))
        elif args.command == "settings":
            now_set = refunds.set_settings(tx, window_s=args.window_s,
                                           auto_max=args.auto_max, fee_pct=args.fee_pct)
            _print({refunds.SPEC_NAME[k]: v for k, v in now_set.items()})
        else:
            r = refunds.find_waiting(tx, args.rid, args.device)
            if args.command == "approve":
                refunds.approve(tx, r, args.by, now)
            else:
                refunds.reject(tx, r, args.reason, args.by, now)
            _print(refunds.public(r))
    return 0


def main(argv=None, clock=time.time):
    args = build_parser().parse_args(argv)
    args.fn = run
    return cli.on_store("host_sim refunds", args, (service.OUTBOX_SCHEMA, refunds.SCHEMA),
                        (RefundError,), clock, must_exist=True)


if __name__ == "__main__":
    sys.exit(main())
