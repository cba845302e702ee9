"""Bookings end to end (SPEC 8.4, issue 12 acceptance) on both runtimes: `python -m host_sim
serve` with the bookings service, bookings made with `python -m host_sim bookings`, real
mosquitto, real terminal processes driven through their keypad ptys.

- two terminals, one booking: the online terminal's check-in wins; the other, which checked the
  same customer in offline, sees the conflict once it is back (a notice, and the host's state on
  the `bookings` screen); the host applied one check-in;
- an offline check-in is shown at once, survives a power cut, is shown again after a restart
  with the broker down (with the list, from flash), and is forwarded and applied once when the
  broker is back.
"""
import json
import subprocess
import sys
import time

import pytest

from device.screens import messages
from host_sim.netcut import NetCut
from tests.support.shop import ROOT, STORE
from tests.support.terminal import wait_until


def bookings_cli(shop, *argv):
    out = subprocess.run([sys.executable, "-m", "host_sim", "bookings", "--db", shop.db]
                         + [str(a) for a in argv], cwd=ROOT, check=True, capture_output=True,
                         timeout=30)
    return [json.loads(line) for line in out.stdout.decode().splitlines()]


def book(shop, name, svc, at):
    [b] = bookings_cli(shop, "create", "--store", STORE, "--at", at, "--dur", 1800,
                       "--name", name, "--svc", svc)
    return b


def row(frame, name):
    """The booking's line on a `bookings` frame ("> 10:30 Ann Lee   Haircut booked"), or None."""
    if frame["screen"] != "bookings":
        return None
    for line in frame["lines"]:
        if len(line) > 16 and line[0] in "> +" and line[6] == " " \
                and line[7:16].rstrip() == name[:9]:
            return line
    return None


def state_of(frame, name):
    line = row(frame, name)
    return None if line is None else line.split()[-1]


def show(t, name, state, start, timeout=20):
    """Waits for a `bookings` frame, from frame index `start` on, with the booking in `state`
    ("in*": recorded, not answered yet)."""
    return t.wait_frame(lambda f: state_of(f, name) == state, timeout, start)


def press(t, key, name, state, timeout=20):
    """Presses key; the first frame after it that shows the booking in state."""
    mark = len(t.read_frames())
    t.press(key)
    return show(t, name, state, mark, timeout)


def has_list(t, n, timeout=30):
    return t.wait_status(lambda s: s["bookings"]["items"] == n, timeout)


def ops(shop, bid):
    return [(h["op"], h["who"]) for h in bookings_cli(shop, "history", bid)]


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_two_terminals_one_check_in_wins_the_other_sees_the_conflict(shop, runtime):
    shop.start_host()
    relay = NetCut(shop.broker.port)
    try:
        a = shop.terminal("T-A", runtime)
        b = shop.terminal("T-B", runtime, port=relay.port)
        for t in (a, b):
            t.wait_status(lambda s: s["online"], 30)
        bk = book(shop, "Ann Lee", "Haircut", int(time.time()) + 600)
        for t in (a, b):
            has_list(t, 1)

        relay.cut()
        b.wait_status(lambda s: not s["online"], 20)
        press(b, "F2", "Ann Lee", "booked")
        press(b, "ENTER", "Ann Lee", "in*")    # offline: shown at once, queued

        press(a, "F2", "Ann Lee", "booked")
        mark = len(a.read_frames())
        press(a, "ENTER", "Ann Lee", "in*")
        show(a, "Ann Lee", "in", mark)         # the host's answer: applied
        assert ops(shop, bk["bid"]) == [("create", "host cli"), ("check_in", "T-A")]

        mark = len(b.read_frames())
        relay.restore()
        # B forwards the check-in made on v1: the host answers conflict with the booking now.
        st = b.wait_status(lambda s: s["online"] and s["bookings"]["waiting"] == 0
                           and s["queue"]["pending"] == 0, 30)
        assert st["declined_unseen"] == 1
        f = b.wait_frame(lambda f: f["lines"][0].startswith("CONFLICT x1: ")
                         and f["lines"][0].endswith(" Ann Lee"), 10, mark)
        mark = len(b.read_frames())
        b.press("CANCEL")
        f = b.wait_frame(lambda f: f["screen"] == "idle", 10, mark)
        assert f["lines"][0].startswith("CONFLICT x1: ") and f["lines"][1] == "host: checked in"
        f = press(b, "F2", "Ann Lee", "in")
        assert "CONFLICT: host has checked in" in f["lines"], f
        assert ops(shop, bk["bid"]) == [("create", "host cli"), ("check_in", "T-A")]
        assert shop.host_log().count("booking_update T-B %s check_in v1 -> conflict"
                                     % bk["bid"]) == 1
        assert a.status()["declined_unseen"] == 0
    finally:
        relay.close()


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_offline_check_in_survives_a_restart_with_the_broker_down_and_is_applied_once(
        shop, runtime):
    shop.start_host()
    t = shop.terminal("T-O", runtime)
    t.wait_status(lambda s: s["online"], 30)
    now = int(time.time())
    first = book(shop, "Bo Chen", "Nails", now + 300)
    book(shop, "Cy Dorn", "Massage", now + 3600)
    has_list(t, 2)

    shop.broker.stop()
    t.wait_status(lambda s: not s["online"], 30)
    press(t, "F2", "Bo Chen", "booked")
    press(t, "ENTER", "Bo Chen", "in*")
    t.kill()                                   # power cut right after the commit

    t.start()                                  # the broker is still down
    f = press(t, "F2", "Cy Dorn", "booked")    # the list, from flash
    press(t, "UP", "Bo Chen", "in*")           # the check-in, from the journal
    st = t.status()
    assert st["online"] is False
    assert st["records"] == 1 and st["queue"]["pending"] == 0     # one record, not a charge
    assert st["bookings"] == {"ver": st["bookings"]["ver"], "items": 2, "waiting": 1}
    assert f["lines"][0].startswith(messages.TITLE_BOOKINGS + " 2/2")

    mark = len(t.read_frames())
    shop.broker.start()
    st = t.wait_status(lambda s: s["online"] and s["bookings"]["waiting"] == 0, 60)
    assert st["declined_unseen"] == 0
    show(t, "Bo Chen", "in", mark)
    assert ops(shop, first["bid"]) == [("create", "host cli"), ("check_in", "T-O")]
    assert shop.host_log().count("booking_update T-O %s check_in v1 -> ok"
                                 % first["bid"]) == 1
    # And the host's list says so too: a restart shows the host's state.
    wait_until(lambda: bookings_cli(shop, "list", "--store", STORE)[0]["st"] == "checked_in",
               10)
