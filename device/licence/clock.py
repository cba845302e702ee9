# The licence clock: the terminal's time as the licence sees it, which a clock set back cannot
# turn back. It is the later of the wall clock (when trusted: not before the firmware's build)
# and its own last reading carried forward by the uptime since then, so it never goes backwards
# and never runs slower than real time while the terminal is on. Its highest reading, `high`, is
# a lower bound on the true time; the installed licence's file keeps it (device/licence/
# installed.py) so a restart resumes from it: a clock set back across a power cut gains at most
# what was not written yet (docs/decisions.md: at most an hour).
from device.ports.clock import ticks_diff, ticks_ms

SAVE_EVERY_S = 3600
# Carried forward without a trusted reading, the base moves on once a day: MicroPython's ticks
# wrap after about 6 days, and each move drops under a second.
REBASE_S = 86400


class LicenceClock:
    def __init__(self, clock, high=0, ticks=ticks_ms):
        """clock: the terminal's Clock (now(), trusted(), build_time); high: the highest time
        read before (from flash), 0 when none."""
        self.clock = clock
        self._ticks = ticks
        self.high = high if high > clock.build_time else clock.build_time
        self.saved = high  # what flash holds
        self._base = self.high
        self._base_ms = ticks()

    def now(self):
        ms = self._ticks()
        run = ticks_diff(ms, self._base_ms) // 1000
        if run < 0:
            run = 0
        carried = self._base + run
        t = self.clock.now()
        if t >= carried and self.clock.trusted():
            self._base, self._base_ms = t, ms
            carried = t
        elif run >= REBASE_S:
            self._base, self._base_ms = carried, ms
        if carried > self.high:
            self.high = carried
        return self.high

    def behind(self):
        """Seconds the wall clock reads behind the licence clock (0 when it does not)."""
        d = self.high - self.clock.now()
        return d if d > 0 else 0

    def save_due(self):
        return self.high - self.saved >= SAVE_EVERY_S
