# Clock port: Unix seconds on every runtime, and whether the time can be trusted yet.
import time

from device import firmware as build
from device.ports import runtime

# Seconds a desktop terminal adds to the OS clock: the stand-in for a board's RTC set wrong (or
# corrected), since a test cannot set the machine's clock. Boards have no environment.
CORRECTION_ENV = "POS_CLOCK_CORRECTION_S"

# Boards whose native epoch is 2000 (most MicroPython ports) count from here.
EPOCH_2000_OFFSET = 946684800
_OFFSET = EPOCH_2000_OFFSET if time.gmtime(0)[0] == 2000 else 0
# The last second gmtime is asked for: 9999-12-31 23:59:59 UTC. Times from the host are any uint
# (member_info vip_exp, a charge_result's VIP period) and gmtime past about 2^55 raises on
# CPython and crashes the MicroPython unix port; a later time is shown as this one.
LATEST_SHOWN = 253402300799

try:
    _ticks_ms = time.ticks_ms
    _ticks_diff = time.ticks_diff
except AttributeError:  # CPython
    def _ticks_ms():
        return int(time.monotonic() * 1000)

    def _ticks_diff(a, b):
        return a - b


def gmtime(unix):
    """time.gmtime of a Unix time on any port (it counts from the port's own epoch); a time
    past LATEST_SHOWN gives that of LATEST_SHOWN."""
    if unix > LATEST_SHOWN:
        unix = LATEST_SHOWN
    return time.gmtime(unix - _OFFSET)


def env_correction():
    """POS_CLOCK_CORRECTION_S as an int; 0 when unset or not an integer."""
    v = runtime.env(CORRECTION_ENV)
    if not v:
        return 0
    try:
        return int(v)
    except ValueError:
        return 0


def ticks_ms():
    return _ticks_ms()


def ticks_diff(a, b):
    return _ticks_diff(a, b)


class Clock:
    """Wall clock in Unix seconds.

    `correction` lets the host (or a technician) fix a wrong RTC without touching the OS clock,
    which the agent may not own; it is added to every reading. Unset, it is the environment's
    POS_CLOCK_CORRECTION_S (desktop only; 0 when absent).
    """

    def __init__(self, build_time=None, correction=None):
        self.build_time = build.BUILD_TIME if build_time is None else build_time
        self.correction = env_correction() if correction is None else correction

    def now(self):
        return int(time.time()) + _OFFSET + self.correction

    def now_f(self):
        return time.time() + _OFFSET + self.correction

    def trusted(self):
        # A clock earlier than the firmware's build cannot be right (RTC lost its battery).
        return self.now() >= self.build_time


class FixedClock(Clock):
    """A clock that reads a set time; for the stateless check command and tests."""

    def __init__(self, t, build_time=None):
        Clock.__init__(self, build_time)
        self.t = t

    def now(self):
        return int(self.t)

    def now_f(self):
        return float(self.t)
