# PINs (SPEC 5.2) and the roles on the terminal: hashing and checking, the lockout (also across a
# restart), the supervisor's declined-charges menu and the clerk login on the clerk screens.
import json

from device import config
from device.agent import Agent
from device.ports.clock import FixedClock
from device.ports.storage import PosixFS
from device.sales.queue import QueueError
from device.sales.sale import make_sale
from device.screens import messages
from device.screens.clerk import Clerk
from device.staff import pins
from device.staff.pins import Lockout, PinError
from tests.both.util import raises, tmpdir

NOW = 1795400000
TECH = pins.hash_pin("2468", b"tech-salt-000001", 1000)
SUPER = pins.hash_pin("9753", b"supervisor-salt1", 1000)
CLERK = pins.hash_pin("1111", b"clerk-salt-00001", 1000)


class Clock(FixedClock):
    def __init__(self, t=NOW):
        FixedClock.__init__(self, t, build_time=NOW - 86400)


def agent(tag, pin_map=None, d=None, clock=None):
    d = d or tmpdir(tag)
    cfg = config.parse({
        "device_id": "T-0200", "store_id": "S-001", "merchant_id": "M-ACME", "currency": "CNY",
        "secret_hex": "ab" * 32, "root_keys": ["cd" * 32], "data_dir": d + "/data",
        "pins": pin_map if pin_map is not None else {"tech": TECH, "supervisor": SUPER}})
    a = Agent(cfg, PosixFS(), clock or Clock())
    a.log_out = _Quiet()
    return a


class _Quiet:
    def write(self, text):
        pass


# -- hashing -------------------------------------------------------------------------------------
def test_rfc7914_pbkdf2_vector_verifies():
    # RFC 7914 section 11: PBKDF2-HMAC-SHA256, P="passwd", S="salt", c=1 (first 32 bytes)
    stored = ("pbkdf2-sha256$1$73616c74$"
              "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc")
    assert pins.verify_pin(stored, "passwd")
    assert not pins.verify_pin(stored, "passwe")
    assert pins.hash_pin("passwd", b"salt", 1) == stored


def test_hash_round_trip_and_config_accepts_it():
    h = pins.hash_pin("0042", b"\x00\x01\x02\x03", 2000)
    assert h.startswith("pbkdf2-sha256$2000$00010203$")
    assert config.check_pin_hash(h, "pins.tech") == h
    assert pins.verify_pin(h, "0042") and not pins.verify_pin(h, "0043")
    assert not pins.verify_pin(h, "00420")


def test_bad_hashes_and_pins_are_named():
    for bad in ("", "sha1$1$00$" + "11" * 32, "pbkdf2-sha256$0$00$" + "11" * 32,
                "pbkdf2-sha256$x$00$" + "11" * 32, "pbkdf2-sha256$1$$" + "11" * 32,
                "pbkdf2-sha256$1$zz$" + "11" * 32, "pbkdf2-sha256$1$00$" + "11" * 31,
                "pbkdf2-sha256$1$00", None, 7):
        assert raises(PinError, pins.parse_hash, bad).code == "bad_hash", bad
    for bad in ("", "1" * 33, "12 34", "12\n", "\u00e91", None, 1234):
        assert raises(PinError, pins.check_pin_text, bad).code == "bad_pin", bad
    assert pins.check_pin_text("1" * 32) == "1" * 32


# -- lockout -------------------------------------------------------------------------------------
def test_five_wrong_pins_lock_for_300_s_and_the_lock_survives_a_restart():
    d = tmpdir("lockout")
    clock = Clock()
    lk = Lockout(PosixFS(), d + "/lock.json", clock).open()
    for i in range(4):
        assert pins.check({"tech": TECH}, "tech", "0000", lk) == pins.WRONG
        assert lk.attempts_left() == 4 - i and lk.locked_for() == 0
    assert pins.check({"tech": TECH}, "tech", "0000", lk) == pins.WRONG
    assert lk.locked_for() == 300
    # Locked: even the right PIN is not tried.
    assert pins.check({"tech": TECH}, "tech", "2468", lk) == pins.LOCKED
    clock.t += 100
    # A restart (a new object on the same file) is still locked, for what is left.
    lk2 = Lockout(PosixFS(), d + "/lock.json", clock).open()
    assert lk2.locked_for() == 200
    assert pins.check({"tech": TECH}, "tech", "2468", lk2) == pins.LOCKED
    clock.t += 200
    assert lk2.locked_for() == 0
    assert pins.check({"tech": TECH}, "tech", "2468", lk2) == pins.OK
    assert Lockout(PosixFS(), d + "/lock.json", clock).open().attempts_left() == 5


def test_failures_short_of_the_lock_survive_a_restart_too():
    d = tmpdir("lockout-count")
    clock = Clock()
    lk = Lockout(PosixFS(), d + "/lock.json", clock).open()
    for _ in range(4):
        lk.failed()
    lk = Lockout(PosixFS(), d + "/lock.json", clock).open()
    assert lk.attempts_left() == 1
    assert lk.failed() == 300 and lk.locked_for() == 300


def test_clock_going_back_never_lengthens_the_lock():
    d = tmpdir("lockout-clock")
    clock = Clock()
    lk = Lockout(PosixFS(), d + "/lock.json", clock).open()
    for _ in range(5):
        lk.failed()
    clock.t -= 86400 * 365  # RTC battery swapped: a year earlier
    assert lk.locked_for() == 300
    clock.t += 300
    assert lk.locked_for() == 0


def test_unreadable_lock_file_locks():
    d = tmpdir("lockout-bad")
    PosixFS().write_atomic(d + "/lock.json", b"{not json")
    lk = Lockout(PosixFS(), d + "/lock.json", Clock()).open()
    assert lk.locked_for() == 300
    PosixFS().write_atomic(d + "/lock.json", b'{"failures": -1, "until": 0}')
    assert Lockout(PosixFS(), d + "/lock.json", Clock()).open().locked_for() == 300


def test_no_pin_and_broken_hash_are_not_failures():
    lk = Lockout(PosixFS(), tmpdir("lockout-none") + "/lock.json", Clock()).open()
    assert pins.check({}, "tech", "1234", lk) == pins.NO_PIN
    assert pins.check({"tech": "garbage"}, "tech", "1234", lk) == pins.NO_PIN
    assert pins.check({"tech": TECH}, "tech", "12 34", lk) == pins.WRONG
    assert lk.attempts_left() == 4


# -- supervisor and clerk ------------------------------------------------------------------------
def _declined(a, n, amt=1234, code="insufficient_funds"):
    cid = bytes([n]) * 16
    a.queue.commit(make_sale(cid, a.queue.take_receipt_no(), amt, [], "CNY", NOW, True, "clerk"))
    a.queue.on_result({"cid": cid, "st": "declined", "code": code, "cpn": []}, NOW + 5)
    return cid


def test_supervisor_acknowledges_and_prints_declines():
    a = agent("sup-ack")
    sup = a.roles
    assert sup.declined_lines() == [] and sup.print_declined() is None
    _declined(a, 1, 1234)
    _declined(a, 2, 500, "card_blocked")
    assert sup.declined_lines() == ["000001 12.34 insufficient_funds", "000002 5.00 card_blocked"]
    job = sup.print_declined()
    assert job.startswith(b"\x1b@") and b"DECLINED CHARGES" in job and b"card_blocked" in job
    assert b"2 declined" in job and b"17.34 CNY" in job and job.endswith(b"\x1dVB\x00")
    assert sup.check_pin("supervisor", "0000") == pins.WRONG
    assert sup.check_pin("supervisor", "9753") == pins.OK
    assert sup.check_pin("clerk", "1111") == pins.NO_PIN
    assert sup.ack_declined() == 2
    assert sup.declined_lines() == [] and a.queue.unacked == []
    # Durable: the acks are in the journal.
    b = agent("sup-ack", d=a.data_dir[:-5])
    assert b.queue.unacked == [] and len(b.queue.resolved) == 2
    raises(QueueError, b.queue.acknowledge, bytes([1]) * 16, "x", NOW)


def test_clerk_ids():
    a = agent("clerk-ids", {"tech": TECH, "supervisor": SUPER})
    sup = a.roles
    assert not sup.clerk_login_required() and sup.clerk_id() == "clerk"
    a.settings.apply({"pins": {"clerk": CLERK}})  # as a host `config` sets it
    assert sup.clerk_login_required()
    assert sup.clerk_login("0000") == pins.WRONG and sup.clerk_login_required()
    assert sup.clerk_login("1111") == pins.OK
    cid = sup.clerk_id()
    assert cid.startswith("clerk-") and len(cid) == 10 and not sup.clerk_login_required()
    sup.clerk_logout()
    assert sup.clerk_login_required()
    assert sup.clerk_login("9753") == pins.OK and sup.clerk_id().startswith("supervisor-")
    # The id follows the credential: a rotated clerk PIN gives another id.
    a.settings.apply({"pins": {"clerk": pins.hash_pin("1111", b"another-salt-002", 1000)}})
    sup.clerk_logout()
    assert sup.clerk_login("1111") == pins.OK and sup.clerk_id() != cid


def test_keypad_lockout_is_shared_by_roles_and_persisted():
    d = tmpdir("keypad-lock")
    clock = Clock()
    a = agent("keypad-lock", {"tech": TECH, "supervisor": SUPER, "clerk": CLERK}, d, clock)
    sup = a.roles
    for _ in range(3):
        assert sup.clerk_login("0000") == pins.WRONG
    assert sup.check_pin("supervisor", "0000") == pins.WRONG
    assert sup.check_pin("supervisor", "0001") == pins.WRONG
    assert sup.check_pin("supervisor", "9753") == pins.LOCKED
    sup2 = agent("keypad-lock", {"tech": TECH, "supervisor": SUPER, "clerk": CLERK},
                 d, clock).roles
    assert sup2.clerk_login("1111") == pins.LOCKED
    clock.t += 300
    assert sup2.clerk_login("1111") == pins.OK




def keys(clerk, names, now=NOW):
    out = []
    for k in names:
        out = clerk.key(k, now)
    return out


def test_supervisor_menu_on_the_clerk_screens():
    a = agent("menu")
    clerk = Clerk(a.till, a.roles, currency="CNY")
    assert clerk.screen == "idle"
    _declined(a, 1, 1234)
    shown = clerk.refresh(NOW)[0]
    assert shown[2][0].startswith("DECLINED x1")
    # MENU -> pin screen, digits masked; the notice stays on top.
    act = keys(clerk, ["MENU", "9", "7"])
    assert act[0][1] == "pin" and act[0][2][0].startswith("DECLINED x1")
    assert "PIN **" in act[0][2] and not any("97" in line for line in act[0][2])
    act = keys(clerk, ["ENTER"])
    assert act[0][1] == "pin" and act[0][2][-1] == messages.WRONG_PIN
    act = keys(clerk, ["9", "7", "5", "3", "ENTER"])
    assert act[0][1] == "declined"
    assert "000001 12.34 insufficient_funds" in act[0][2]
    act = keys(clerk, ["F1"])
    assert act[0][1] == "declined" and act[0][2][-1] == messages.PRINTED
    assert act[1][0] == "print" and b"DECLINED CHARGES" in act[1][1]
    act = keys(clerk, ["ENTER"])
    assert act[0][1] == "idle" and act[0][2][-1] == messages.acknowledged(1)
    assert not any(line.startswith("DECLINED") for line in act[0][2])
    assert a.queue.unacked == []


def test_supervisor_menu_cancel_and_timeout_keep_the_notice():
    a = agent("menu-cancel")
    clerk = Clerk(a.till, a.roles, currency="CNY", menu_timeout_s=30)
    _declined(a, 1)
    assert keys(clerk, ["MENU", "CANCEL"])[0][1] == "idle"
    keys(clerk, ["MENU", "9", "7", "5", "3", "ENTER"])
    assert clerk.screen == "declined"
    assert clerk.tick(NOW + 29) == [] and clerk.screen == "declined"
    act = clerk.tick(NOW + 30)
    assert act[0][1] == "idle" and act[0][2][0].startswith("DECLINED x1")
    assert len(a.queue.unacked) == 1


def test_clerk_login_and_clerk_id_on_the_charge():
    a = agent("clerk-login", {"tech": TECH, "supervisor": SUPER, "clerk": CLERK})
    clerk = Clerk(a.till, a.roles, currency="CNY")
    assert clerk.screen == "login"
    act = clerk.scan("PC1:ANY", NOW)
    assert act[0][1] == "login" and act[0][2][-1] == messages.LOG_IN_FIRST
    act = keys(clerk, ["5", "ENTER"])
    assert act[0][1] == "login" and act[0][2][-1] == messages.WRONG_PIN
    act = keys(clerk, ["1", "1", "1", "1", "ENTER"])
    assert act[0][1] == "idle" and act[0][2][-1] == messages.LOGGED_IN
    act = keys(clerk, ["2", "5", "0", "ENTER", "ENTER"])
    assert act[-1][1] == "committed"
    rec = a.queue.pending[-1]
    assert rec["amt"] == 250 and rec["clerk"] == a.roles.clerk_id()
    assert rec["clerk"].startswith("clerk-")
    keys(clerk, ["ENTER"])  # back to idle
    act = keys(clerk, ["F4"])
    assert act[0][1] == "login" and act[0][2][-1] == messages.LOGGED_OUT
    # MENU from the login screen still reaches the supervisor menu.
    assert keys(clerk, ["MENU"])[0][1] == "pin"
    assert keys(clerk, ["CANCEL"])[0][1] == "login"


def test_no_clerk_pin_means_no_login_and_the_anonymous_clerk():
    a = agent("clerk-none")
    clerk = Clerk(a.till, a.roles, currency="CNY")
    assert clerk.screen == "idle"
    keys(clerk, ["1", "0", "0", "ENTER", "ENTER"])
    assert a.queue.pending[-1]["clerk"] == "clerk"
    # The host sets a clerk PIN: the next redraw asks for a login.
    a.settings.apply({"pins": {"clerk": CLERK}})
    keys(clerk, ["ENTER"])
    assert clerk.refresh(NOW)[0][1] == "login"


def test_pin_screens_are_masked_and_bounded():
    a = agent("mask", {"tech": TECH, "supervisor": SUPER, "clerk": CLERK})
    clerk = Clerk(a.till, a.roles, currency="CNY")
    act = keys(clerk, ["1"] * 20)
    assert act[0][2][1] == "PIN " + "*" * 12
    act = keys(clerk, ["CLEAR"])
    assert act[0][2][1] == "PIN " + "*" * 11
    act = keys(clerk, ["CANCEL"])
    assert act[0][2][1] == "PIN "
    assert json.dumps(act)  # frames stay plain text
