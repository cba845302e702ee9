# python -m device run --config F | console --config F | coupon-check ... | member-check ...
# (same on MicroPython: micropython -m device ...)
import sys

USAGE = """usage:
  python -m device run --config device.json [--console PORT]
  python -m device console --config device.json
  python -m device coupon-check --root-key HEX --trustlist PT1:... [--revocations PR1:...]
      --store ID --currency CUR --now UNIX --total MINOR TOKEN
  python -m device member-check --root-key HEX --trustlist PT1:... [--revocations PR1:...]
      --now UNIX TOKEN
(also micropython -m device ...; COMMAND --help for a command's output)"""


def main(argv):
    if not argv:
        sys.stderr.write(USAGE + "\n")
        return 2
    cmd, args = argv[0], argv[1:]
    if cmd in ("--help", "-h", "help"):
        sys.stdout.write(USAGE + "\n")
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
