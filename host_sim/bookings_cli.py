# Command line of the store's bookings (SPEC 8.4; host_sim/bookings.py), JSON lines out:
#   python -m host_sim bookings --db DB create --store S --at UNIX --dur SECONDS --name N --svc SVC
#   python -m host_sim bookings --db DB list --store S [--day YYYY-MM-DD]
#   python -m host_sim bookings --db DB cancel BID [--reason TEXT]
#   python -m host_sim bookings --db DB history BID
# DB is a SQLite path or a postgresql:// URL (host_sim/store.py). create and cancel change the
# booking, bump the store's list version and queue the new list for every terminal of the store
# in the host outbox, in one transaction; the serving host (`python -m host_sim serve`)
# publishes it. list without --day shows what the terminals get: the bookings of today and
# tomorrow (UTC days). A cancellation less than bookings.CUTOFF_S before the slot (or after
# its start) needs --reason and is flagged for review ("review": true in list and history).
# Exit codes: 0 done, 1 failure (message on stderr), 2 bad arguments.
import argparse
import calendar
import sys
import time

from host_sim import bookings, cli, service
from host_sim.bookings import DAY, BookingError
from host_sim.registry import Registry


def _print(obj):
    sys.stdout.write(service.to_json(obj) + "\n")


def _row(b):
    return {k: b[k] for k in ("bid", "store_id", "at", "dur", "name", "svc", "st", "v",
                              "review")}


def cmd_create(args, store, now):
    with store.transaction() as tx:
        b = bookings.create(tx, args.store, args.at, args.dur, args.name, args.svc, now)
        ver = bookings.list_row(tx, args.store, now)[0]
    _print(dict(_row(b), ver=ver))


def cmd_list(args, store, now):
    start = args.day if args.day is not None else bookings.day_of(now) * DAY
    end = start + (DAY if args.day is not None else 2 * DAY)
    with store.read() as tx:
        for b in bookings.between(tx, args.store, start, end):
            _print(_row(b))


def cmd_cancel(args, store, now):
    with store.transaction() as tx:
        b = bookings.cancel(tx, args.bid, args.reason, now)
    _print(_row(b))


def cmd_history(args, store, now):
    with store.read() as tx:
        if bookings.booking(tx, args.bid) is None:
            raise BookingError("unknown_booking", "no booking %r" % args.bid)
        for row in bookings.history(tx, args.bid):
            _print(row)


def _uint(text):
    v = int(text)
    if not 0 <= v < 1 << 63:
        raise argparse.ArgumentTypeError("must be 0..2^63-1")
    return v


def _day(text):
    try:
        return calendar.timegm(time.strptime(text, "%Y-%m-%d"))
    except ValueError:
        raise argparse.ArgumentTypeError("must be YYYY-MM-DD")


def build_parser():
    p = argparse.ArgumentParser(prog="python -m host_sim bookings",
                                description="The store's bookings (SPEC 8.4).")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("create", help="a new booking; the store's terminals get the new list")
    s.add_argument("--store", required=True)
    s.add_argument("--at", type=_uint, required=True, metavar="UNIX", help="slot start")
    s.add_argument("--dur", type=_uint, required=True, metavar="SECONDS", help="slot length")
    s.add_argument("--name", required=True, help="the customer")
    s.add_argument("--svc", required=True, help="the service booked")
    s.set_defaults(fn=cmd_create)

    s = sub.add_parser("list", help="the store's bookings of today and tomorrow, or of --day")
    s.add_argument("--store", required=True)
    s.add_argument("--day", type=_day, metavar="YYYY-MM-DD", help="one UTC day")
    s.set_defaults(fn=cmd_list)

    s = sub.add_parser("cancel", help="cancel a booking (a late one needs --reason)")
    s.add_argument("bid")
    s.add_argument("--reason", help="why (required within the cut-off before the slot)")
    s.set_defaults(fn=cmd_cancel)

    s = sub.add_parser("history", help="every change of a booking: who, why, when")
    s.add_argument("bid")
    s.set_defaults(fn=cmd_history)
    cli.db_anywhere(p, sub, "host database: SQLite path or postgresql:// URL")
    return p


def main(argv=None, clock=time.time):
    args = build_parser().parse_args(argv)
    # The terminals of a store (the list goes to each) live in the registry's tables.
    return cli.on_store("bookings", args, (bookings.SCHEMA, service.OUTBOX_SCHEMA),
                        (BookingError, OSError), clock, before=Registry)


if __name__ == "__main__":
    sys.exit(main())
