"""Argument types shared by the host simulator's command lines (argparse `type=` callables)."""
import argparse

from protocol import topics


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
