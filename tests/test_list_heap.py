"""Issue 16 point 1, on MicroPython: a revocation list at the maximum a terminal takes
(protocol/limits.py LIST_MAX_BYTES) comes through the MQTT session in the link's 4 KiB reads
and installs within LIST_HEAP (the whole `-X heapsize` of the unix port, imported code
included: docs/bench.md has the measured minimum). Cold, as after a reboot: the verifier builds
its tables during this install too.
"""
import json
import os
import subprocess
import sys

import pytest

from protocol import limits, mqtt
from tests.support.coupons import Key, longest_revocation_list

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICROPYTHON = os.path.join(os.path.dirname(sys.executable), "micropython")
LIST_HEAP = "576K"  # measured: every heapsize from 528K up works (docs/bench.md)


@pytest.mark.parametrize("cti_len,ordered", [(16, False), (16, True), (32, False), (1, False)])
def test_a_list_at_the_maximum_installs_on_a_small_heap(tmp_path, cti_len, ordered):
    root = Key("root")
    cose, ctis = longest_revocation_list(root, 7, cti_len, ordered=ordered)
    assert limits.LIST_MAX_BYTES - 40 < len(cose) <= limits.LIST_MAX_BYTES
    packet = tmp_path / "list.pkt"
    packet.write_bytes(mqtt.publish("pos/v1/fleet/down/revocations", cose, 1, True, 1))
    cfg = {"packet": str(packet), "root": root.pub.hex(), "probe": ctis[len(ctis) // 2].hex()}
    p = subprocess.run([MICROPYTHON, "-X", "heapsize=" + LIST_HEAP, "tests/mp_list_heap.py"],
                       cwd=ROOT, env=dict(os.environ, LIST_HEAP=json.dumps(cfg),
                                          MICROPYPATH=ROOT + ":.frozen"),
                       capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr.decode()[-1500:]
    out = json.loads(p.stdout.decode().splitlines()[-1])
    assert out["ver"] == 7 and out["probe_revoked"] is True
    assert out["revoked"] == len(ctis)
    # what stays: the serials themselves (cti_len bytes each) and little else
    assert out["list_heap"] < len(ctis) * cti_len + 48 * 1024, out
