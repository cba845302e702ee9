# python -m device run --config F | console --config F | coupon-check ... | member-check ...
# (same on MicroPython: micropython -m device ...)
import sys

COMMANDS = (
    ("run", "python -m device run --config device.json [--console PORT]",
     "Runs the terminal. Without a config file it is unprovisioned: only the console runs (on\n"
     "PORT, or stdin/stdout), offering status and provision; a provision starts the terminal\n"
     "at once on the same console. Exit 3 asks to be restarted (reboot, factory reset)."),
    ("console", "python -m device console --config device.json",
     "The technician console on stdin/stdout against the terminal's data (the terminal must\n"
     "not be running): one command per line, one JSON reply per line; `help` lists them."),
    ("coupon-check", "python -m device coupon-check --root-key HEX --trustlist PT1:...\n"
     "      [--revocations PR1:...] --store ID --currency CUR --now UNIX --total MINOR TOKEN",
     "Checks one coupon statelessly (SPEC 2.4) and prints one JSON line: verdict, discount,\n"
     "cti, campaign. Exit 0 for any verdict, 2 for bad arguments. @FILE stands for the lines\n"
     "of FILE, one argument per line."),
    ("member-check", "python -m device member-check --root-key HEX --trustlist PT1:...\n"
     "      [--revocations PR1:...] --now UNIX TOKEN",
     "Checks one member code statelessly (SPEC 8.1) and prints one JSON line: verdict, mid,\n"
     "ep, tier, name, cti, dynamic (null for what the code did not tell). Expiry is judged at\n"
     "--now. Exit 0 for any verdict, 2 for bad arguments. @FILE as for coupon-check."),
)
USAGE = "usage:\n" + "\n".join("  " + u for _, u, _ in COMMANDS)


def _help(cmd):
    for name, usage, text in COMMANDS:
        if name == cmd:
            return "usage: %s\n\n%s\n" % (usage, text)
    return USAGE + "\n\nRun `python -m device COMMAND --help` for one command.\n"


def main(argv):
    if not argv:
        sys.stderr.write(USAGE + "\n")
        return 2
    cmd, args = argv[0], argv[1:]
    if cmd in ("-h", "--help", "help") or "-h" in args or "--help" in args:
        sys.stdout.write(_help(None if cmd in ("-h", "--help", "help") else cmd))
        return 0
    if cmd == "coupon-check":
        from device.coupons.check_command import main as check_main
        return check_main(args)
    if cmd == "member-check":
        from device.members.check_command import main as member_main
        return member_main(args)
    if cmd in ("run", "console"):
        from device.main import main as run_main
        return run_main(argv)
    sys.stderr.write(USAGE + "\n")
    return 2


def _argv():
    # The MicroPython launcher passes long arguments in a file (scripts/micropython-launcher).
    from device.ports import runtime
    path = runtime.env("MICROPY_ARGV_FILE")
    if not path:
        return sys.argv[1:]
    import json
    with open(path) as f:
        full = json.load(f)
    for i in range(len(full) - 1):
        if full[i] == "-m" and full[i + 1] == "device":
            return full[i + 2:]
    return sys.argv[1:]


sys.exit(main(_argv()))
