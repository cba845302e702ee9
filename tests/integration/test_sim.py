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


def test_sim_shows_the_receipt_the_host_and_a_supervisor_acknowledging_a_decline(tmp_path):
    # Issue 17: the whole product visible headless: a sale's receipt as text, the host's line
    # for that charge (declined: the host declines everything here), the notice, the
    # supervisor's PIN and acknowledgement on the keypad, and the technician console.
    steps = ["1", "2", "5", "ENTER", "ENTER", "wait:DECLINED", "CANCEL", "MENU", "9", "7",
             "5", "3", "ENTER", "wait:random_decline", "ENTER", "console:login 2468",
             "console:queue list"]
    p = subprocess.run([sys.executable, "-m", "host_sim.sim", "--headless", "25", "--fresh",
                        "--dir", str(tmp_path / "sim"), "--decline-rate", "1",
                        "--press", ",".join(steps)],
                       cwd=ROOT, capture_output=True, text=True, timeout=90,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    out = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    receipts = [o["receipt"] for o in out if "receipt" in o]
    assert receipts and any(ln.startswith("TOTAL") and ln.endswith("1.25 CNY")
                            for ln in receipts[0]), receipts
    host = [o["host"] for o in out if "host" in o]
    assert host and host[0]["amt"] == 125 and host[0]["status"] == "declined", host
    frames = [o for o in out if "screen" in o]
    assert any(f["screen"] == "committed" and "receipt 000001" in f["lines"] for f in frames)
    assert any(f["screen"] == "declined" for f in frames)
    assert any(f["screen"] == "idle" and "1 decline acknowledged" in f["lines"] for f in frames)
    console = [json.loads(o["console"]) for o in out if "console" in o]
    assert console[0]["role"] == "tech"
    assert console[1]["declined"][0]["acked"] is True and console[1]["declined_unseen"] == 0


def test_render_draws_screen_receipt_host_and_console(capsys):
    from host_sim import sim

    class Args:
        dir = "var/never-used"
        decline_rate = 0.5

    s = sim.Sim(Args())

    class Net:
        mode = "up"

    s.net = Net()
    s.frame = {"screen": "committed", "lines": ["Paid 1.25 CNY", "sent", "receipt 000001"]}
    s.receipt = ["M-ACME", "TOTAL  1.25 CNY"]
    s.charges = [{"device_id": "T-0001", "kind": "sale", "amt": 125, "cur": "CNY",
                  "status": "approved", "auth": "A1B2C3", "conflicts": 1}]
    s.console_reply = '{"ok": true}'
    s.render()
    text = capsys.readouterr().out
    assert "Paid 1.25 CNY" in text and "TOTAL  1.25 CNY" in text
    assert "T-0001 sale 1.25 CNY approved A1B2C3 conflicts=1" in text
    assert "host declines: 50%" in text and 'console: {"ok": true}' in text
