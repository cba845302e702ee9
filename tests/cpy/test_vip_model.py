# VIP renewal against a simple model (SPEC 8.2): random tick times, downtime, gateway failures,
# schedulers that die mid-payment, cancels, enrolments, counter charges and top-ups. After every
# step the ledger must say: each membership's paid periods are exactly its first periods from
# the anchor (in order, none skipped, none twice), nothing that started before the last tick is
# left uncharged unless it is waiting for its next retry, nothing is charged after a cancel or a
# lapse, reminders came before their charge, and every minor unit of stored balance taken is in
# a paid period.
import os
import shutil
import tempfile
from collections import Counter

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from host_sim import billing, members, periods, vip
from host_sim.billing import RETRY_SLOTS, BillingError, Gateway
from host_sim.periods import utc
from host_sim.store import open_store
from protocol import messages

HOUR = 3600
DAY = 86400
MIDS = ("M0", "M1", "M2")
TIERS = {"gold": (9900, "month"), "silver": (2900, "quarter")}
START_BAL = 15000


class Dies:
    """A gateway that answers `n` attempts and then the scheduler dies."""

    def __init__(self, n, inner):
        self.n = n
        self.inner = inner

    def pay(self, key, amt):
        if self.n == 0:
            raise SystemExit("scheduler killed")
        self.n -= 1
        return self.inner.pay(key, amt)


class VipModel(RuleBasedStateMachine):
    new_db = None  # a callable giving a fresh PostgreSQL database URL; None: a SQLite file

    @initialize(day=st.sampled_from([1, 15, 28, 29, 30, 31]), hour=st.integers(0, 23))
    def setup(self, day, hour):
        self.dir = tempfile.mkdtemp(prefix="vipmodel")
        where = self.new_db() if self.new_db else os.path.join(self.dir, "host.db")
        self.store = open_store(where)
        self.wall = 1000.0
        self.eng = vip.engine(self.store, wall=lambda: self.wall)
        self.svc = vip.Vip(self.store)
        self.svc.engine = self.eng
        self.store.schema(members.SCHEMA)
        self.now = utc(2027, 12, min(day, 31), hour)
        with self.store.transaction() as tx:
            for name, (fee, cycle) in TIERS.items():
                self.eng.set_plan(tx, "vip", name, fee, cycle)
            for mid in MIDS:
                members.add(tx, mid, "M-ACME", "", "", START_BAL, self.now)
        self.last_tick = None
        self.clean_tick = False  # the last tick ran to its end
        self.topups = Counter()
        self.cancelled_at = {}   # sub id -> when auto-renewal was turned off
        self.cids = {}           # cid -> (charge result, ledger rows of it)
        self.paid_since_tick = set()  # members who paid at the counter since the last tick
        self.next_cid = 1

    def teardown(self):
        if hasattr(self, "store"):
            self.store.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------ reading

    def q(self, fn, *args):
        with self.store.read() as tx:
            return fn(tx, *args)

    def current(self, mid):
        return self.q(lambda tx: self.eng.current(tx, "vip", mid))

    # ------------------------------------------------------------ rules

    def _tick(self, gateway):
        self.wall += 1
        self.eng.tick("vip", self.now, gateway)
        self.last_tick, self.clean_tick = self.now, True
        self.paid_since_tick = set()

    @rule(dt=st.sampled_from([HOUR, 5 * HOUR, DAY, 3 * DAY, 5 * DAY, 13 * DAY, 29 * DAY]),
          fail=st.sampled_from([0.0, 0.0, 0.5, 1.0]), seed=st.integers(0, 3))
    def wait_and_tick(self, dt, fail, seed):
        self.now += dt
        self._tick(Gateway(fail, seed))

    @rule(days=st.integers(30, 200), fail=st.sampled_from([0.0, 0.3]))
    def downtime(self, days, fail):
        self.now += days * DAY + 17
        self._tick(Gateway(fail, days))

    @rule(n=st.integers(0, 3), dt=st.sampled_from([DAY, 31 * DAY]))
    def scheduler_dies(self, n, dt):
        self.now += dt
        try:
            self.eng.tick("vip", self.now, Dies(n, Gateway(0.3, n)))
        except SystemExit:
            self.clean_tick = False
            self.last_tick = None
            # A later scheduler takes the stale claims over.
            self.wall += billing.STALE_CLAIM_S + 1
            return
        self.last_tick, self.clean_tick = self.now, True
        self.paid_since_tick = set()

    @rule(mid=st.sampled_from(MIDS), tier=st.sampled_from(sorted(TIERS)), auto=st.booleans())
    def enrol(self, mid, tier, auto):
        cur = self.current(mid)
        running = cur is not None and cur.state == "active" and cur.auto
        try:
            sub, _ = vip.enrol(self.eng, self.store, mid, tier, self.now, auto=auto)
        except BillingError as e:
            assert running and e.code == "already_member"
            return
        assert not running
        if not auto:
            self.cancelled_at[sub.id] = self.now

    @rule(mid=st.sampled_from(MIDS))
    def cancel(self, mid):
        cur = self.current(mid)
        try:
            sub = vip.cancel(self.eng, self.store, mid)
        except BillingError as e:
            assert e.code == "not_member" and (cur is None or cur.state != "active")
            return
        self.cancelled_at.setdefault(sub.id, self.now)

    @rule(mid=st.sampled_from(MIDS), tier=st.sampled_from(sorted(TIERS)))
    def counter_charge(self, mid, tier):
        cid = self.next_cid.to_bytes(16, "big")
        self.next_cid += 1
        fee = TIERS[tier][0]
        body = {"cid": cid, "kind": "vip", "gross": fee, "amt": fee, "cur": "CNY",
                "at": self.now, "off": False, "clerk": "c", "cpn": [], "mem": mid,
                "tier": tier}
        messages.check("charge", body)
        charge = {"device_id": "T-1", "store_id": "S-1", "cid": cid, "body": body,
                  "now": self.now}
        with self.store.transaction() as tx:
            code, extra = self.svc.on_charge(tx, charge)
        if code is None:
            self.cids[cid] = (body, extra, self.ledger_len())
            self.paid_since_tick.add(mid)
        else:
            assert code == "renewal_in_progress"

    @precondition(lambda self: getattr(self, "cids", None))
    @rule(data=st.data())
    def repeat_counter_charge(self, data):
        cid = data.draw(st.sampled_from(sorted(self.cids)))
        body, extra, _ = self.cids[cid]
        before = self.q(lambda tx: self.eng.ledger(tx, "vip"))
        charge = {"device_id": "T-1", "store_id": "S-1", "cid": cid, "body": body,
                  "now": self.now}
        with self.store.transaction() as tx:
            assert self.svc.on_charge(tx, charge) == (None, extra)
        assert self.q(lambda tx: self.eng.ledger(tx, "vip")) == before

    @rule(mid=st.sampled_from(MIDS), amt=st.sampled_from([100, 5000, 20000]))
    def topup(self, mid, amt):
        with self.store.transaction() as tx:
            members.host_topup(tx, mid, amt, self.now)
        self.topups[mid] += amt + members.topup_bonus(amt)

    def ledger_len(self):
        return len(self.q(lambda tx: self.eng.ledger(tx, "vip")))

    # ------------------------------------------------------------ what must hold

    @invariant()
    def ledger_agrees_with_the_rules(self):
        if not hasattr(self, "store"):
            return
        with self.store.read() as tx:
            subs = self.eng.subs(tx, "vip")
            rows = tx.execute("SELECT sub, start, n, end_at, st, tries, slot, first_try, amt,"
                              " src, paid_at, try_at FROM billing_periods"
                              " ORDER BY sub, n").fetchall()
            att = self.eng.attempts(tx, "vip")
            rems = tx.execute("SELECT sub, start, lead, at FROM billing_reminders").fetchall()
            bals = dict(tx.execute("SELECT mid, bal FROM members").fetchall())
        by_sub = {}
        for r in rows:
            by_sub.setdefault(r[0], []).append(r)
        att_by = {}
        for a in att:
            att_by.setdefault((a["sub"], a["start"]), []).append(a)
        rem_by = {(r[0], r[1]): r for r in rems}
        assert len(rem_by) == len(rems)  # one reminder per period (5 days: a single lead)
        for sub in subs:
            mine = by_sub.get(sub.id, [])
            paid = [r for r in mine if r[4] == "paid"]
            unpaid = [r for r in mine if r[4] != "paid"]
            # In order from the anchor, none skipped, none twice.
            assert [r[2] for r in paid] == list(range(sub.next_n))
            for r in mine:
                assert r[1] == periods.start(sub.anchor, sub.cycle, r[2])
                assert r[3] == periods.start(sub.anchor, sub.cycle, r[2] + 1)
            assert len(unpaid) <= 1
            if unpaid:
                assert unpaid[0][2] == sub.next_n
            assert sub.paid_end == (sub.start(sub.next_n) if sub.next_n else None)
            for r in mine:
                tries = att_by.get((sub.id, r[1]), [])
                assert len(tries) == r[5] or r[4] == "charging"
                assert sum(1 for a in tries if a["ok"]) == (1 if r[4] == "paid" else 0)
                sched = [a for a in tries if a["src"] in ("gateway", "balance")]
                assert len(sched) <= len(RETRY_SLOTS)
                # The documented schedule: slots counted from the period's first try, one try
                # in a slot at most (a late tick tries in the latest slot that has come and
                # skips the ones it missed: no burst), none before its slot's time.
                for i, a in enumerate(sched):
                    assert a["at"] >= r[1] and a["at"] >= r[7]
                    assert a["at"] < r[7] + billing.RETRY_WINDOW_S  # every try in 14 days
                    if i:
                        assert (billing.slot_at(r[7], a["at"])
                                > billing.slot_at(r[7], sched[i - 1]["at"])), (sched, r)
                if sched and r[2] > 0:
                    rem = rem_by.get((sub.id, r[1]))
                    assert rem is not None and rem[3] <= sched[0]["at"]
                off = self.cancelled_at.get(sub.id)
                if off is not None and r[2] > 0:
                    assert all(a["at"] <= off for a in sched), "charged after cancel"
            if sub.state == "lapsed":
                # Only after the try of the last slot, 13 days or more after the first try,
                # or once the 14 days are over (a host that was down then makes no late try).
                r = unpaid[0]
                assert r[4] == "failed"
                if r[6] == len(RETRY_SLOTS) - 1:
                    last = max(a["at"] for a in att_by[(sub.id, r[1])])
                    assert last >= r[7] + RETRY_SLOTS[-1]
                else:
                    assert self.now >= r[7] + billing.RETRY_WINDOW_S  # by a tick up to now
            if sub.state == "active" and sub.auto and self.clean_tick \
                    and self.last_tick is not None and sub.created <= self.last_tick \
                    and sub.owner not in self.paid_since_tick:
                s = sub.start(sub.next_n)
                if s <= self.last_tick:
                    # Started before the last tick and unpaid: it must be waiting for a retry.
                    assert unpaid and unpaid[0][4] == "failed", (sub.to_dict(), unpaid)
                    assert billing.next_try(unpaid[0][7], unpaid[0][6]) > self.last_tick
        for (_sid, start), r in rem_by.items():
            assert r[3] >= start - vip.REMINDER_LEAD
            assert r[2] == vip.REMINDER_LEAD
        # Money: what left the stored balances is exactly what paid periods took from them.
        taken = Counter()
        owner = {s.id: s.owner for s in subs}
        for r in rows:
            if r[4] == "paid" and r[9] == "balance":
                taken[owner[r[0]]] += r[8]
        for mid in MIDS:
            assert bals[mid] >= 0
            assert START_BAL + self.topups[mid] - bals[mid] == taken[mid]


VipModel.TestCase.settings = settings(
    max_examples=int(os.environ.get("VIP_MODEL_EXAMPLES", "100")), stateful_step_count=25,
    deadline=None, suppress_health_check=[HealthCheck.too_slow])
test_vip_renewal_model = VipModel.TestCase


def test_vip_renewal_model_on_postgresql(pg_server):
    class OnPostgres(VipModel):
        new_db = staticmethod(lambda: pg_server.new_database("vipmodel"))

    run_state_machine_as_test(OnPostgres, settings=settings(
        max_examples=int(os.environ.get("VIP_MODEL_PG_EXAMPLES", "15")),
        stateful_step_count=20, deadline=None,
        suppress_health_check=[HealthCheck.too_slow]))
