"""SPEC 5: the display writes one line per frame, and every key or scan is answered by a frame,
even one that repeats the last (a second unreadable code; a second coupon with the same
verdict). Only the idle screen's once-a-second redraw skips a repeat. A real terminal process
on pseudo-terminals, both runtimes."""
import time

import pytest

from device.screens import messages
from tests.support.terminal import wait_until


def _answers(t, mark, n, timeout=10):
    return wait_until(lambda: (lambda fs: fs if len(fs) >= n else None)(t.read_frames()[mark:]),
                      timeout, t.tail)


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_every_scan_and_key_gets_its_frame_even_a_repeat(shop, runtime):
    t = shop.terminal("T-F", runtime)
    t.wait_status(lambda s: s["online"])
    t.wait_frame(lambda f: f["screen"] == "idle" and "online" in f["lines"])
    time.sleep(1.5)  # the idle redraws settle: from here they repeat and are skipped
    mark = len(t.read_frames())
    t.scanner.write(b"\x01\x02\r\n")
    _answers(t, mark, 1)
    t.scanner.write(b"\x01\x02\r\n")
    frames = _answers(t, mark, 2)
    assert [messages.UNREADABLE in f["lines"] for f in frames[:2]] == [True, True], frames
    assert frames[0]["lines"] == frames[1]["lines"]
    t.open_sale(500)
    mark = len(t.read_frames())
    for _ in range(3):
        t.press("CLEAR")  # nothing to clear on a fresh sale: the same frame, answered each time
        time.sleep(0.1)
    frames = _answers(t, mark, 3)
    assert [f["screen"] for f in frames[:3]] == ["sale"] * 3, frames
    t.press("CANCEL")
