# A signed list at the maximum size through the device's own code on a small heap, for
# tests/test_list_heap.py and `make bench` (docs/bench.md): the PUBLISH as the broker sends it
# goes through the MQTT session in the link's 4 KiB reads, then the trust store installs it.
#
#   LIST_HEAP='{"packet": path, "root": hex, "probe": hex, "warm": path|null, "room": n|null}' \
#       micropython -X heapsize=N tests/mp_list_heap.py
# warm: a small list installed first, as on a running terminal (the root key's tables built);
# room: ballast then leaves only this many bytes of heap free for receiving and installing.
# Prints one JSON line: {"ver", "revoked", "probe_revoked", "code_heap", "list_heap"}.
import gc
import json
import os

from device.trust.lists import TrustStore
from protocol import mqtt
from protocol.mqtt_session import Session

cfg = json.loads(os.getenv("LIST_HEAP"))
gc.collect()
code_heap = gc.mem_alloc()  # what the imported modules hold (bytecode, tables)
store = TrustStore(None, None, [bytes.fromhex(cfg["root"])])
session = Session("T-HEAP", 30, False)
session.connect(0)
session.data_to_send()
session.receive(mqtt.connack(False, 0), 0)


def receive(path):
    ver = None
    with open(path, "rb") as f:
        while True:
            chunk = f.read(4096)  # as the link reads: a new 4 KiB bytes object each time
            if not chunk:
                break
            events = session.receive(chunk, 0)
            chunk = None
            for ev in events:
                if ev[0] == "message":
                    ver = store.install_revocations(ev[2])
            events = ev = None  # the link keeps nothing of a chunk once it is handled
    return ver


def ballast(room):
    gc.collect()
    held = []
    size = 65536
    while size >= 16:
        while gc.mem_free() - size - 64 > room:
            try:
                held.append(bytearray(size))
            except MemoryError:
                break
        size //= 2
    return held


if cfg.get("warm"):
    receive(cfg["warm"])
held = ballast(cfg["room"]) if cfg.get("room") else None
ver = receive(cfg["packet"])
held = None
gc.collect()
print(json.dumps({"ver": ver, "revoked": store.revoked_count(), "code_heap": code_heap,
                  "probe_revoked": store.is_revoked(bytes.fromhex(cfg["probe"]), "-"),
                  "list_heap": gc.mem_alloc() - code_heap}))
