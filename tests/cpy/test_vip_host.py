# VIP auto-renewal on the host (SPEC 8.2): host_sim/vip.py on the billing engine, on a real
# SQLite file; parallel schedulers in separate processes.
import contextlib
import json
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import time
from collections import Counter

import pytest

from host_sim import billing, members, periods, vip
from host_sim.billing import RETRY_SLOTS, BillingError, Gateway
from host_sim.periods import utc
from host_sim.store import is_url, open_store
from protocol import messages

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOUR = 3600
DAY = 86400
A = utc(2027, 1, 31, 9)  # an anchor on a month end


class Script:
    """A gateway whose answers are given in order (True = paid); records every key asked."""

    def __init__(self, *answers, then=True):
        self.answers = list(answers)
        self.then = then
        self.keys = []

    def pay(self, key, amt):
        self.keys.append(key)
        return self.answers.pop(0) if self.answers else self.then


@pytest.fixture
def store(host_db):
    # Every test here runs on SQLite and on PostgreSQL (conftest's host_db).
    s = open_store(host_db)
    yield s
    s.close()


@pytest.fixture
def eng(store):
    e = vip.engine(store)
    with store.transaction() as tx:
        e.set_plan(tx, "vip", "gold", 9900, "month")
        e.set_plan(tx, "vip", "silver", 2900, "quarter")
    return e


def members_table(store, balances):
    store.schema(members.SCHEMA)
    with store.transaction() as tx:
        for mid, bal in balances.items():
            members.add(tx, mid, "M-ACME", "", "", bal, A - DAY)


def balance(store, mid):
    with store.read() as tx:
        return tx.execute("SELECT bal FROM members WHERE mid=?", (mid,)).fetchone()[0]


def ledger(store, eng, mid=None):
    with store.read() as tx:
        return eng.ledger(tx, "vip", mid)


def reminders(store, eng, mid=None):
    with store.read() as tx:
        return eng.reminders(tx, "vip", mid)


def attempts(store, eng):
    with store.read() as tx:
        return eng.attempts(tx, "vip")


def hourly(eng, start, stop, gateway):
    events = []
    for t in range(start, stop, HOUR):
        events += eng.tick("vip", t, gateway)
    return events


def starts(anchor, n, cycle="month"):
    return [periods.start(anchor, cycle, i) for i in range(n)]


# ---------------------------------------------------------------- the rules

def test_enrol_charges_at_once_then_each_renewal_after_a_reminder_5_days_before(store, eng):
    sub, events = vip.enrol(eng, store, "M1", "gold", A)
    assert [e["act"] for e in events] == ["paid"]
    assert events[0]["start"] == A and events[0]["end"] == utc(2027, 2, 28, 9)
    hourly(eng, A, utc(2027, 5, 1), Gateway())
    got = ledger(store, eng, "M1")
    want = starts(A, 4)  # Jan 31, Feb 28, Mar 31, Apr 30
    assert [e["start"] for e in got] == want
    assert all(e["st"] == "paid" and e["tries"] == 1 and e["amt"] == 9900 for e in got)
    assert [e["paid_at"] for e in got] == want  # hourly ticks on the hour: charged on time
    rem = reminders(store, eng, "M1")
    assert [r["start"] for r in rem] == want[1:]  # no reminder before the first period
    assert [r["at"] for r in rem] == [s - 5 * DAY for s in want[1:]]
    with store.read() as tx:
        assert vip.vip_expiry(tx, "M1") == periods.start(A, "month", 4)
        assert vip.vip_expiry(tx, "nobody") is None


def test_a_failing_payment_is_retried_on_the_schedule_then_the_membership_lapses(store, eng):
    vip.enrol(eng, store, "M1", "gold", A)
    renewal = utc(2027, 2, 28, 9)
    events = hourly(eng, renewal - DAY, renewal + 20 * DAY, Gateway(1.0))
    tries = [e["at"] for e in events if e["act"] == "failed"]
    assert tries == [renewal + s for s in RETRY_SLOTS]  # 0, 1h, 6h, 1d, 2d, 4d, 7d, 13d
    assert len(tries) == 8 and tries[-1] - renewal < 14 * DAY
    assert [e["act"] for e in events][-1] == "lapsed"
    row = ledger(store, eng, "M1")[-1]
    assert (row["start"], row["st"], row["tries"]) == (renewal, "failed", 8)
    # Lapsed: nothing more is charged, ever; the expiry stays the end of the paid period.
    assert eng.tick("vip", utc(2028, 1, 1), Gateway()) == []
    assert len(ledger(store, eng, "M1")) == 2
    with store.read() as tx:
        assert vip.vip_expiry(tx, "M1") == renewal


def test_a_retry_that_succeeds_keeps_the_membership_and_its_anchor(store, eng):
    vip.enrol(eng, store, "M1", "gold", A)
    renewal = utc(2027, 2, 28, 9)
    gw = Script(False, False, False)  # the 4th try (at +1 day) goes through
    events = hourly(eng, renewal, utc(2027, 4, 1), gw)
    paid = [e for e in events if e["act"] == "paid"]
    assert (paid[0]["start"], paid[0]["at"], paid[0]["tries"]) == (renewal, renewal + DAY, 4)
    assert paid[1]["start"] == utc(2027, 3, 31, 9) and paid[1]["tries"] == 1  # from the anchor
    assert len(gw.keys) == len(set(gw.keys)) == 5


def test_after_downtime_one_try_in_the_slot_that_has_come_then_the_schedule_goes_on(store, eng):
    vip.enrol(eng, store, "M1", "gold", A)
    renewal = utc(2027, 2, 28, 9)
    gw = Script(then=False)
    eng.tick("vip", renewal, gw)  # try 1 fails; then the host is down for 3 days
    back = renewal + 3 * DAY
    ev = hourly(eng, back, back + 30 * DAY, gw)
    tries = [e["at"] for e in ev if e["act"] == "failed"]
    # One overdue try (the 2 d slot; the 1 h, 6 h and 1 d slots are not made up: no burst),
    # then the slots of the schedule, counted from the first try.
    assert tries == [back, renewal + 4 * DAY, renewal + 7 * DAY, renewal + 13 * DAY]
    assert [e["act"] for e in ev][-1] == "lapsed"
    assert ledger(store, eng, "M1")[-1]["tries"] == 5


def test_a_host_down_past_the_14_days_lapses_the_membership_without_a_late_try(store, eng):
    # SPEC 8.2: at most 8 tries in 14 days, then a lapse: no try on day 30.
    vip.enrol(eng, store, "M1", "gold", A)
    renewal = utc(2027, 2, 28, 9)
    gw = Script(then=False)
    eng.tick("vip", renewal, gw)
    ev = eng.tick("vip", renewal + 30 * DAY, gw)
    assert [e["act"] for e in ev] == ["lapsed"]
    row = ledger(store, eng, "M1")[-1]
    assert (row["st"], row["tries"]) == ("failed", 1)
    assert eng.tick("vip", renewal + 60 * DAY, gw) == []


def test_the_last_try_is_due_until_the_14_days_are_over(store, eng):
    vip.enrol(eng, store, "M1", "gold", A)
    renewal = utc(2027, 2, 28, 9)
    gw = Script(then=False)
    eng.tick("vip", renewal, gw)
    ev = eng.tick("vip", renewal + 14 * DAY - 1, gw)  # the 13 d slot, late but inside
    assert [(e["act"], e["at"]) for e in ev] == [("failed", renewal + 14 * DAY - 1),
                                                  ("lapsed", renewal + 14 * DAY - 1)]
    assert ledger(store, eng, "M1")[-1]["tries"] == 2


def test_ticks_a_day_apart_lapse_within_14_days_with_at_most_8_tries(store, eng):
    vip.enrol(eng, store, "M1", "gold", A)
    renewal = utc(2027, 2, 28, 9)
    events = []
    for d in range(20):
        events += eng.tick("vip", renewal + d * DAY, Gateway(1.0))
    tries = [e["at"] for e in events if e["act"] == "failed"]
    lapsed = [e["at"] for e in events if e["act"] == "lapsed"]
    assert tries[0] == renewal and len(tries) <= 8 and tries[-1] < renewal + 14 * DAY
    assert lapsed == [tries[-1]] and lapsed[0] == renewal + 13 * DAY


def test_cancel_lets_the_paid_period_run_out_and_charges_nothing_more(store, eng):
    vip.enrol(eng, store, "M1", "gold", A)
    vip.cancel(eng, store, "M1")
    events = hourly(eng, A, utc(2027, 3, 10), Gateway())
    assert [e["act"] for e in events] == ["ended"]
    assert events[0]["start"] == utc(2027, 2, 28, 9)
    assert len(ledger(store, eng, "M1")) == 1 and reminders(store, eng, "M1") == []
    with pytest.raises(BillingError) as e:
        vip.cancel(eng, store, "M1")
    assert e.value.code == "not_member"
    # A new enrolment after the end is a new membership with its own anchor.
    vip.enrol(eng, store, "M1", "silver", utc(2027, 6, 1))
    assert [r["plan"] for r in ledger(store, eng, "M1")] == ["gold", "silver"]


def test_cancel_stops_retries_of_an_unpaid_period(store, eng):
    vip.enrol(eng, store, "M1", "gold", A)
    renewal = utc(2027, 2, 28, 9)
    eng.tick("vip", renewal, Gateway(1.0))
    vip.cancel(eng, store, "M1")
    ev = hourly(eng, renewal + HOUR, renewal + 20 * DAY, Gateway())
    assert [e["act"] for e in ev] == ["ended"]
    assert [(r["st"], r["tries"]) for r in ledger(store, eng, "M1")] == [("paid", 1),
                                                                          ("failed", 1)]


def test_no_auto_enrolment_is_charged_once(store, eng):
    vip.enrol(eng, store, "M1", "gold", A, auto=False)
    assert [e["act"] for e in eng.tick("vip", utc(2027, 12, 1), Gateway())] == ["ended"]
    assert len(ledger(store, eng, "M1")) == 1


def test_enrol_refuses_a_running_membership_and_unknown_tiers(store, eng):
    vip.enrol(eng, store, "M1", "gold", A)
    for mid, tier, code in (("M1", "silver", "already_member"), ("M2", "iron", "unknown_tier")):
        with pytest.raises(BillingError) as e:
            vip.enrol(eng, store, mid, tier, A)
        assert e.value.code == code
    vip.cancel(eng, store, "M1")  # cancelled and still running: a new enrolment replaces it
    vip.enrol(eng, store, "M1", "silver", A + DAY)
    assert eng.tick("vip", utc(2027, 3, 5), Gateway()) == []  # the gold one is closed


def test_downtime_charges_every_missed_period_once_in_order_reminder_first(store, eng):
    vip.enrol(eng, store, "M1", "gold", A)
    now = utc(2027, 5, 10)  # host down since the enrolment: Feb 28, Mar 31, Apr 30 missed
    events = eng.tick("vip", now, Gateway())
    missed = starts(A, 4)[1:]
    assert [(e["act"], e["start"]) for e in events] == [
        (act, s) for s in missed for act in ("reminder", "paid")]
    assert all(e["at"] == now for e in events)
    assert eng.tick("vip", now, Gateway()) == []  # nothing twice
    assert [r["start"] for r in ledger(store, eng, "M1")] == starts(A, 4)


def test_an_unpaid_period_holds_back_the_later_ones(store, eng):
    vip.enrol(eng, store, "M1", "gold", A)
    eng.tick("vip", utc(2027, 5, 10), Script(False, then=True))
    # Feb failed at the late tick; Mar and Apr wait for it: in order, none skipped.
    assert [(r["start"], r["st"]) for r in ledger(store, eng, "M1")] == [
        (A, "paid"), (utc(2027, 2, 28, 9), "failed")]
    eng.tick("vip", utc(2027, 5, 10) + HOUR, Gateway())
    assert [r["st"] for r in ledger(store, eng, "M1")] == ["paid"] * 4


def test_the_stored_balance_pays_first_and_a_failed_payment_takes_nothing(store, eng):
    members_table(store, {"M1": 12000, "M2": 500})
    vip.enrol(eng, store, "M1", "gold", A)  # 12000 -> 2100
    vip.enrol(eng, store, "M2", "gold", A)  # 500 < 9900: the gateway
    assert balance(store, "M1") == 2100 and balance(store, "M2") == 500
    eng.tick("vip", utc(2027, 2, 28, 9), Gateway(1.0))  # M1 2100 < fee: gateway, fails
    assert balance(store, "M1") == 2100
    with store.transaction() as tx:
        members.host_topup(tx, "M1", 17900, utc(2027, 2, 28, 9, 30))  # 2100 -> 20000
    eng.tick("vip", utc(2027, 2, 28, 10), Gateway(1.0))  # the retry: balance now enough
    assert balance(store, "M1") == 10100
    rows = ledger(store, eng)
    assert [(r["owner"], r["src"], r["st"]) for r in rows] == [
        ("M1", "balance", "paid"), ("M1", "balance", "paid"),
        ("M2", "gateway", "paid"), ("M2", "gateway", "failed")]
    ok = [a for a in attempts(store, eng) if a["ok"]]
    assert Counter(a["src"] for a in ok) == {"balance": 2, "gateway": 1}
    # Each debit has its row in the member's history.
    with store.read() as tx:
        hist = [(h["kind"], h["bal_delta"], h["bal"]) for h in members.history(tx, "M1")]
    assert hist == [("open", 12000, 12000), ("vip", -9900, 2100), ("topup", 17900, 20000),
                    ("vip", -9900, 10100)]


def test_a_blocked_member_renews_through_the_gateway(store, eng):
    members_table(store, {"M1": 50000})
    vip.enrol(eng, store, "M1", "gold", A)
    with store.transaction() as tx:
        members.block(tx, "M1", A + DAY)
    eng.tick("vip", utc(2027, 2, 28, 9), Gateway())
    assert balance(store, "M1") == 50000 - 9900
    assert [r["src"] for r in ledger(store, eng)] == ["balance", "gateway"]


# ---------------------------------------------------------------- the counter (charge kind vip)

def vip_charge(cid, mid, tier, amt, at):
    body = {"cid": bytes([cid]) * 16, "kind": "vip", "gross": amt, "amt": amt, "cur": "CNY",
            "at": at, "off": False, "clerk": "c1", "cpn": [], "mem": mid, "tier": tier}
    messages.check("charge", body)
    return body


def on_charge(store, service, body, device="T-1"):
    charge = {"device_id": device, "store_id": "S-1", "cid": body["cid"], "body": body,
              "now": body["at"] + 5}
    with store.transaction() as tx:
        return service.on_charge(tx, charge)


def test_counter_charge_enrols_then_renews_and_a_repeat_changes_nothing(store, eng):
    svc = vip.Vip(store)
    at = utc(2027, 3, 31, 15)
    code, extra = on_charge(store, svc, vip_charge(1, "M1", "gold", 9900, at))
    assert code is None
    assert extra == {"vip": {"tier": "gold", "start": at, "end": utc(2027, 4, 30, 15)}}
    messages.check("charge_result", {"cid": b"\1" * 16, "st": "approved", "cpn": [], **extra})
    assert on_charge(store, svc, vip_charge(1, "M1", "gold", 9900, at)) == (None, extra)
    assert len(ledger(store, eng, "M1")) == 1
    code, extra = on_charge(store, svc, vip_charge(2, "M1", "gold", 9900, at + DAY))
    assert extra["vip"] == {"tier": "gold", "start": utc(2027, 4, 30, 15),
                            "end": utc(2027, 5, 31, 15)}
    assert [r["src"] for r in ledger(store, eng, "M1")] == ["counter", "counter"]
    # Paid ahead at the counter: the scheduler does not charge that period again.
    ev = eng.tick("vip", utc(2027, 5, 1), Gateway())
    assert [e["act"] for e in ev] == []
    ev = eng.tick("vip", utc(2027, 5, 31, 15), Gateway())
    assert [(e["act"], e["start"]) for e in ev] == [("reminder", utc(2027, 5, 31, 15)),
                                                    ("paid", utc(2027, 5, 31, 15))]


def test_counter_charge_declines(store, eng):
    svc = vip.Vip(store)
    assert on_charge(store, svc, vip_charge(1, "M1", "iron", 100, A)) == ("unknown_tier", {})
    assert on_charge(store, svc, vip_charge(2, "M1", "gold", 9800, A)) == ("wrong_fee", {})
    sale = vip_charge(3, "M1", "gold", 9900, A)
    sale["kind"] = "sale"
    assert on_charge(store, svc, sale) == (None, {})
    assert ledger(store, eng) == []


def test_counter_charge_while_a_gateway_attempt_is_in_flight_is_declined(store, eng):
    svc = vip.Vip(store)
    vip.enrol(eng, store, "M1", "gold", A)
    seen = []

    class Racing:
        def pay(self, key, amt):
            seen.append(on_charge(store, svc, vip_charge(9, "M1", "gold", 9900, A + 40 * DAY)))
            return True

    eng.tick("vip", utc(2027, 2, 28, 9), Racing())
    assert seen == [("renewal_in_progress", {})]
    assert [r["src"] for r in ledger(store, eng, "M1")] == ["gateway", "gateway"]


def test_counter_charge_of_another_tier_starts_when_the_paid_time_ends(store, eng):
    svc = vip.Vip(store)
    vip.enrol(eng, store, "M1", "gold", A)
    code, extra = on_charge(store, svc, vip_charge(1, "M1", "silver", 2900, A + DAY))
    assert extra["vip"] == {"tier": "silver", "start": utc(2027, 2, 28, 9),
                            "end": utc(2027, 5, 28, 9)}
    eng.tick("vip", utc(2027, 3, 10), Gateway())
    assert [(r["plan"], r["st"]) for r in ledger(store, eng, "M1")] == [
        ("gold", "paid"), ("silver", "paid")]
    with store.read() as tx:
        assert vip.vip_expiry(tx, "M1") == utc(2027, 5, 28, 9)


def test_counter_charge_after_a_lapse_is_a_new_membership(store, eng):
    svc = vip.Vip(store)
    vip.enrol(eng, store, "M1", "gold", A)
    hourly(eng, utc(2027, 2, 28, 9), utc(2027, 3, 15), Gateway(1.0))
    at = utc(2027, 4, 2)
    code, extra = on_charge(store, svc, vip_charge(1, "M1", "gold", 9900, at))
    assert extra["vip"]["start"] == at


# ---------------------------------------------------------------- a scheduler that died

def test_a_claim_left_by_a_dead_scheduler_is_taken_over_with_the_same_attempt_key(store):
    clock = [1000.0]
    eng = vip.engine(store, wall=lambda: clock[0])
    with store.transaction() as tx:
        eng.set_plan(tx, "vip", "gold", 9900, "month")
    vip.enrol(eng, store, "M1", "gold", A)

    class Dies:
        keys = []

        def pay(self, key, amt):
            self.keys.append(key)
            raise KeyboardInterrupt("the scheduler is killed while the gateway answers")

    renewal = utc(2027, 2, 28, 9)
    with pytest.raises(KeyboardInterrupt):
        eng.tick("vip", renewal, Dies())
    assert ledger(store, eng, "M1")[-1]["st"] == "due"  # claimed, outcome unknown
    gw = Script()
    assert eng.tick("vip", renewal + HOUR, gw) == []  # the claim is fresh: left alone
    clock[0] += billing.STALE_CLAIM_S + 1
    ev = eng.tick("vip", renewal + HOUR, gw)
    assert [e["act"] for e in ev] == ["paid"]
    assert gw.keys == Dies.keys  # asked again under the same key: a gateway answers it once
    assert [(r["st"], r["tries"]) for r in ledger(store, eng, "M1")] == [("paid", 1),
                                                                          ("paid", 1)]


_DIES_IN_PAY = """
import os, sys
from host_sim import vip
from host_sim.store import open_store

class Dies:
    def pay(self, key, amt):
        os._exit(9)  # killed between the claim and the payment method's answer

store = open_store(sys.argv[1])
vip.engine(store).tick("vip", int(sys.argv[2]), Dies())
"""


def test_a_scheduler_killed_mid_tick_on_this_machine_is_taken_over_at_once(host_db, store, eng):
    """A tick restarted right after one was killed charges what the dead one claimed (the
    same attempt keys), without waiting STALE_CLAIM_S."""
    for mid in ("M1", "M2", "M3"):
        vip.enrol(eng, store, mid, "gold", A)
    renewal = utc(2027, 2, 28, 9)
    p = subprocess.run([sys.executable, "-c", _DIES_IN_PAY, host_db, str(renewal)],
                       cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
    assert p.returncode == 9
    assert [r["st"] for r in ledger(store, eng) if r["start"] == renewal] == ["due"] * 3
    gw = Script()
    ev = eng.tick("vip", renewal, gw)  # the wall clock has not moved on
    assert sorted(e["owner"] for e in ev if e["act"] == "paid") == ["M1", "M2", "M3"]
    assert [(r["st"], r["tries"]) for r in ledger(store, eng) if r["start"] == renewal] == [
        ("paid", 1)] * 3
    assert len(gw.keys) == len(set(gw.keys)) == 3


def test_a_claim_of_a_live_or_unknown_scheduler_is_not_taken_over_early():
    me = "%s/%d/%s" % (billing.socket.gethostname(), os.getpid(), "ab" * 8)
    assert not billing.owner_dead(me)  # this process
    assert not billing.owner_dead("%s/1/%s" % (billing.socket.gethostname(), "ab" * 8))  # init
    assert not billing.owner_dead("elsewhere.example/%d/x" % (2 ** 22 + 7))  # another machine
    assert not billing.owner_dead("0123456789abcdef")  # a claim written before tokens said
    assert billing.owner_dead("%s/%d/x" % (billing.socket.gethostname(), 2 ** 22 + 7))


# ---------------------------------------------------------------- schedulers at once

def _populate(path, members, anchor):
    store = open_store(path)
    eng = vip.engine(store)
    with store.transaction() as tx:
        eng.set_plan(tx, "vip", "gold", 9900, "month")
        eng.set_plan(tx, "vip", "silver", 2900, "quarter")
        subs = [eng.create(tx, "vip", "M%04d" % i, eng.plan(tx, "vip", ("gold", "silver")[i % 2]),
                           anchor + i * 3607) for i in range(members)]
    eng.tick("vip", anchor + members * 3607, Gateway())  # every first period paid
    store.close()
    return subs


def _check_once(path, outputs):
    """No (member, period, try) was acted on by two schedulers, and the database agrees."""
    acted = Counter()
    for out in outputs:
        for line in out:
            if line["act"] in ("paid", "failed"):
                acted[(line["mid"], line["start"], line["tries"])] += 1
    assert acted and max(acted.values()) == 1
    store = open_store(path)
    eng = vip.engine(store)
    with store.read() as tx:
        rows = eng.ledger(tx, "vip")
        att = eng.attempts(tx, "vip")
    store.close()
    per = Counter((r["owner"], r["start"]) for r in rows)
    assert max(per.values()) == 1
    ok = Counter((a["owner"], a["start"]) for a in att if a["ok"])
    assert max(ok.values()) == 1
    assert set(ok) == {(r["owner"], r["start"]) for r in rows if r["st"] == "paid"}
    tries = Counter((a["owner"], a["start"]) for a in att)
    assert all(tries[(r["owner"], r["start"])] == r["tries"] for r in rows)
    for mid in {r["owner"] for r in rows}:  # paid periods are a prefix: in order, no gap
        mine = [r for r in rows if r["owner"] == mid]
        sts = [r["st"] for r in mine]
        assert sts == ["paid"] * len(sts) or sts == ["paid"] * (len(sts) - 1) + ["failed"]
    return sum(1 for r in rows if r["st"] == "paid")


@contextlib.contextmanager
def held(db):
    """Holds the database locked for the block, so processes started in it begin together
    when it ends (SQLite: the write lock; PostgreSQL: the subscriptions table)."""
    if is_url(db):
        import psycopg

        conn = psycopg.connect(db)
        conn.execute("LOCK TABLE billing_subs IN ACCESS EXCLUSIVE MODE")
    else:
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        conn.rollback() if is_url(db) else conn.execute("ROLLBACK")
        conn.close()


def test_tick_processes_at_the_same_instant_never_both_charge(host_db):
    path = host_db
    _populate(path, 1000, A)
    now = A + 300 * DAY  # several renewals each after a long downtime
    env = dict(os.environ, PYTHONPATH=ROOT)
    cmd = [sys.executable, "-m", "host_sim", "vip", "--db", path, "tick", "--now", str(now),
           "--fail-rate", "0.2", "--seed", "7"]
    with held(path):
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=env, cwd=ROOT) for _ in range(4)]
        time.sleep(2)
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        outputs.append([json.loads(line) for line in out.decode().splitlines()])
    paid = _check_once(path, outputs)
    assert paid > 1000 * 3


def _tick_worker(path, now, barrier, seed, q):
    store = open_store(path)
    eng = vip.engine(store, batch=7)
    barrier.wait()
    # The gateway's latency lets the others in between a claim and its outcome (SQLite hands
    # its write lock to whoever asks again first; a gateway call leaves it free for a while).
    events = eng.tick("vip", now, Gateway(0.25, seed, latency_s=0.002))
    store.close()
    q.put([vip._event_line(e) for e in events])


def test_engine_ticks_released_together_by_a_barrier_never_both_charge(host_db):
    path = host_db
    _populate(path, 400, A)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    q = ctx.Queue()
    now = A + 200 * DAY
    procs = [ctx.Process(target=_tick_worker, args=(path, now, barrier, 3, q))
             for _ in range(3)]
    for p in procs:
        p.start()
    outputs = [q.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert sum(1 for out in outputs if out) >= 2
    _check_once(path, outputs)


# ---------------------------------------------------------------- the command line

def run_cli(*args):
    p = subprocess.run([sys.executable, "-m", "host_sim", "vip", *args], capture_output=True,
                       text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
    return p.returncode, [json.loads(x) for x in p.stdout.splitlines()], p.stderr


def test_command_line(tmp_path):
    db = str(tmp_path / "h.db")
    assert run_cli("--db", db, "tier", "gold", "--fee", "9900", "--cycle", "month")[:2] == (
        0, [{"tier": "gold", "fee": 9900, "cycle": "month"}])
    rc, out, _ = run_cli("--db", db, "enrol", "M1", "gold", "--start", str(A))
    assert rc == 0 and out[0]["st"] == "paid" and out[0]["start"] == A
    rc, out, _ = run_cli("--db", db, "tick", "--now", str(utc(2027, 3, 1)))
    assert rc == 0 and [o["act"] for o in out] == ["reminder", "paid"]
    rc, out, _ = run_cli("--db", db, "ledger")
    assert rc == 0 and len(out) == 2
    assert all(set(o) == {"mid", "tier", "start", "end", "st", "tries", "amt"} for o in out)
    assert out[1] == {"mid": "M1", "tier": "gold", "start": utc(2027, 2, 28, 9),
                      "end": utc(2027, 3, 31, 9), "st": "paid", "tries": 1, "amt": 9900}
    rc, out, _ = run_cli("--db", db, "reminders")
    assert out == [{"mid": "M1", "start": utc(2027, 2, 28, 9), "at": utc(2027, 3, 1)}]
    rc, out, _ = run_cli("--db", db, "cancel", "M1")
    assert rc == 0 and out[0]["auto"] is False
    rc, out, err = run_cli("--db", db, "cancel", "M2")
    assert rc == 1 and out == [] and "not_member" in err
    rc, out, err = run_cli("--db", db, "enrol", "M2", "iron", "--start", str(A))
    assert rc == 1 and "unknown_tier" in err
    for bad in (["tier", "x", "--fee", "-1", "--cycle", "month"],
                ["tier", "x", "--fee", "1", "--cycle", "week"],
                ["tick", "--now", "soon"], ["tick", "--now", "1", "--fail-rate", "2"],
                ["enrol", "M3", "gold"], ["frobnicate"]):
        assert run_cli("--db", db, *bad)[0] == 2, bad
    # --db after the command works as well; given nowhere it is a usage error (exit 2)
    rc, out, _ = run_cli("ledger", "--db", db)
    assert rc == 0 and len(out) == 2
    rc, out, err = run_cli("ledger")
    assert (rc, out) == (2, []) and "--db" in err


# ---------------------------------------------------------------- through the charge processor

def test_vip_charges_through_the_charge_processor_apply_once(store, eng):
    from host_sim.charges import Charges
    from host_sim.registry import Registry
    from host_sim.service import Context

    reg = Registry(store, clock=lambda: A + 60)
    reg.register("T-1", "S-1", "M-1")
    members_table(store, {"M1": 0})
    ctx = Context(store)
    charges = Charges(reg, services=[members.Members(ctx), vip.Vip(ctx)])
    body = vip_charge(1, "M1", "gold", 9900, A)
    first, fresh = charges.apply("T-1", body)
    assert fresh and first["st"] == "approved"
    assert first["vip"] == {"tier": "gold", "start": A, "end": utc(2027, 2, 28, 9)}
    messages.check("charge_result", first)
    again, fresh = charges.apply("T-1", body)  # a retransmission: the stored result
    assert not fresh and again == first
    assert [(r["src"], r["start"]) for r in ledger(store, eng)] == [("counter", A)]
    bad, _ = charges.apply("T-1", vip_charge(2, "M1", "gold", 100, A))
    assert (bad["st"], bad["code"]) == ("declined", "wrong_fee")
    unknown, _ = charges.apply("T-1", vip_charge(3, "M9", "gold", 9900, A))
    assert (unknown["st"], unknown["code"]) == ("declined", "unknown_member")
    assert len(ledger(store, eng)) == 1
    renew, _ = charges.apply("T-1", vip_charge(4, "M1", "gold", 9900, A + DAY))
    assert renew["vip"]["start"] == utc(2027, 2, 28, 9)
    with store.read() as tx:
        assert vip.vip_expiry(tx, "M1") == utc(2027, 3, 31, 9)


def test_tiers_reach_every_terminal_and_at_most_nine(store):
    import cbor2

    from host_sim.registry import Registry
    from host_sim.service import Msg

    reg = Registry(store)
    reg.register("T-1", "S-1", "M-1")
    reg.register("T-2", "S-2", "M-1")
    eng = vip.engine(store)
    vip.set_tier(eng, store, "gold", 9900, "month", A)
    vip.set_tier(eng, store, "silver", 2900, "quarter", A)
    with store.read() as tx:
        rows = tx.execute("SELECT device_id, mtype, body FROM host_outbox ORDER BY id").fetchall()
    pushed = [(d, t, cbor2.loads(bytes(b))) for d, t, b in rows]
    tiers = [{"name": "silver", "fee": 2900, "cycle": "quarter"},
             {"name": "gold", "fee": 9900, "cycle": "month"}]
    assert pushed[-2:] == [("T-1", "config", {"vip_tiers": tiers}),
                           ("T-2", "config", {"vip_tiers": tiers})]
    for _, _, body in pushed:
        messages.check("config", body)
    with store.read() as tx:
        out = vip.Vip(store).on_hello(tx, Msg("T-1", "S-1", "hello", {}, 1, A))
    assert [(o.device_id, o.mtype, o.body) for o in out] == [("T-1", "config",
                                                              {"vip_tiers": tiers})]
    for i in range(7):
        vip.set_tier(eng, store, "t%d" % i, 100 + i, "year", A)
    with pytest.raises(BillingError) as e:
        vip.set_tier(eng, store, "tenth", 1, "year", A)
    assert e.value.code == "too_many_tiers"
    vip.set_tier(eng, store, "gold", 9800, "month", A)  # a change is not a tenth


def test_command_line_on_a_database_it_cannot_open_exits_1_without_a_traceback(tmp_path):
    db = str(tmp_path / "no" / "such" / "dir" / "h.db")
    for args in (["ledger"], ["tick", "--now", "1"], ["tier", "gold", "--fee", "1",
                                                      "--cycle", "month"]):
        rc, out, err = run_cli("--db", db, *args)
        assert rc == 1 and out == [] and "Traceback" not in err and "h.db" in err, (args, err)


def test_command_line_on_a_file_that_is_no_database_or_a_name_that_is_no_text(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all, just bytes " * 10)
    for args in (["ledger"], ["tick", "--now", "1"]):
        rc, out, err = run_cli("--db", str(junk), *args)
        assert rc == 1 and out == [] and "Traceback" not in err and "not a database" in err
    db = str(tmp_path / "h.db")
    assert run_cli("--db", db, "tier", "gold", "--fee", "1", "--cycle", "month")[0] == 0
    for args in (["enrol", "m\udcff", "gold", "--start", "1"],  # bytes 6d ff from argv
                 ["tier", "g\udcff", "--fee", "1", "--cycle", "month"]):
        rc, out, err = run_cli("--db", db, *args)
        assert rc == 1 and out == [] and "Traceback" not in err and "UTF-8" in err, err
