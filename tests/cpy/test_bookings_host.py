# Bookings on the host (SPEC 8.4; host_sim/bookings.py, bookings_cli.py) on both engines (SQLite
# file, PostgreSQL database: the conftest's host_db): optimistic concurrency on `v`, a repeated
# uid answered from its stored answer, the rules (booked only, no-show at any time, late
# cancellations with a reason and flagged), the history, the store's list (today and tomorrow,
# ver bumped on every change, pushed through the outbox to the store's terminals only), the
# day roll-over, two workers deciding one booking at once, and the command line.
import io
import json
import threading
from contextlib import redirect_stderr, redirect_stdout

import pytest

from host_sim import bookings, bookings_cli, service
from host_sim.bookings import CUTOFF_S, DAY, BookingError, Bookings
from host_sim.registry import Registry
from host_sim.service import Context, Msg
from host_sim.store import open_store
from protocol import messages
from protocol.store_messages import MAX_BOOKINGS

NOW = 1796810400          # 2026-12-09T10:00:00Z
TODAY = NOW // DAY * DAY
SLOT = TODAY + 12 * 3600  # 12:00 today


@pytest.fixture
def db(host_db):
    store = open_store(host_db)
    reg = Registry(store)
    for dev, shop in (("T-A", "S-001"), ("T-B", "S-001"), ("T-C", "S-002")):
        reg.register(dev, shop, "M-ACME")
    store.schema(bookings.SCHEMA)
    store.schema(service.OUTBOX_SCHEMA)
    yield host_db, store
    store.close()


def svc_of(store, logs=None):
    return Bookings(Context(store, clock=lambda: NOW, log=None if logs is None else logs.append))


def new_booking(store, at=SLOT, name="Ann Lee", svc="Haircut", shop="S-001", now=NOW):
    with store.transaction() as tx:
        return bookings.create(tx, shop, at, 2700, name, svc, now)


def outbox(store):
    with store.transaction() as tx:
        return service.take_outbox(tx, 1000)


def uid(n):
    return bytes([n]) * 16


def update(store, dev, bid, op, v, n, at=NOW, now=NOW, reason=None, shop="S-001", svc=None):
    body = {"uid": uid(n), "bid": bid, "op": op, "v": v, "at": at, "clerk": "clerk-0a1b"}
    if reason is not None:
        body["reason"] = reason
    messages.check("booking_update", body)
    with store.transaction() as tx:
        [out] = (svc or svc_of(store)).booking_update(
            tx, Msg(dev, shop, "booking_update", body, 1, now))
    assert (out.device_id, out.mtype) == (dev, "booking_result")
    messages.check("booking_result", out.body)
    return out.body


def hist(store, bid):
    with store.read() as tx:
        return bookings.history(tx, bid)


def row(store, bid):
    with store.read() as tx:
        return bookings.booking(tx, bid)


def lists(pushed):
    """{device: [list ver, ...]} of the `bookings` pushes taken from the outbox."""
    out = {}
    for dev, mtype, body in pushed:
        assert mtype == "bookings"
        messages.check("bookings", body)
        out.setdefault(dev, []).append(body["ver"])
    return out


def test_create_announces_the_list_to_the_stores_terminals_only(db):
    _, store = db
    b = new_booking(store)
    assert (b["st"], b["v"], b["review"]) == ("booked", 1, False)
    assert b["bid"].startswith("B") and len(b["bid"]) == 9
    pushed = outbox(store)
    assert lists(pushed) == {"T-A": [2], "T-B": [2]}
    assert pushed[0][2]["items"] == [bookings.wire_item(b)]
    [h] = hist(store, b["bid"])
    assert (h["op"], h["st"], h["v"], h["who"], h["clerk"], h["why"]) == (
        "create", "booked", 1, "host cli", None, None)
    with store.transaction() as tx:
        with pytest.raises(BookingError, match="bad_name"):
            bookings.create(tx, "S-001", SLOT, 60, "", "x", NOW)
        with pytest.raises(BookingError, match="bad_dur"):
            bookings.create(tx, "S-001", SLOT, 0, "Bo", "x", NOW)
        with pytest.raises(BookingError, match="exists"):
            bookings.create(tx, "S-001", SLOT, 60, "Bo", "x", NOW, bid=b["bid"])


def test_one_check_in_wins_the_other_sees_the_booking_as_it_is(db):
    _, store = db
    b = new_booking(store)
    outbox(store)
    logs = []
    svc = svc_of(store, logs)
    first = update(store, "T-A", b["bid"], "check_in", 1, 1, svc=svc)
    now = dict(bookings.wire_item(b), st="checked_in", v=2)
    assert first == {"uid": uid(1), "st": "ok", "booking": now}
    assert lists(outbox(store)) == {"T-A": [3], "T-B": [3]}
    # T-B saw v 1 too: its check-in is a conflict carrying the booking as it is now.
    second = update(store, "T-B", b["bid"], "check_in", 1, 2, svc=svc)
    assert second == {"uid": uid(2), "st": "conflict", "booking": now}
    assert outbox(store) == [] and row(store, b["bid"])["v"] == 2
    # Repeats get the stored answer (never a second change, never a conflict with itself).
    assert update(store, "T-A", b["bid"], "check_in", 1, 1) == first
    assert update(store, "T-B", b["bid"], "check_in", 1, 2) == second
    assert outbox(store) == []
    h = hist(store, b["bid"])
    assert [(x["op"], x["who"], x["clerk"], x["uid"], x["dev_at"]) for x in h] == [
        ("create", "host cli", None, None, None),
        ("check_in", "T-A", "clerk-0a1b", uid(1), NOW)]
    assert "booking_update T-B %s check_in v1 -> conflict" % b["bid"] in logs


def test_unknown_bookings_and_other_stores(db):
    _, store = db
    b = new_booking(store, shop="S-002")
    assert update(store, "T-A", "B00000000", "check_in", 1, 1) == {
        "uid": uid(1), "st": "unknown", "code": "unknown_booking"}
    assert update(store, "T-A", b["bid"], "check_in", 1, 2)["st"] == "unknown"
    assert update(store, "T-C", b["bid"], "check_in", 1, 3, shop="S-002")["st"] == "ok"


def test_a_no_show_is_applied_whenever_it_is_marked(db):
    """SPEC 8.4 sets no time rule on F4: before the slot (the customer called to say they will
    not come) as after it."""
    _, store = db
    b = new_booking(store)
    ok = update(store, "T-A", b["bid"], "no_show", 1, 3, at=SLOT - 60, now=SLOT - 50)
    assert (ok["st"], ok["booking"]["st"], ok["booking"]["v"]) == ("ok", "no_show", 2)
    assert "code" not in ok
    # The version is current but the booking is no longer booked: a rule, not a race.
    again = update(store, "T-B", b["bid"], "check_in", 2, 4, now=SLOT + 7300)
    assert (again["st"], again["code"], again["booking"]["st"]) == (
        "conflict", "not_booked", "no_show")
    assert [x["op"] for x in hist(store, b["bid"])] == ["create", "no_show"]


def test_cancellations_inside_the_cut_off_are_flagged_for_review(db):
    _, store = db
    early = new_booking(store, at=NOW + CUTOFF_S + 60)
    late = new_booking(store, at=NOW + CUTOFF_S - 60, name="Bo Chen")
    r1 = update(store, "T-A", early["bid"], "cancel", 1, 1, reason="customer_asked")
    r2 = update(store, "T-B", late["bid"], "cancel", 1, 2, reason="staff_unavailable")
    assert r1["st"] == r2["st"] == "ok"
    assert (row(store, early["bid"])["review"], row(store, late["bid"])["review"]) == (
        False, True)
    h = hist(store, late["bid"])[-1]
    assert (h["op"], h["st"], h["who"], h["why"], h["review"]) == (
        "cancel", "cancelled", "T-B", "staff_unavailable", True)
    # From the command line: inside the cut-off a reason is required.
    third = new_booking(store, at=NOW + 600, name="Cy Dorn")
    with store.transaction() as tx:
        with pytest.raises(BookingError, match="reason_required"):
            bookings.cancel(tx, third["bid"], None, NOW)
        c = bookings.cancel(tx, third["bid"], "flood in the shop", NOW)
        assert (c["st"], c["review"], c["v"]) == ("cancelled", True, 2)
        with pytest.raises(BookingError, match="not_booked"):
            bookings.cancel(tx, third["bid"], "again", NOW)
        with pytest.raises(BookingError, match="unknown_booking"):
            bookings.cancel(tx, "B-none", "x", NOW)
    h = hist(store, third["bid"])[-1]
    assert (h["who"], h["why"], h["review"]) == ("host cli", "flood in the shop", True)



def test_a_cancel_without_a_reason_is_applied(db):
    # SPEC 8.4: "reason"?: text. A terminal that sends none is answered (a dropped update
    # would be retried for ever); inside the cut-off it is flagged like any late one.
    _, store = db
    b = new_booking(store, at=NOW + CUTOFF_S - 60)
    assert update(store, "T-A", b["bid"], "cancel", 1, 3)["st"] == "ok"
    h = hist(store, b["bid"])[-1]
    assert (h["op"], h["st"], h["why"], h["review"]) == ("cancel", "cancelled", None, True)

def test_hello_gets_the_current_list_of_today_and_tomorrow(db):
    _, store = db
    items = [new_booking(store, at=t, name=n) for t, n in (
        (TODAY - 3600, "yesterday"), (TODAY + 9 * 3600, "today"),
        (TODAY + DAY + 3600, "tomorrow"), (TODAY + 2 * DAY, "after"))]
    svc = svc_of(store)
    with store.transaction() as tx:
        [out] = svc.on_hello(tx, Msg("T-A", "S-001", "hello", {}, 1, NOW))
        ver = bookings.list_row(tx, "S-001", NOW)[0]
    assert (out.device_id, out.mtype) == ("T-A", "bookings")
    assert out.body == {"ver": ver, "items": [bookings.wire_item(b) for b in items[1:3]]}
    with store.transaction() as tx:  # a store without bookings gets an empty list, ver 1
        [out] = svc.on_hello(tx, Msg("T-C", "S-002", "hello", {}, 1, NOW))
    assert out.body == {"ver": 1, "items": []}


def test_the_day_rolls_over_with_a_new_list(db):
    _, store = db
    new_booking(store, at=TODAY + DAY + 3600, name="tomorrow")
    new_booking(store, at=TODAY + 2 * DAY + 3600, name="day after")
    outbox(store)
    svc = svc_of(store)
    assert svc.tick(NOW + 3600) == 0 and outbox(store) == []
    assert svc.tick(TODAY + DAY + 60) == 1
    pushed = outbox(store)
    assert lists(pushed) == {"T-A": [4], "T-B": [4]}
    assert [it["name"] for it in pushed[0][2]["items"]] == ["tomorrow", "day after"]
    assert svc.tick(TODAY + DAY + 120) == 0


def test_the_list_is_bounded(db):
    _, store = db
    with store.transaction() as tx:
        for i in range(MAX_BOOKINGS + 5):
            bookings.create(tx, "S-002", TODAY + 8 * 3600 + i * 60, 60, "c%d" % i, "x", NOW)
        body = bookings.list_body(tx, "S-002", NOW)
    assert len(body["items"]) == MAX_BOOKINGS and body["items"][0]["name"] == "c0"
    messages.check("bookings", body)


def test_two_workers_decide_one_booking_once(db):
    where, store = db
    b = new_booking(store)
    results = {}
    start = threading.Barrier(2)

    def worker(dev, n):
        own = open_store(where)  # a connection of its own, like another host process
        try:
            start.wait(10)
            results[dev] = update(own, dev, b["bid"], "check_in", 1, n)
        finally:
            own.close()

    threads = [threading.Thread(target=worker, args=(d, n)) for d, n in (("T-A", 1), ("T-B", 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r["st"] for r in results.values()) == ["conflict", "ok"]
    assert [x["op"] for x in hist(store, b["bid"])] == ["create", "check_in"]
    assert row(store, b["bid"])["v"] == 2


# -- the command line ----------------------------------------------------------------------------
def cli(where, *argv, now=NOW):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = bookings_cli.main(["--db", where] + list(argv), clock=lambda: now)
    return code, [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


def test_command_line_create_list_cancel_history(db):
    where, store = db
    code, [b], _ = cli(where, "create", "--store", "S-001", "--at", str(SLOT), "--dur", "1800",
                       "--name", "Ann Lee", "--svc", "Haircut")
    assert code == 0
    assert {k: b[k] for k in ("store_id", "at", "dur", "name", "svc", "st", "v", "review")} == {
        "store_id": "S-001", "at": SLOT, "dur": 1800, "name": "Ann Lee", "svc": "Haircut",
        "st": "booked", "v": 1, "review": False}
    cli(where, "create", "--store", "S-001", "--at", str(SLOT + 2 * DAY), "--dur", "60",
        "--name", "Later", "--svc", "x")
    assert [x["name"] for x in cli(where, "list", "--store", "S-001")[1]] == ["Ann Lee"]
    assert [x["name"] for x in cli(where, "list", "--store", "S-001", "--day",
                                   "2026-12-11")[1]] == ["Later"]
    code, _, err = cli(where, "cancel", b["bid"], now=SLOT - 60)
    assert code == 1 and "reason_required" in err
    code, [c], _ = cli(where, "cancel", b["bid"], "--reason", "stylist ill", now=SLOT - 60)
    assert (code, c["st"], c["v"], c["review"]) == (0, "cancelled", 2, True)
    code, rows, _ = cli(where, "history", b["bid"])
    assert [(r["op"], r["who"], r["why"], r["review"]) for r in rows] == [
        ("create", "host cli", None, False), ("cancel", "host cli", "stylist ill", True)]
    assert cli(where, "history", "B-none")[0] == 1
    assert lists(outbox(store)) == {"T-A": [2, 3, 4], "T-B": [2, 3, 4]}
