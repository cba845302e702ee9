# Runs the both-runtime tests (tests/both/test_*.py) under MicroPython, without pytest.
# Usage (from the repo root): MICROPYPATH=.:.frozen micropython tests/mp_run.py [module ...]
# A test is any module-level callable named test_*; it passes unless it raises.
import os
import sys


def _modules(argv):
    if argv:
        return argv
    names = sorted(n[:-3] for n in os.listdir("tests/both")
                   if n.startswith("test_") and n.endswith(".py"))
    return ["tests.both." + n for n in names]


def main(argv):
    passed = failed = 0
    for name in _modules(argv):
        try:
            mod = __import__(name, None, None, ["*"])
        except Exception as e:
            failed += 1
            print("IMPORT ERROR", name)
            sys.print_exception(e)
            continue
        for attr in sorted(dir(mod)):
            fn = getattr(mod, attr)
            if not attr.startswith("test_") or not callable(fn):
                continue
            try:
                fn()
                passed += 1
                print("ok  ", name + "." + attr)
            except Exception as e:
                failed += 1
                print("FAIL", name + "." + attr)
                sys.print_exception(e)
    print("micropython: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


sys.exit(main(sys.argv[1:]))
