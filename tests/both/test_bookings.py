# Bookings on the terminal (SPEC 8.4) on both runtimes: the host's list kept on flash (highest
# ver wins, replays counted), the clerk's actions as queue records shown at once and rebuilt
# from the journal after a restart, the host's answers (ok, conflict, unknown) and the
# `bookings` screen driven through a real Agent's clerk, downlink and queue.
from device import config
from device.agent import Agent
from device.bookings import records
from device.bookings.listing import Listing
from device.bookings.screen import item_line, next_index
from device.metrics import Metrics
from device.ports.clock import FixedClock
from device.ports.storage import PosixFS
from device.screens import messages
from device.screens.clerk import LINE_WIDTH
from device.staff import pins
from protocol import envelope, topics
from protocol import messages as wire
from tests.both.util import tmpdir

DAY = 86400
NOW = 1796810400          # 2026-12-09T10:00:00Z
TODAY = NOW // DAY * DAY  # 00:00 UTC that day
SECRET = b"\xab" * 32
DEV = "T-0300"
SUPER = pins.hash_pin("9753", b"supervisor-salt1", 1000)


class Clock(FixedClock):
    def __init__(self, t=NOW):
        FixedClock.__init__(self, t, build_time=NOW - DAY)


class Quiet:
    def write(self, text):
        pass


def new_agent(d, clock):
    cfg = config.parse({
        "device_id": DEV, "store_id": "S-001", "merchant_id": "M-ACME", "currency": "CNY",
        "secret_hex": "ab" * 32, "root_keys": ["cd" * 32], "data_dir": d + "/data",
        "pins": {"tech": SUPER, "supervisor": SUPER}})
    return Agent(cfg, PosixFS(), clock, log_out=Quiet())


def item(bid, at, name="Ann Lee", svc="Haircut", st="booked", v=1, dur=2700):
    return {"bid": bid, "at": at, "dur": dur, "name": name, "svc": svc, "st": st, "v": v}


DEMO = [item("B1", TODAY + 9 * 3600, "Ann Lee", "Haircut"),           # over by 10:00
        item("B2", TODAY + 10 * 3600 + 1800, "Bo Chen", "Nails"),      # the next one
        item("B3", TODAY + 12 * 3600, "Cy Dorn", "Massage"),
        item("B4", TODAY + DAY + 9 * 3600, "Di Eve", "Colour")]       # tomorrow


class Rig:
    """A real agent (every service installed) on a data dir, fed sealed host messages."""

    def __init__(self, tag=None, d=None, t=NOW):
        self.d = d or tmpdir(tag)
        self.clock = Clock(t)
        self.agent = new_agent(self.d, self.clock)
        self.seq = [1000]

    def restart(self):
        self.agent.queue.log.close()
        r = Rig(d=self.d, t=self.clock.t)
        r.seq = self.seq
        return r

    def down(self, mtype, body):
        self.seq[0] += 1
        data = envelope.seal(SECRET, DEV, mtype, self.seq[0], self.clock.t, body, b"\x01" * 16)
        self.agent.downlink.receive(topics.down("pos/v1", DEV, mtype), data)

    def send_list(self, ver, items):
        self.down("bookings", {"ver": ver, "items": items})

    def key(self, *names):
        out = []
        for n in names:
            out = self.agent.clerk.key(n, self.clock.t)
        return frame(out)

    def screen(self):
        return frame(self.agent.clerk.refresh(self.clock.t))

    def waiting(self):
        """The booking records not answered yet: [(up type, body)]."""
        q = self.agent.queue
        return [q.message(r) for r in q.pending if r["r"] == records.RECORD]

    def answer(self, body):
        self.down("booking_result", body)

    def metric(self, name):
        return self.agent.metrics.get(name)


def frame(actions):
    shows = [a for a in actions if a[0] == "show"]
    assert len(shows) == 1, actions
    assert all(len(line) <= LINE_WIDTH for line in shows[0][2]), shows[0]
    return shows[0][1], shows[0][2]


# -- the list on flash ---------------------------------------------------------------------------
def test_listing_keeps_the_highest_ver_on_flash_and_counts_the_others():
    d = tmpdir("bk-listing")
    m = Metrics()
    lst = Listing(PosixFS(), d, m, lambda t: None).load()
    assert (lst.ver, lst.items) == (0, [])
    assert lst.install({"ver": 3, "items": [DEMO[2], DEMO[0]]})
    assert [it["bid"] for it in lst.items] == ["B1", "B3"]   # sorted by time
    assert not lst.install({"ver": 3, "items": []})            # equal: ignored
    assert not lst.install({"ver": 2, "items": []})            # lower: ignored
    assert m.get("bookings_not_newer") == 2
    again = Listing(PosixFS(), d, Metrics(), lambda t: None).load()
    assert again.ver == 3 and again.items == lst.items
    # An answer's booking replaces an item only with a higher v; a list keeps the newer item.
    assert lst.update(item("B3", DEMO[2]["at"], "Cy Dorn", "Massage", "checked_in", 2))
    assert not lst.update(item("B3", DEMO[2]["at"], "Cy Dorn", "Massage", "booked", 1))
    assert lst.install({"ver": 4, "items": [DEMO[0], DEMO[2], DEMO[1]]})
    assert [(it["bid"], it["st"], it["v"]) for it in lst.items] == [
        ("B1", "booked", 1), ("B2", "booked", 1), ("B3", "checked_in", 2)]
    assert lst.remove("B1") and not lst.remove("B1")
    again = Listing(PosixFS(), d, Metrics(), lambda t: None).load()
    assert again.ver == 4 and [it["bid"] for it in again.items] == ["B2", "B3"]


def test_a_damaged_list_file_starts_empty_and_is_counted():
    d = tmpdir("bk-damaged")
    PosixFS().write_atomic(d + "/bookings.cbor", b"\xa2\x63ver\x01")
    m = Metrics()
    lst = Listing(PosixFS(), d, m, lambda t: None).load()
    assert (lst.ver, lst.items, m.get("bad_bookings_file")) == (0, [], 1)
    PosixFS().write_atomic(d + "/bookings.cbor", b"\xa2\x63ver\x01\x65items\x81\x01")
    lst = Listing(PosixFS(), d, m, lambda t: None).load()
    assert (lst.ver, m.get("bad_bookings_file")) == (0, 2)
    assert lst.install({"ver": 1, "items": [DEMO[0]]})


def test_screen_lines_fit_and_the_next_booking_comes_first():
    assert next_index(DEMO, NOW) == 1                     # B1 ended at 09:45
    assert next_index(DEMO, TODAY + 2 * DAY) == 3          # all over: the last
    assert next_index([], NOW) == 0
    line = item_line(dict(DEMO[1], name="Bartholomew Longname", svc="Manicure deluxe",
                          st="checked_in", local=True), True, NOW // DAY)
    assert line == ">10:30 Bartholom Manicur in*", line
    assert item_line(DEMO[3], False, NOW // DAY).startswith("+09:00 Di Eve ")
    assert len(item_line(dict(DEMO[0], st="cancelled"), False, 0)) <= LINE_WIDTH


# -- the screen through a real agent -------------------------------------------------------------
def test_f2_opens_the_list_next_booking_first_and_the_keys_move():
    r = Rig("bk-screen")
    assert r.key("F2") == ("bookings", [messages.TITLE_BOOKINGS, messages.NO_BOOKING_LIST,
                                        messages.HINT_BACK])
    assert r.key("CANCEL")[0] == "idle"
    r.send_list(5, DEMO)
    screen, lines = r.screen()
    assert screen == "idle" and messages.idle_bookings(2) in lines   # B2, B3 today (B4 later)
    screen, lines = r.key("F2")
    assert screen == "bookings"
    assert lines == ["Bookings 2/4 today",
                     ">10:30 Bo Chen   Nails   booked",
                     " 12:00 Cy Dorn   Massage booked",
                     "+09:00 Di Eve    Colour  booked",
                     "10:30-11:15 Bo Chen",
                     messages.HINT_BOOKINGS]
    assert r.key("UP")[1][:2] == ["Bookings 1/4 today", ">09:00 Ann Lee   Haircut booked"]
    assert r.key("UP")[1][0] == "Bookings 1/4 today"
    assert r.key("DOWN", "DOWN", "DOWN", "DOWN")[1][:2] == ["Bookings 4/4 tomorrow",
                                                            ">09:00 Di Eve    Colour  booked"]
    assert r.key("5")[0] == "bookings"           # no meaning: stays
    assert r.agent.clerk.scan("PC1:X", NOW)[0][1] == "bookings"
    assert r.key("CANCEL")[0] == "idle"
    assert r.waiting() == []


def test_check_in_is_recorded_shown_at_once_and_survives_a_restart():
    r = Rig("bk-checkin")
    r.send_list(5, DEMO)
    r.key("F2")
    screen, lines = r.key("ENTER")
    assert lines[1] == ">10:30 Bo Chen   Nails   in*"
    assert lines[-1] == messages.booking_done("Bo Chen", "check_in", True)
    [(mtype, body)] = r.waiting()
    assert mtype == "booking_update"
    uid = body["uid"]
    assert body == {"uid": uid, "bid": "B2", "op": "check_in", "v": 1, "at": NOW,
                    "clerk": "clerk"} and len(uid) == 16
    wire.check("booking_update", body)
    assert r.agent.status.console_fields()["bookings"] == {"ver": 5, "items": 4, "waiting": 1}
    # A second action on the same booking is refused on the spot: it is no longer booked.
    assert r.key("ENTER")[1][-1] == messages.already("checked_in")
    assert r.key("F3")[1][-1] == messages.already("checked_in")
    assert len(r.waiting()) == 1

    # Power cut: the action comes back from the journal, still shown and still to forward.
    r = r.restart()
    assert r.agent.status.console_fields()["bookings"]["waiting"] == 1
    assert r.key("F2")[1][:2] == ["Bookings 3/4 today", ">12:00 Cy Dorn   Massage booked"]
    assert r.key("UP")[1][1] == ">10:30 Bo Chen   Nails   in*"
    assert [b["uid"] for _, b in r.waiting()] == [uid]

    # The host applies it: the answer's booking replaces the item, the action is done.
    r.answer({"uid": uid, "st": "ok", "booking": dict(DEMO[1], st="checked_in", v=2)})
    assert r.waiting() == [] and r.agent.queue.notices() == []
    assert r.screen()[1][1] == ">10:30 Bo Chen   Nails   in"
    # The same answer again changes nothing; a list from before the change cannot undo it.
    r.answer({"uid": uid, "st": "ok", "booking": dict(DEMO[1], st="checked_in", v=2)})
    r.send_list(6, DEMO)
    assert r.screen()[1][1] == ">10:30 Bo Chen   Nails   in"
    r = r.restart()
    assert r.key("F2")[1][:2] == ["Bookings 3/4 today", ">12:00 Cy Dorn   Massage booked"]
    assert r.key("UP")[1][1] == ">10:30 Bo Chen   Nails   in"
    assert r.agent.status.console_fields()["bookings"] == {"ver": 6, "items": 4, "waiting": 0}


def test_a_conflict_shows_the_hosts_booking_and_a_notice_until_acknowledged():
    r = Rig("bk-conflict")
    r.send_list(5, DEMO)
    r.key("F2", "ENTER")
    [(_, body)] = r.waiting()
    # Another terminal marked the customer a no-show first: the host says so.
    host = dict(DEMO[1], st="no_show", v=2)
    r.answer({"uid": body["uid"], "st": "conflict", "booking": host})
    assert r.waiting() == []
    screen, lines = r.screen()
    assert screen == "bookings"
    assert lines[0] == "CONFLICT x1: 10:30 Bo Chen"          # the notice tops every screen
    assert lines[2] == ">10:30 Bo Chen   Nails   noshow"
    assert lines[-3:-1] == ["CONFLICT: host has no-show", messages.HINT_BOOKINGS]
    screen, lines = r.key("CANCEL")
    assert lines[:2] == ["CONFLICT x1: 10:30 Bo Chen", "host: no-show"]
    # The supervisor sees it in the notices list and acknowledges it.
    roles = r.agent.roles
    assert roles.declined_lines() == ["B2 0.00 conflict"]
    job = roles.print_declined()
    assert b"NOTICES" in job and b"Booking B2" in job and b"conflict" in job
    assert roles.ack_declined() == 1
    assert r.screen()[1][0] != "CONFLICT x1: 10:30 Bo Chen"
    r = r.restart()
    assert r.agent.queue.notices() == []
    r.key("F2", "UP")
    assert r.screen()[1][1:2] == [">10:30 Bo Chen   Nails   noshow"]


def test_cancel_takes_a_reason_digit_and_no_show_is_recorded_any_time():
    r = Rig("bk-cancel")
    r.send_list(5, DEMO)
    r.key("F2")
    screen, lines = r.key("F3")
    assert lines == ["Cancel 10:30 Bo Chen?", "1 customer asked", "2 staff unavailable",
                     "3 store closed", "4 other", messages.HINT_REASON]
    assert r.key("9")[1][0] == "Cancel 10:30 Bo Chen?"      # not a reason
    assert r.key("CANCEL")[0] == "bookings" and r.waiting() == []   # back to the list
    assert r.key("F3", "2")[1][1] == ">10:30 Bo Chen   Nails   cancel*"
    [(_, body)] = r.waiting()
    assert (body["op"], body["reason"]) == ("cancel", "staff_unavailable")
    wire.check("booking_update", body)
    # B3 starts at 12:00: SPEC 8.4 sets no time rule, so F4 records a no-show before it too.
    assert r.clock.t < TODAY + 12 * 3600
    assert r.key("DOWN", "F4")[1][1] == ">12:00 Cy Dorn   Massage noshow*"
    assert [b["op"] for _, b in r.waiting()] == ["cancel", "no_show"]
    assert r.metric("booking_cancel") == 1 and r.metric("booking_no_show") == 1


def test_an_unknown_booking_leaves_the_list_and_an_ok_without_booking_stays_shown():
    r = Rig("bk-unknown")
    r.send_list(5, DEMO)
    r.key("F2", "ENTER", "DOWN", "ENTER")
    (_, b2), (_, b3) = r.waiting()
    r.answer({"uid": b2["uid"], "st": "ok"})                   # no booking in the answer
    r.answer({"uid": b3["uid"], "st": "unknown", "code": "unknown_booking"})
    assert r.waiting() == []
    lines = r.screen()[1]
    assert lines[0] == "UNKNOWN x1: 12:00 Cy Dorn"
    r = r.restart()
    assert [rec["bid"] for _, rec, _ in r.agent.queue.notices()] == ["B3"]
    assert r.key("CANCEL")[1][:2] == ["UNKNOWN x1: 12:00 Cy Dorn", "host has no such booking"]
    lines = r.key("F2")[1]
    assert lines[1] == "Bookings 3/3 tomorrow"                 # B3 is gone; B1 over, B2 done
    assert "Cy Dorn" not in " ".join(lines[1:])
    # Until a list brings the host's new v, the answered check-in stays shown as done.
    assert r.key("UP")[1][2] == ">10:30 Bo Chen   Nails   in"
    r.send_list(6, [DEMO[0], DEMO[1]])                         # v1 still: the action stays
    assert r.screen()[1][2] == ">10:30 Bo Chen   Nails   in"
    r.send_list(7, [DEMO[0], dict(DEMO[1], st="booked", v=3)])  # the host moved on
    assert r.screen()[1][2] == ">10:30 Bo Chen   Nails   booked"
    # and the answered action is forgotten once the list has caught up (the overlay stays small)
    assert r.agent.clerk._screens["bookings"].desk.overlay._local == {}


def test_host_config_false_hides_the_feature():
    r = Rig("bk-off")
    r.send_list(5, DEMO)
    r.key("F2")
    r.down("config", {"bookings": False})
    assert r.screen()[1][-2:] == [messages.BOOKINGS_OFF, messages.HINT_BACK]
    assert r.key("ENTER") == ("idle", r.screen()[1])
    assert r.agent.clerk.message == messages.BOOKINGS_OFF
    assert r.waiting() == []
    assert r.key("F2")[0] == "idle"
    assert messages.idle_bookings(2) not in r.screen()[1]
    # Lists are still kept: on again, they show at once (and after a restart).
    r.send_list(6, DEMO[1:])
    r = r.restart()
    assert r.key("F2")[0] == "idle"
    r.down("config", {"bookings": True})
    assert r.key("F2")[1][0] == "Bookings 1/3 today"


def test_replayed_and_stale_lists_are_counted_not_installed():
    r = Rig("bk-replay")
    r.send_list(5, DEMO)
    r.send_list(5, DEMO[:1])
    r.send_list(4, [])
    assert r.metric("bookings_not_newer") == 2
    assert r.agent.status.console_fields()["bookings"] == {"ver": 5, "items": 4, "waiting": 0}
    # A forged list (bad MAC) and a bad body are dropped by the downlink gate.
    r.seq[0] += 1
    data = envelope.seal(b"\x00" * 32, DEV, "bookings", r.seq[0], NOW,
                         {"ver": 9, "items": []}, b"\x02" * 16)
    r.agent.downlink.receive(topics.down("pos/v1", DEV, "bookings"), data)
    r.send_list(10, [dict(DEMO[0], st="gone")])
    assert r.metric("drop_bad_mac") == 1 and r.metric("drop_bad_body") == 1
    assert r.agent.status.console_fields()["bookings"]["ver"] == 5


def test_far_off_slot_times_from_the_host_are_shown_never_crash():
    # SPEC 7: no input from the broker crashes the agent. An item's `at` is any uint (SPEC 8.4):
    # gmtime of such times overflows on CPython and crashes MicroPython's unix port.
    r = Rig("bk-far")
    far = [item("F1", (1 << 64) - 1, "Far Out", "Later"),
           item("F2", 1 << 63, "Half Way", "Later", dur=(1 << 64) - 1)]
    r.send_list(5, DEMO + far)
    assert r.agent.status.console_fields()["bookings"]["items"] == 6
    r.key("F2")
    screen, lines = r.key("DOWN", "DOWN", "DOWN")
    assert screen == "bookings" and lines[0] == "Bookings 5/6 " + messages.BOOKING_FAR_DAY
    assert lines[1].startswith(">15:30 Half Way")
    screen, lines = r.key("DOWN", "ENTER")
    assert lines[0] == "Bookings 6/6 " + messages.BOOKING_FAR_DAY
    [(_, body)] = r.waiting()
    assert body["bid"] == "F1"
    r.answer({"uid": body["uid"], "st": "conflict", "code": "not_booked",
              "booking": dict(far[0], st="cancelled", v=2)})
    screen, lines = r.screen()
    assert lines[0] == "CONFLICT x1: 07:00 Far Out"
    assert r.key("CANCEL")[1][:2] == ["CONFLICT x1: 07:00 Far Out",
                                      "host: cancelled, not_booked"]
