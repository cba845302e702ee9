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
