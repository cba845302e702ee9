# Runs `micropython -m device ...` with the agent's code taken from a ROMFS image (bytecode
# executed in place, as from a board's flash) instead of the sources: tests/support/romfs.py.
#   ROMFS_IMAGE=var/agent.romfs MICROPYPATH=.frozen micropython tests/mp_romfs_run.py -m device ...
# Only the image and the firmware's frozen modules are on the path: no source is imported.
import os
import sys

import vfs

with open(os.getenv("ROMFS_IMAGE"), "rb") as f:
    vfs.mount(vfs.VfsRom(f.read()), "/rom")
sys.path[:] = ["/rom", ".frozen"]
args = sys.argv[1:]
if args[:2] == ["-m", "device"]:
    args = args[2:]
sys.argv[:] = ["device"] + args
import device.__main__  # noqa: E402,F401  (runs the command and exits)
