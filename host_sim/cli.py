"""Argument types shared by the host simulator's command lines (argparse `type=` callables)."""
import argparse
import os

from host_sim.store import is_url
from protocol import topics


def db_missing(db):
    """True for a --db path with no file behind it (a postgresql:// URL is never "missing":
    opening it says what is wrong)."""
    return not is_url(db) and not os.path.exists(db)


def port(text):
    v = int(text)
    if not 0 < v < 65536:
        raise argparse.ArgumentTypeError("must be 1..65535")
    return v


def topic_root(text):
    try:
        topics.fleet(text, "trustlist")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))
    return text


def amount(text):
    """Minor units: an integer >= 0 that fits a database integer."""
    v = int(text)
    if not 0 <= v < 1 << 63:
        raise argparse.ArgumentTypeError("must be an amount in minor units >= 0")
    return v


LATEST_TIME = 221845392000  # 9000-01-01: periods computed from it stay within the calendar


def unix_time(text):
    v = int(text)
    if not 0 <= v < LATEST_TIME:
        raise argparse.ArgumentTypeError("must be a Unix time in seconds before year 9000")
    return v


def rate(text):
    v = float(text)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError("must be within 0..1")
    return v


def db_anywhere(parser, commands, help):
    """--db before the command, as SPEC 8.2 writes `vip --db PATH tier ...`, or after it
    (`refunds list --db PATH`: SPEC 8.3's line names no place). Call it once every command is
    added; then `no_db` says when it is missing."""
    parser.add_argument("--db", help=help + " (before or after the command)")
    for sp in commands.choices.values():
        sp.add_argument("--db", default=argparse.SUPPRESS, help=help)


def no_db(name, args):
    """Exit code 2 with argparse's words when --db was given nowhere, else None."""
    if getattr(args, "db", None) is not None:
        return None
    import sys
    sys.stderr.write("%s: error: the following arguments are required: --db\n" % name)
    return 2


def on_store(name, args, schemas, errors, clock, must_exist=False, before=None):
    """The main of a service's command line: opens args.db, creates `schemas`, runs
    args.fn(args, store, now); an error of `errors` is "NAME: message" on stderr and exit 1."""
    import sys

    from host_sim.store import StoreError, open_store

    missing = no_db(name, args)
    if missing is not None:
        return missing
    if must_exist and db_missing(args.db):
        sys.stderr.write("%s: no database at %s\n" % (name, args.db))
        return 1
    try:
        store = open_store(args.db)
    except StoreError as e:  # says what it could not open
        sys.stderr.write("%s: %s\n" % (name, e))
        return 1
    except (OSError, ValueError) as e:
        sys.stderr.write("%s: cannot open %s: %s\n" % (name, args.db, e))
        return 1
    try:
        if before is not None:
            before(store)
        for ddl in schemas:
            store.schema(ddl)
        return args.fn(args, store, int(clock())) or 0
    except errors + (StoreError,) as e:
        sys.stderr.write("%s: %s\n" % (name, e))
        return 1
    finally:
        store.close()

