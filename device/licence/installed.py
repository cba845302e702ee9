# The terminal's service licence (SPEC 8.5): the installed licence on flash, its state by the
# licence clock, and the clock's highest time kept with it. One small file, replaced atomically:
#   licence.json  {"text": "PL1:...", "ver", "plan", "exp", "grace", "high", "at"}
# written at every install, when the state changes (so a terminal that saw itself restricted
# stays restricted after a power cut whatever its clock says), when the licence clock has moved
# an hour since the last write, and at shutdown. Nothing is written while no licence was ever
# installed. Once the file exists the state never returns to `none`: only a factory reset
# (which wipes data_dir) does that.
import json

from device.licence import reading, states
from device.licence.clock import LicenceClock
from device.licence.reading import LicenceError
from device.ports.clock import ticks_ms

FILE = "/licence.json"
RETRY_S = 60  # a save that failed (full flash) is tried again after this long, not every read


class InstalledLicence:
    def __init__(self, fs, data_dir, trust, device_id, clock, metrics, log, ticks=ticks_ms):
        """trust: the TrustStore whose root keys sign licences; clock: the terminal's Clock."""
        self.fs = fs
        self.path = data_dir + FILE
        self.trust = trust
        self.device_id = device_id
        self.clock = clock
        self.metrics = metrics
        self.log = log
        self._ticks = ticks
        self.lic = None        # {"ver", "dev", "plan", "exp", "grace"}; exp None: facts lost
        self.text = None
        self.installed_at = None
        self.lclock = None
        self._saved_state = states.NONE
        self._retry_at = 0

    # -- flash ---------------------------------------------------------------------------------
    def open(self):
        raw = self.fs.read(self.path)
        high = 0
        if raw is not None:
            high = self._load(raw)
        self.lclock = LicenceClock(self.clock, high, self._ticks)
        # The state flash stands for; the first read that finds another one writes it.
        self._saved_state = states.state_of(self.lic, self.lclock.high)[0]
        return self

    def _load(self, raw):
        """Takes the file's licence; returns its saved high time."""
        try:
            saved = json.loads(raw)
            if type(saved) is not dict:
                raise ValueError("not an object")
        except ValueError as e:
            # Atomic writes make this unlikely. A licence was installed: restricted, not none,
            # until the host pushes it again (any ver installs over this one).
            self.metrics.inc("licence_damaged")
            self.log("licence file unreadable (%s): restricted until a licence arrives" % e)
            self.lic = {"ver": 0, "dev": self.device_id, "plan": None, "exp": None, "grace": 0}
            return 0
        ver = saved.get("ver")
        ver = ver if type(ver) is int and ver > 0 else 0
        try:
            self.lic = reading.verify(self.trust, reading.parse_text(saved.get("text")),
                                      self.device_id, 0)
            self.text = saved.get("text")
        except LicenceError as e:
            # Verified when installed, not any more (its root was removed, or the file was
            # altered): its ver still bars older licences, but it licenses nothing.
            self.metrics.inc("licence_unverified")
            self.log("installed licence no longer verifies (%s): restricted until a licence "
                     "arrives" % e.code)
            self.lic = {"ver": ver, "dev": self.device_id, "plan": saved.get("plan"),
                        "exp": None, "grace": 0}
        at = saved.get("at")
        self.installed_at = at if type(at) is int else None
        high = saved.get("high")
        return high if type(high) is int and high > 0 else 0

    def _write(self, lic, text, at, high):
        self.fs.write_atomic(self.path, json.dumps({
            "text": text, "ver": lic["ver"], "plan": lic["plan"], "exp": lic["exp"],
            "grace": lic["grace"], "high": high, "at": at}).encode())

    def save(self):
        """Writes the licence clock's time now (at shutdown, and when due). False on failure."""
        if self.lic is None or self.lclock.high <= self.lclock.saved:
            return True
        high = self.lclock.high
        try:
            self._write(self.lic, self.text, self.installed_at, high)
        except OSError as e:
            self.metrics.inc("licence_unsaved")
            self.log("licence clock not saved: %s" % e)
            self._retry_at = high + RETRY_S
            return False
        self.lclock.saved = high
        return True

    # -- installing ----------------------------------------------------------------------------
    def install(self, raw):
        """Installs a licence (COSE bytes) for this terminal newer than the installed one;
        returns its facts. Raises LicenceError (the codes of device/licence/reading.py, and
        `storage` when flash failed: the old licence then stays, in memory and on flash)."""
        # SPEC 8.5: a higher ver than the installed one; with none installed any, 0 too
        ver = self.lic["ver"] if self.lic is not None else -1
        lic = reading.verify(self.trust, raw, self.device_id, ver)
        text = reading.text_of(bytes(raw))
        now = self.lclock.now()
        try:
            self._write(lic, text, now, now)
        except OSError as e:
            raise LicenceError("storage", "cannot save the licence: %s" % e)
        self.lic, self.text, self.installed_at = lic, text, now
        self.lclock.saved = now
        self._saved_state = states.state_of(lic, now)[0]
        return lic

    def install_text(self, text):
        return self.install(reading.parse_text(text))

    # -- state ---------------------------------------------------------------------------------
    def state(self):
        """(state, days) now, by the licence clock; saves its time when that is due."""
        now = self.lclock.now()
        st, days = states.state_of(self.lic, now)
        if self.lic is not None and now >= self._retry_at and (
                st != self._saved_state or self.lclock.save_due()):
            if self.save():
                self._saved_state = st
        return st, days

    def fact(self):
        """`lic` of hello and status: {"st", "exp", "days"}."""
        st, days = self.state()
        return {"st": st, "exp": self.lic["exp"] if self.lic is not None else None,
                "days": days}

    def show(self):
        """What `licence show` tells a technician."""
        st, days = self.state()
        lic = self.lic or {}
        return {"st": st, "days": days, "exp": lic.get("exp"), "ver": lic.get("ver", 0),
                "plan": lic.get("plan"), "grace": lic.get("grace"),
                "installed_at": self.installed_at, "clock": self.lclock.high,
                "clock_behind": self.lclock.behind()}
