# The heap the agent's imported code takes on the MicroPython unix port (which keeps every
# imported module's bytecode in the heap; a board runs frozen modules from flash):
#   MICROPYPATH=.:.frozen micropython -X heapsize=4M tests/mp_code_heap.py
# prints one JSON line {"code_heap": bytes, "modules": n}: gc.mem_alloc() after importing what
# `-m device run` imports to go online (device.main, the agent and everything it imports, the
# store services it installs, the MQTT link) and a collection. docs/decisions.md (2026-12-04,
# "Heap on MicroPython") says how tests and `make bench-heap` use it: the whole -X heapsize is
# this plus the data heap.
import gc
import sys

gc.collect()
base = gc.mem_alloc()
import device.agent  # noqa: E402,F401
import device.main  # noqa: E402,F401
import device.ports.link  # noqa: E402,F401  (imported when the link starts)
from device.services import SERVICES  # noqa: E402

for name in SERVICES:  # the store services the agent installs at start-up
    __import__(name)

gc.collect()
print('{"code_heap": %d, "modules": %d}' % (gc.mem_alloc() - base, len(sys.modules)))
