"""`make sim` brings everything up, shows the idle screen within seconds, and leaves nothing."""
import json
import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _children_of(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout
    return [int(x) for x in out.split()]


@pytest.mark.parametrize("broker", ["auto", "amqtt"])
def test_sim_headless_shows_idle_online_demo_bookings_and_cleans_up(tmp_path, broker):
    start = time.monotonic()
    cmd = [sys.executable, "-m", "host_sim.sim", "--headless", "15", "--fresh", "--broker",
           broker, "--dir", str(tmp_path / "sim"), "--press", "F2"]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    first_idle = online = booked = None
    kids = []
    for line in p.stdout:
        if not kids:
            kids = _children_of(p.pid)
        if not line.startswith("{"):
            continue
        frame = json.loads(line)
        if frame["screen"] == "idle" and first_idle is None:
            first_idle = time.monotonic() - start
        if frame["screen"] == "idle" and "online" in frame["lines"] and online is None:
            online = time.monotonic() - start
        # F2, typed once online, opens today's demo bookings (the next one first).
        if frame["screen"] == "bookings" and any("Bo Chen" in x for x in frame["lines"]):
            booked = frame["lines"]
            break
    p.terminate()
    p.wait(30)
    assert first_idle is not None and first_idle < 15, first_idle
    assert online is not None and online < 20, online
    assert booked is not None and booked[0].startswith("Bookings "), booked
    assert kids, "the sim started no processes?"
    time.sleep(0.5)
    alive = [k for k in kids if os.path.exists("/proc/%d" % k)
             and "zombie" not in open("/proc/%d/status" % k).read()]
    assert alive == [], "left behind: %r" % alive


def test_keys_typed_ahead_are_split():
    from host_sim.sim import split_keys
    assert split_keys("1250\r") == ["1", "2", "5", "0", "\r"]
    assert split_keys("\x1b[A9\x1bOP\x1b[11~c") == ["\x1b[A", "9", "\x1bOP", "\x1b[11~", "c"]
    assert split_keys("\x1b") == ["\x1b"]


def test_demo_member_card_and_app_codes(tmp_path):
    """The sim's demo member: made once with a balance; `k` scans its card and `a` a fresh app
    code, both verifying on the terminal's verifier against the sim's trust list."""
    import argparse
    import tty

    from device.members.verifier import MemberVerifier
    from device.trust import lists as trust
    from host_sim import sim

    s = sim.Sim(argparse.Namespace(dir=str(tmp_path / "sim"), fresh=False))
    os.makedirs(s.dir)
    root_key, trust_path = s._issuer()
    db = os.path.join(s.dir, "host.db")
    s.demo_member(db)
    s.demo_member(db)  # a restart of the sim keeps the member as it is
    [shown] = s.members("show", sim.DEMO_MEMBER)
    assert shown["member"]["bal"] == sim.DEMO_BALANCE and shown["member"]["tier"] == "gold"
    store = trust.TrustStore(None, None, [bytes.fromhex(root_key)])
    with open(trust_path) as f:
        store.install_text(f.read().strip(), trust.TRUST)
    v = MemberVerifier(store)
    m, sl = os.openpty()
    tty.setraw(sl)
    s.ptys["scanner"] = (m, sl, os.ttyname(sl))
    try:
        scans = []
        for key in ("k", "a", "a"):
            assert s.key(key)
            scans.append(os.read(sl, 4096).decode().strip())
    finally:
        os.close(m)
        os.close(sl)
    now = int(time.time())
    card, code1, code2 = [v.check(x, now) for x in scans]
    assert (card["verdict"], card["mid"], card["dynamic"]) == ("ok", sim.DEMO_MEMBER, False)
    assert card["cti"] == bytes.fromhex(shown["member"]["card_cti"])
    for code in (code1, code2):
        assert (code["verdict"], code["mid"], code["dynamic"]) == ("ok", sim.DEMO_MEMBER, True)
    assert code1["cti"] != code2["cti"]
    assert "k=scan the member card" in sim.HELP
