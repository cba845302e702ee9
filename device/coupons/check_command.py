# The stateless check command (SPEC 2.4):
#   coupon-check --root-key HEX --trustlist PT1:... [--revocations PR1:...] --store ID
#                --currency CUR --now UNIX --total MINOR TOKEN
# prints one JSON line and exits 0 for any verdict, 2 for bad arguments. Nothing is read from or
# written to flash: the lists live in memory only. Arguments (and "@PATH" argument files) are
# device/trust/check_args.py's, shared with member-check.

from device.coupons.verifier import Verifier
from device.trust.check_args import (
    command,
    hex_or_null,
    integer,
    parse,
    text_or_null,
    trust_store,
)

USAGE = """usage: coupon-check --root-key HEX [--root-key HEX ...] --trustlist PT1:...
    [--revocations PR1:...] --store ID --currency CUR --now UNIX --total MINOR TOKEN
One JSON line: {"verdict", "discount", "cti", "campaign"}; exit 0 for any verdict, 2 for bad
arguments. "@PATH" stands for the lines of a file, one argument per line."""

_SINGLE = ("--trustlist", "--revocations", "--store", "--currency", "--now", "--total")
_REQUIRED = ("--trustlist", "--store", "--currency", "--now", "--total")


def result_line(r):
    disc = "null" if r["discount"] is None else "%d" % r["discount"]
    return '{"verdict": "%s", "discount": %s, "cti": %s, "campaign": %s}' % (
        r["verdict"], disc, hex_or_null(r["cti"]), text_or_null(r["campaign"]))


def run(argv):
    """The result dict for argv; raises ArgError for bad arguments."""
    opts, token = parse(argv, _SINGLE, _REQUIRED)
    now = integer("--now", opts["--now"])
    total = integer("--total", opts["--total"], 0)
    store = trust_store(opts)
    return Verifier(store).check(token, total, opts["--store"], opts["--currency"], now,
                                 clock_trusted=True, uses=None)


def main(argv):
    return command("coupon-check", USAGE, run, result_line, argv)
