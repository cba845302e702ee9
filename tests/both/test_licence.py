# The service licence on the terminal (SPEC 8.5), sans-I/O parts on both runtimes: reading and
# verifying PL1 licences (tests/both/fixtures/licence_cases.json, made by
# `python -m tests.support.licences`), the states at each boundary, the licence clock that a
# clock set back cannot turn back, the installed licence on flash across reopen (and a power
# cut), with the till, screens, console, status and downlink of a whole agent in
# tests/both/test_licence_agent.py.
import json

from device.licence import reading, states
from device.licence.clock import LicenceClock
from device.licence.installed import InstalledLicence
from device.licence.reading import LicenceError
from device.metrics import Metrics
from device.ports.clock import FixedClock
from device.ports.storage import PosixFS
from device.screens import messages
from device.trust.lists import TrustStore
from tests.both.util import raises, tmpdir

_fx = []
DAY = 86400


def fx():
    if not _fx:
        with open("tests/both/fixtures/licence_cases.json") as f:
            _fx.append(json.load(f))
    return _fx[0]


def text(name):
    f = fx()
    return f["licences"][name] if name in f["licences"] else f["malformed"][name]


def raw(name):
    return reading.parse_text(text(name))


def roots(*names):
    return [bytes.fromhex(fx()[n + "_hex"]) for n in (names or ("root", "root_p256"))]


def trust(*names):
    return TrustStore(None, "", roots(*names))


def code(fn, *args):
    return raises(LicenceError, fn, *args).code


class Clock(FixedClock):
    """A wall clock the test sets (t) and may set back; trusted from a day before NOW."""

    def __init__(self, t=None):
        FixedClock.__init__(self, fx()["now"] if t is None else t,
                            build_time=fx()["now"] - 30 * DAY)


class Ticks:
    """Uptime in ms, moved by the test."""

    def __init__(self):
        self.ms = 1000

    def __call__(self):
        return self.ms


# -- reading -------------------------------------------------------------------------------------
def test_licences_verify_under_either_root_with_every_header_form():
    t = trust()
    dev = fx()["device"]
    now = fx()["now"]
    lic = reading.verify(t, raw("ok_v1"), dev)
    assert lic == {"ver": 1, "dev": dev, "plan": "basic", "exp": now + 100 * DAY,
                   "grace": 7 * DAY}
    assert reading.verify(t, raw("p256_root_v6"), dev)["ver"] == 6
    assert reading.verify(t, raw("untagged_extra_keys_v7"), dev)["ver"] == 7
    assert reading.verify(t, raw("kid_unprotected_v8"), dev)["ver"] == 8
    assert reading.verify(t, raw("no_kid_v9"), dev)["ver"] == 9
    assert reading.verify(t, raw("zero_grace_v10"), dev)["grace"] == 0
    # The text form round-trips, and surrounding spaces (a pasted line) are not part of it.
    assert reading.text_of(raw("ok_v1")) == text("ok_v1")
    assert reading.parse_text("  " + text("ok_v1") + " ") == raw("ok_v1")


def test_refusals_in_order_signature_then_payload_then_device_then_ver():
    t = trust()
    dev = fx()["device"]
    assert code(reading.verify, t, raw("other_device_v30"), dev) == "wrong_device"
    assert code(reading.verify, t, raw("ver_zero"), dev) == "rollback"
    assert code(reading.verify, t, raw("ok_v1"), dev, 1) == "rollback"
    assert code(reading.verify, t, raw("ok_v1"), dev, 5) == "rollback"
    assert reading.verify(t, raw("expiring_v2"), dev, 1)["ver"] == 2
    assert code(reading.verify, t, raw("rogue_root_v30"), dev) == "unknown_root"
    # The signature is checked before the device: a rogue licence never says whose it is.
    assert code(reading.verify, t, raw("rogue_other_device_v30"), dev) == "unknown_root"
    assert code(reading.verify, t, raw("forged_root_kid_v30"), dev) == "bad_signature"
    assert code(reading.verify, t, raw("alg_mismatch_v30"), dev) == "bad_signature"
    assert code(reading.verify, t, raw("tampered_v20"), dev) == "bad_signature"
    # A malformed payload is malformed even when it names another device.
    assert code(reading.verify, t, raw("other_device_malformed"), dev) == "malformed"
    # Only the roots provisioned count: the P-256 root's licence without that root.
    assert code(reading.verify, trust("root"), raw("p256_root_v6"), dev) == "unknown_root"


def test_malformed_texts_and_payloads():
    t = trust()
    dev = fx()["device"]
    for name, txt in sorted(fx()["malformed"].items()):
        try:
            data = reading.parse_text(txt)
        except LicenceError as e:
            assert e.code == "malformed", name
            continue
        assert code(reading.verify, t, data, dev) == "malformed", name
    for bad in (None, 7, b"PL1:", ""):
        assert code(reading.parse_text, bad) == "malformed"
    for bad in (b"", bytes(2049), "PL1:", None, [1]):
        assert code(reading.verify, t, bad, dev) == "malformed", bad


# -- states --------------------------------------------------------------------------------------
def test_states_at_every_boundary():
    e = 2000000000
    g = 3 * DAY
    lic = {"exp": e, "grace": g}
    cases = [
        (e - 30 * DAY - 1, "ok", 31), (e - 30 * DAY, "expiring", 30),
        (e - 29 * DAY - 1, "expiring", 30), (e - 29 * DAY, "expiring", 29),
        (e - 7 * DAY, "expiring", 7), (e - DAY - 1, "expiring", 2), (e - DAY, "expiring", 1),
        (e - 1, "expiring", 1), (e, "grace", 3), (e + 1, "grace", 3), (e + DAY, "grace", 2),
        (e + g - 1, "grace", 1), (e + g, "restricted", 0), (e + 400 * DAY, "restricted", 0),
        (e - 1000 * DAY, "ok", 1000),
    ]
    for now, st, days in cases:
        assert states.state_of(lic, now) == (st, days), (now - e, st, days)
    # No grace: restricted the second exp is reached.
    assert states.state_of({"exp": e, "grace": 0}, e - 1) == ("expiring", 1)
    assert states.state_of({"exp": e, "grace": 0}, e) == ("restricted", 0)
    assert states.state_of(None, e) == ("none", None)
    # A licence whose facts are lost is restricted, whatever the time.
    assert states.state_of({"exp": None, "grace": 0}, 0) == ("restricted", None)


def test_idle_reminders_step_at_30_7_and_1_days_and_fit_the_screen():
    steps = {31: 30, 30: 30, 8: 30, 7: 7, 2: 7, 1: 1}
    for days, step in steps.items():
        assert states.reminder_step(days) == step, days
    assert messages.licence_lines("ok", 100, None) == []
    assert messages.licence_lines("none", None, None) == []
    assert messages.licence_lines("expiring", 30, 30) == ["Licence: 30 days left"]
    assert messages.licence_lines("expiring", 7, 7) == ["Licence: 7 days left",
                                                        messages.LICENCE_RENEW_SOON]
    assert messages.licence_lines("expiring", 1, 1) == ["Licence: 1 day left",
                                                        messages.LICENCE_RENEW_NOW]
    assert messages.licence_lines("grace", 2, None) == [messages.LICENCE_EXPIRED,
                                                        "Sales stop in 2 days"]
    assert messages.licence_lines("restricted", 0, None) == [messages.LICENCE_STOPPED,
                                                             messages.LICENCE_RENEW]
    for line in (messages.LICENCE_REFUSED + [messages.LICENCE_RENEW, messages.LICENCE_RENEW_SOON,
                                             messages.LICENCE_RENEW_NOW, messages.LICENCE_EXPIRED,
                                             messages.LICENCE_STOPPED,
                                             "Licence: 30 days left", "Sales stop in 30 days"]):
        assert len(line) <= 32, line


# -- the licence clock ---------------------------------------------------------------------------
def test_licence_clock_follows_the_wall_and_never_goes_back():
    now = fx()["now"]
    c, ticks = Clock(now), Ticks()
    lc = LicenceClock(c, 0, ticks)
    assert lc.now() == now
    c.t, ticks.ms = now + 100, ticks.ms + 100000
    assert lc.now() == now + 100
    # Set back a day: the licence clock goes on from where it was, at the uptime's pace.
    c.t = now + 100 - DAY
    assert lc.now() == now + 100
    ticks.ms += 5500
    assert lc.now() == now + 105 and lc.behind() == DAY + 5
    # The wall catching up (or set right) takes over again.
    c.t = now + 200
    assert lc.now() == now + 200
    # Set forward and back: the highest trusted reading stays.
    c.t = now + 5000
    assert lc.now() == now + 5000
    c.t = now + 300
    assert lc.now() == now + 5000


def test_licence_clock_ignores_an_untrusted_wall_and_rebases_daily():
    now = fx()["now"]
    c, ticks = Clock(now), Ticks()
    lc = LicenceClock(c, now + 50, ticks)  # the high read back from flash is ahead of the wall
    assert lc.now() == now + 50
    # An RTC that lost its battery (before the firmware's build): carried by uptime only.
    c.t = 1000
    ticks.ms += 3000
    assert lc.now() == now + 53
    # Days without a trusted reading: the base moves on once a day, losing under a second.
    for _ in range(3):
        ticks.ms += DAY * 1000 + 400
        lc.now()
    assert now + 53 + 3 * DAY <= lc.now() <= now + 53 + 3 * DAY + 2
    # Nothing on flash and an untrusted wall: the firmware's build time is the floor.
    lc2 = LicenceClock(Clock(1000), 0, Ticks())
    assert lc2.now() == now - 30 * DAY


def test_licence_clock_save_is_due_hourly():
    now = fx()["now"]
    c, ticks = Clock(now), Ticks()
    lc = LicenceClock(c, now, ticks)
    c.t = now + 3599
    lc.now()
    assert not lc.save_due()
    c.t = now + 3600
    lc.now()
    assert lc.save_due()
    lc.saved = lc.high
    assert not lc.save_due()


# -- the installed licence -----------------------------------------------------------------------
class Log:
    def __init__(self):
        self.lines = []

    def __call__(self, text):
        self.lines.append(text)


def installed(d, clock, root_names=("root", "root_p256"), ticks=None):
    return InstalledLicence(PosixFS(), d, trust(*root_names), fx()["device"], clock, Metrics(),
                            Log(), ticks or Ticks()).open()


def saved(d):
    with open(d + "/licence.json") as f:
        return json.load(f)


def test_install_survives_reopen_and_refuses_older_or_foreign_licences():
    d = tmpdir("lic-install")
    now = fx()["now"]
    c = Clock(now)
    lic = installed(d, c)
    assert lic.state() == ("none", None)
    assert lic.fact() == {"st": "none", "exp": None, "days": None}
    lic.state()
    assert not PosixFS().exists(d + "/licence.json")  # nothing kept while never licensed
    assert lic.install(raw("expiring_v2"))["ver"] == 2
    assert lic.fact() == {"st": "expiring", "exp": now + 10 * DAY, "days": 10}
    f = saved(d)
    assert f["text"] == text("expiring_v2") and f["ver"] == 2 and f["high"] == now
    assert (f["exp"], f["grace"], f["plan"], f["at"]) == (now + 10 * DAY, 7 * DAY, "basic", now)
    for name, want in (("ok_v1", "rollback"), ("expiring_v2", "rollback"),
                       ("other_device_v30", "wrong_device"), ("rogue_root_v30", "unknown_root"),
                       ("tampered_v20", "bad_signature")):
        assert code(lic.install, raw(name)) == want, name
    assert saved(d) == f  # a refused licence writes nothing
    assert code(lic.install_text, "PL1:GGW") == "malformed"
    # Restart: the same licence and state; still no rollback.
    lic2 = installed(d, Clock(now))
    assert lic2.fact() == {"st": "expiring", "exp": now + 10 * DAY, "days": 10}
    assert lic2.show()["ver"] == 2 and lic2.show()["plan"] == "basic"
    assert code(lic2.install, raw("ok_v1")) == "rollback"
    assert lic2.install_text(text("renewal_v5"))["ver"] == 5
    assert installed(d, Clock(now)).fact() == {"st": "ok", "exp": now + 365 * DAY, "days": 365}


def test_a_restricted_terminal_stays_restricted_with_its_clock_set_back_across_a_restart():
    d = tmpdir("lic-setback")
    now = fx()["now"]
    c = Clock(now)
    lic = installed(d, c)
    lic.install(raw("grace_v3"))           # exp now - 1 day, grace 2 days
    assert lic.state() == ("grace", 1)
    c.t = now + DAY                         # exp + grace reached
    assert lic.state() == ("restricted", 0)
    assert saved(d)["high"] == now + DAY    # the change of state was written at once
    # Set back two days while running: the licence clock does not go back.
    c.t = now - DAY
    assert lic.state() == ("restricted", 0)
    # Power cut (nothing saved at stop), then a restart with the clock still set back.
    lic2 = installed(d, Clock(now - DAY))
    assert lic2.state() == ("restricted", 0)
    assert lic2.show()["clock"] == now + DAY and lic2.show()["clock_behind"] == 2 * DAY
    # The renewal lifts it.
    lic2.install(raw("renewal_v5"))
    assert lic2.state() == ("ok", 364)  # by the licence clock, a day ahead of the wall


def test_the_clock_is_written_hourly_and_at_stop_so_a_power_cut_costs_under_an_hour():
    d = tmpdir("lic-hourly")
    now = fx()["now"]
    c = Clock(now)
    lic = installed(d, c)
    lic.install(raw("ok_v1"))
    c.t = now + 3599
    lic.state()
    assert saved(d)["high"] == now          # not yet: at most one write an hour
    c.t = now + 3600
    lic.state()
    assert saved(d)["high"] == now + 3600
    c.t = now + 5000
    lic.state()
    assert saved(d)["high"] == now + 3600
    # Power cut now, and the clock set back a day: the licence clock resumes from the last
    # write, 1400 s behind the time it had reached (the documented worst case is an hour).
    assert installed(d, Clock(now - DAY)).show()["clock"] == now + 3600
    # A stop saves what the clock reached.
    assert lic.save() and saved(d)["high"] == now + 5000
    assert installed(d, Clock(now - DAY)).show()["clock"] == now + 5000


def test_never_none_again_once_installed_even_when_the_file_cannot_be_trusted():
    now = fx()["now"]
    # The licence's root removed from the config: it no longer verifies. Its ver still bars
    # older licences, but it licenses nothing.
    d = tmpdir("lic-unverified")
    lic = installed(d, Clock(now))
    lic.install(raw("p256_root_v6"))
    lic2 = installed(d, Clock(now), ("root",))
    assert lic2.fact() == {"st": "restricted", "exp": None, "days": None}
    assert lic2.metrics.get("licence_unverified") == 1
    assert code(lic2.install, raw("renewal_v5")) == "rollback"
    assert lic2.install(raw("untagged_extra_keys_v7"))["ver"] == 7
    assert lic2.state() == ("ok", 100)
    # A damaged file: restricted until any licence arrives.
    d = tmpdir("lic-damaged")
    with open(d + "/licence.json", "w") as f:
        f.write('{"text": "PL1:')
    lic3 = installed(d, Clock(now))
    assert lic3.fact() == {"st": "restricted", "exp": None, "days": None}
    assert lic3.metrics.get("licence_damaged") == 1
    assert lic3.install(raw("ok_v1"))["ver"] == 1
    assert installed(d, Clock(now)).state() == ("ok", 100)


class FullFS(PosixFS):
    """Flash that refuses writes while `full`."""

    def __init__(self):
        self.full = False
        self.writes = 0

    def write_atomic(self, path, data):
        if self.full:
            raise OSError(28, "No space left on device")
        self.writes += 1
        return PosixFS.write_atomic(self, path, data)


def test_full_flash_refuses_the_install_and_keeps_the_old_licence():
    d = tmpdir("lic-full")
    now = fx()["now"]
    fs = FullFS()
    c = Clock(now)
    lic = InstalledLicence(fs, d, trust(), fx()["device"], c, Metrics(), Log(), Ticks()).open()
    lic.install(raw("ok_v1"))
    fs.full = True
    assert code(lic.install, raw("renewal_v5")) == "storage"
    assert lic.show()["ver"] == 1 and saved(d)["ver"] == 1
    # A due save that fails is retried a minute later, not at every read.
    c.t = now + 3600
    lic.state()
    assert lic.metrics.get("licence_unsaved") == 1
    c.t = now + 3630
    lic.state()
    assert lic.metrics.get("licence_unsaved") == 1
    fs.full = False
    c.t = now + 3660
    lic.state()
    assert saved(d)["high"] == now + 3660
    assert lic.install(raw("renewal_v5"))["ver"] == 5


def test_a_state_reached_while_off_is_written_at_the_first_read_and_nothing_else_at_start():
    d = tmpdir("lic-boot")
    now = fx()["now"]
    lic = installed(d, Clock(now))
    lic.install(raw("grace_v3"))           # grace until now + 1 day
    before = saved(d)
    # Restarts within the same state write nothing.
    again = installed(d, Clock(now + 10))
    assert saved(d) == before
    assert again.state() == ("grace", 1) and saved(d) == before
    # Off for two days: restricted by the clock at start, and written at the first read, so a
    # power cut and a clock set back after that cannot bring grace back.
    later = installed(d, Clock(now + 2 * DAY))
    assert saved(d) == before
    assert later.state() == ("restricted", 0)
    assert saved(d)["high"] == now + 2 * DAY
    assert installed(d, Clock(now)).state() == ("restricted", 0)
