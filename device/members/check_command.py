# The stateless member code check (SPEC 8.1; like SPEC 2.4's coupon-check):
#   member-check --root-key HEX --trustlist PT1:... [--revocations PR1:...] --now UNIX TOKEN
# prints one JSON line {"verdict", "mid", "ep", "tier", "name", "cti", "dynamic"} (null for what
# the code did not tell) and exits 0 for any verdict, 2 for bad arguments. Stateless: the clock is
# --now (never clock_unset), nothing is read from or written to flash.

from device.members.verifier import MemberVerifier
from device.trust.check_args import (
    command,
    hex_or_null,
    integer,
    parse,
    text_or_null,
    trust_store,
)

USAGE = """usage: member-check --root-key HEX [--root-key HEX ...] --trustlist PT1:...
    [--revocations PR1:...] --now UNIX TOKEN
One JSON line: {"verdict", "mid", "ep", "tier", "name", "cti", "dynamic"}; exit 0 for any
verdict, 2 for bad arguments. "@PATH" stands for the lines of a file, one argument per line."""

_SINGLE = ("--trustlist", "--revocations", "--now")
_REQUIRED = ("--trustlist", "--now")


def result_line(r):
    ep = "null" if r["ep"] is None else "%d" % r["ep"]
    dyn = "null" if r["dynamic"] is None else ("true" if r["dynamic"] else "false")
    return ('{"verdict": "%s", "mid": %s, "ep": %s, "tier": %s, "name": %s, "cti": %s, '
            '"dynamic": %s}' % (r["verdict"], text_or_null(r["mid"]), ep,
                                text_or_null(r["tier"]), text_or_null(r["name"]),
                                hex_or_null(r["cti"]), dyn))


def run(argv):
    """The result dict for argv; raises ArgError for bad arguments."""
    opts, token = parse(argv, _SINGLE, _REQUIRED)
    now = integer("--now", opts["--now"])
    return MemberVerifier(trust_store(opts)).check(token, now, clock_trusted=True,
                                                   stateful=False)


def main(argv):
    return command("member-check", USAGE, run, result_line, argv)
