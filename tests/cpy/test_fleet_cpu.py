"""host_sim/fleet/cpu.py: a process tree's CPU time, counted once whether a child is alive or
reaped (a PostgreSQL backend that closed), and the machine's busy time."""
import os
import subprocess
import sys
import time

from host_sim.fleet import cpu

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"


def test_a_child_counts_in_its_parents_tree_alive_and_reaped():
    me = os.getpid()
    before = cpu.seconds({"tree": [me]})["tree"]
    machine0 = cpu.machine_seconds()
    child = subprocess.Popen([sys.executable, "-c", BURN + "import sys\nsys.stdin.read()\n"],
                             stdin=subprocess.PIPE)
    try:
        for _ in range(200):  # until it has burnt its 0.3 s (alive: its own time)
            alive = cpu.seconds({"tree": [me], "child": [child.pid]})
            if alive["child"] >= 0.3:
                break
            time.sleep(0.02)
        assert alive["child"] >= 0.3
        assert alive["tree"] - before >= 0.3
    finally:
        child.stdin.close()
        child.wait(10)
    reaped = cpu.seconds({"tree": [me], "child": [child.pid]})
    assert reaped["child"] == 0.0  # gone from /proc
    assert reaped["tree"] - before >= 0.3  # in the parent's cutime now, not lost
    assert reaped["tree"] - alive["tree"] < 0.25  # and not counted twice
    assert cpu.machine_seconds() - machine0 >= 0.3


def test_unknown_pids_count_nothing():
    assert cpu.seconds({"none": [2 ** 22 + 12345]}) == {"none": 0.0}


def test_one_process_without_the_table():
    """process_seconds reads one process's stat file (the drain bench polls three this way)."""
    child = subprocess.Popen([sys.executable, "-c", BURN + "import sys\nsys.stdin.read()\n"],
                             stdin=subprocess.PIPE)
    try:
        for _ in range(200):
            own = cpu.process_seconds(child.pid)
            if own >= 0.3:
                break
            time.sleep(0.02)
        assert own >= 0.3
        assert abs(cpu.seconds({"child": [child.pid]})["child"] - own) < 0.1
    finally:
        child.stdin.close()
        child.wait(10)
