# The runtime port: which Python this is and the few things only the runtime can do. Every other
# module asks here instead of testing sys.implementation, os or machine itself.
import os
import sys

NAME = "micropython" if sys.implementation.name == "micropython" else "cpython"
MICROPYTHON = NAME == "micropython"
# A board (not the unix port): resets instead of exiting, has no directory fsync.
BOARD = MICROPYTHON and sys.platform not in ("linux", "darwin", "win32")
# Small ints wider than 32 bits are tagged values (MicroPython on a 64-bit machine).
WIDE_SMALL_INTS = MICROPYTHON and sys.maxsize > 0xFFFFFFFF


def restart(code):
    """Stops the terminal so it starts again: a board resets; the unix and desktop runtimes exit
    with `code` (device/main.py finishes a factory reset, a supervisor starts us again)."""
    if BOARD:
        import machine

        machine.reset()
    raise SystemExit(code)


def make_private(path, mode):
    """chmod where the filesystem has modes; False where it has none (littlefs on a board)."""
    chmod = getattr(os, "chmod", None)
    if chmod is None:
        return False
    chmod(path, mode)
    return True


CAN_CHMOD = getattr(os, "chmod", None) is not None


def env(name):
    getenv = getattr(os, "getenv", None)
    return getenv(name) if getenv is not None else None


def settle():
    """Collects the garbage before long-lived state is built (MicroPython): its heap is never
    compacted and a new block goes into the lowest hole that fits, so state made after a
    collection packs into the low holes and leaves the top of the heap in one piece, where
    the link's 4 KiB reads and a list's payload find room. Nothing to do on CPython."""
    if MICROPYTHON:
        import gc
        gc.collect()
        # collect after every 16th of the heap allocated, not only when the heap is full: the
        # allocation front then stays low and what lives long is not scattered over the top
        # (each collection scans the heap: more often than that costs a drain more than half
        # its speed on the unix port)
        gc.threshold((gc.mem_free() + gc.mem_alloc()) // GC_SHARE)


GC_SHARE = 16
