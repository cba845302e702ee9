# Helpers for tests that run on both CPython (pytest) and MicroPython (tests/mp_run.py).
import json

SHARED = "../shared"


def raises(exc, fn, *args, **kw):
    """Calls fn and returns the exception it raised; fails when it raises nothing or another."""
    try:
        fn(*args, **kw)
    except exc as e:
        return e
    raise AssertionError("%s not raised by %r" % (exc.__name__, fn))


def load_vectors(name):
    with open(SHARED + "/vectors/" + name) as f:
        return json.load(f)


def tmpdir(tag):
    """A fresh scratch directory under var/test (works on both runtimes)."""
    import os
    base = "var/test"
    for part in ("var", base):
        try:
            os.mkdir(part)
        except OSError:
            pass
    path = base + "/" + tag + "-" + "%08x" % int.from_bytes(os.urandom(4), "big")
    os.mkdir(path)
    return path
