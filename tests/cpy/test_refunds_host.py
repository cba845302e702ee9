# Refunds on the host (SPEC 8.3; host_sim/refunds.py, refunds_cli.py), on SQLite and PostgreSQL
# (the conftest's host_db: once per engine). Charges are decided by the host's own processor
# (Charges.decide with the members and refunds services), refunds by the service's handler, in
# transactions as the host runs them: every rule and code, the fee policy, review then
# approve/reject through the host outbox, refunds held until their charge arrives, member
# balances credited back, repeats, and two terminals refunding one sale at once.
import json
import os
import threading

import pytest

from host_sim import __main__ as host_main
from host_sim import members, refunds, service
from host_sim.charges import Charges, Rules
from host_sim.members import Members
from host_sim.refunds import RefundError, Refunds
from host_sim.registry import Registry
from host_sim.service import Context, Msg
from host_sim.store import open_store
from protocol import messages

T0 = 1_800_000_000
DAY = 86400
STORE = "S-1"


class Clock:
    def __init__(self, t=T0):
        self.t = t

    def __call__(self):
        return self.t


def new_id():
    return os.urandom(16)


def sale(amt=1000, kind="sale", at=T0, cur="CNY", **extra):
    body = {"cid": new_id(), "kind": kind, "gross": amt, "amt": amt, "cur": cur, "at": at,
            "off": False, "clerk": "c1", "cpn": []}
    body.update(extra)
    return body


def refund(cid, amt, reason="changed_mind", at=T0 + 60, **extra):
    body = {"rid": new_id(), "cid": cid, "amt": amt, "cur": "CNY", "reason": reason, "at": at,
            "clerk": "c2", "off": False}
    body.update(extra)
    return body


class Rig:
    """The host's database with its charge processor and the two services, as `serve` has
    them; several Rigs on one database are several host workers."""

    def __init__(self, where, clock=None, rules=None):
        self.where = where
        self.clock = clock or Clock()
        self.store = open_store(where)
        self.log = []
        self.reg = Registry(self.store, self.clock)
        self.store.schema(service.OUTBOX_SCHEMA)
        ctx = Context(self.store, self.clock, self.log.append)
        for cls in (Members, Refunds):
            self.store.schema(cls.SCHEMA)
        self.refunds = Refunds(ctx)
        self.charges = Charges(self.reg, rules, services=[Members(ctx), self.refunds])

    def register(self, *devs):
        for dev in devs:
            self.reg.register(dev, STORE, "M-1")

    def charge(self, body, dev="T-1"):
        messages.check("charge", body)
        with self.store.transaction() as tx:
            return self.charges.decide(tx, {"device_id": dev, "store_id": STORE,
                                            "cid": body["cid"], "body": body,
                                            "now": self.clock()})[0]

    def refund(self, body, dev="T-1", tx=None):
        messages.check("refund", body)
        if tx is None:
            with self.store.transaction() as tx:
                return self.refund(body, dev, tx)
        [out] = self.refunds.up["refund"](tx, Msg(dev, STORE, "refund", body, 1, self.clock()))
        assert (out.device_id, out.mtype) == (dev, "refund_result")
        self.log.append(out.note)
        messages.check("refund_result", out.body)
        return out.body

    def outbox(self):
        with self.store.transaction() as tx:
            return service.take_outbox(tx)

    def rows(self):
        with self.store.read() as tx:
            return refunds.every(tx)

    def settings(self, **kw):
        with self.store.transaction() as tx:
            return refunds.set_settings(tx, **kw)

    def review(self, what, rid, note=None, by="sup"):
        with self.store.transaction() as tx:
            r = refunds.find_waiting(tx, rid.hex())
            if what == "approve":
                return refunds.approve(tx, r, by, self.clock())
            return refunds.reject(tx, r, note, by, self.clock())

    def close(self):
        self.store.close()


@pytest.fixture
def rig(host_db):
    r = Rig(host_db)
    r.register("T-1", "T-2")
    yield r
    r.close()


def test_a_refund_within_the_rules_is_approved_with_the_fee_and_said_once(rig):
    rig.settings(fee_pct=10)
    s = sale(1000)
    assert rig.charge(s)["st"] == "approved"
    b = refund(s["cid"], 400)
    a = rig.refund(b)
    assert a == {"rid": b["rid"], "st": "approved", "fee": 40, "net": 360}
    # The shop's fault costs the customer nothing.
    b2 = refund(s["cid"], 300, reason="defective")
    assert rig.refund(b2, dev="T-2") == {"rid": b2["rid"], "st": "approved", "fee": 0,
                                         "net": 300}
    # A repeat gets the same answer and changes nothing.
    assert rig.refund(b) == a
    assert rig.log[-1] == "refund T-1 rid=%s cid=%s amt=400 -> approved (repeat)" % (
        b["rid"].hex(), s["cid"].hex())
    [r1, r2] = rig.rows()
    assert (r1["device_id"], r1["st"], r1["charge_dev"], r1["decided_at"], r1["clerk"],
            r1["reason"]) == ("T-1", "approved", "T-1", T0, "c2", "changed_mind")
    assert r2["device_id"] == "T-2"
    # Another body under the same rid: refused, counted, the stored refund stands.
    other = dict(b, amt=1)
    assert rig.refund(other) == {"rid": b["rid"], "st": "rejected", "code": "rid_reused"}
    assert rig.reg.drops() == {"T-1": {"rid_reused": 1}}
    assert rig.log[-1].endswith("-> rejected code=rid_reused (reused)")
    assert rig.refund(b) == a and len(rig.rows()) == 2



def test_a_reason_is_any_text_as_spec_types_it(rig):
    # SPEC 8.3 types `reason` as text: another terminal's words are answered, never dropped
    # (a dropped request would be retried for ever); SPEC's own words for the shop's fault
    # cost no fee, like this terminal's codes.
    rig.settings(fee_pct=10)
    s = sale(3000)
    assert rig.charge(s)["st"] == "approved"
    for reason, fee in (("wrong item", 0), ("Not delivered", 0), ("changed mind", 100),
                        ("the customer found it cheaper elsewhere", 100)):
        b = refund(s["cid"], 1000 if fee else 500, reason=reason)
        messages.check("refund", b)
        a = rig.refund(b)
        assert (a["st"], a["fee"]) == ("approved", fee), reason
    assert "the customer found it cheaper elsewhere" in [r["reason"] for r in rig.rows()]
    with pytest.raises(messages.MessageError):
        messages.check("refund", refund(s["cid"], 1, reason=""))

@pytest.mark.parametrize("case,code", [
    ("declined", "charge_declined"), ("window", "window_expired"),
    ("over", "exceeds_refundable"), ("topup", "not_refundable"), ("vip", "not_refundable"),
    ("currency", "wrong_currency"), ("twice", "unknown_charge")])
def test_refusals_carry_their_code(host_db, case, code):
    rig = Rig(host_db, rules=Rules(decline_over=5000))
    rig.register("T-1", "T-2")
    with rig.store.transaction() as tx:
        members.add(tx, "M-1", "M-1", "Ada", "gold", 0, T0)
    s = {"declined": sale(6000), "window": sale(1000), "over": sale(1000),
         "topup": sale(1000, "topup", mem="M-1"), "vip": sale(1000, "vip", mem="M-1",
                                                              tier="gold"),
         "currency": sale(1000, cur="USD"), "twice": sale(1000)}[case]
    rig.charge(s)
    if case == "twice":
        rig.charge(s, dev="T-2")  # the same cid at two terminals: which sale is meant?
    if case == "window":
        rig.clock.t = T0 + 30 * DAY + 1
    b = refund(s["cid"], 1001 if case == "over" else 1000, at=rig.clock())
    a = rig.refund(b)
    assert (a["st"], a["code"]) == ("rejected", code)
    assert "fee" not in a and "net" not in a
    [r] = rig.rows()
    assert r["st"] == "rejected" and r["code"] == code and r["decided_at"] == rig.clock()
    rig.close()


def test_the_window_counts_from_the_charge_to_the_request_never_past_the_host_clock(rig):
    rig.settings(window_s=3600)
    s = sale(1000, at=T0 - 3600)
    rig.charge(s)
    # Asked on time (offline), reaching the host later: within the window.
    assert rig.refund(refund(s["cid"], 100, at=T0))["st"] == "approved"
    # A terminal clock ahead of the host cannot stretch it; one second over is out.
    assert rig.refund(refund(s["cid"], 100, at=T0 + 1))["st"] == "approved"
    rig.clock.t = T0 + 1
    assert rig.refund(refund(s["cid"], 100, at=T0 + 5))["code"] == "window_expired"


def test_refunds_never_add_up_past_the_charge(rig):
    s = sale(1000)
    rig.charge(s)
    assert rig.refund(refund(s["cid"], 600))["st"] == "approved"
    assert rig.refund(refund(s["cid"], 401), dev="T-2")["code"] == "exceeds_refundable"
    assert rig.refund(refund(s["cid"], 400), dev="T-2")["st"] == "approved"
    assert rig.refund(refund(s["cid"], 1))["code"] == "exceeds_refundable"


def test_above_auto_max_a_refund_waits_for_review_and_holds_its_amount(rig):
    rig.settings(auto_max=500, fee_pct=5)
    s = sale(1000)
    rig.charge(s)
    big = refund(s["cid"], 800)
    assert rig.refund(big) == {"rid": big["rid"], "st": "review", "fee": 40, "net": 760}
    # The amount in review is reserved: only 200 is left for anyone else.
    assert rig.refund(refund(s["cid"], 300), dev="T-2")["code"] == "exceeds_refundable"
    small = refund(s["cid"], 200, reason="wrong_item")
    assert rig.refund(small, dev="T-2")["st"] == "approved"
    # Asking again: still in review, nothing changes.
    assert rig.refund(big)["st"] == "review"
    with rig.store.read() as tx:
        assert [r["rid"] for r in refunds.waiting(tx)] == [big["rid"]]
    assert rig.outbox() == []
    r = rig.review("approve", big["rid"], by="Mia")
    assert (r["st"], r["decided_by"], r["fee"], r["net"]) == ("approved", "Mia", 40, 760)
    assert rig.outbox() == [("T-1", "refund_result", {"rid": big["rid"], "st": "approved",
                                                      "fee": 40, "net": 760})]
    # The terminal that asks again now gets the final answer; nothing waits any more.
    assert rig.refund(big)["st"] == "approved"
    with pytest.raises(RefundError) as e:
        rig.review("approve", big["rid"])
    assert e.value.code == "not_waiting"


def test_a_rejected_review_frees_the_amount_and_tells_the_terminal(rig):
    rig.settings(auto_max=0)
    s = sale(1000)
    rig.charge(s)
    b = refund(s["cid"], 1000)
    assert rig.refund(b, dev="T-2")["st"] == "review"
    r = rig.review("reject", b["rid"], note="  no receipt shown  ")
    assert (r["st"], r["code"], r["note"]) == ("rejected", "review_rejected", "no receipt shown")
    assert rig.outbox() == [("T-2", "refund_result", {
        "rid": b["rid"], "st": "rejected", "code": "review_rejected",
        "note": "no receipt shown"})]
    # The whole amount may be asked again; in review it is held once more.
    b2 = refund(s["cid"], 1000)
    assert rig.refund(b2)["st"] == "review"
    rig.settings(auto_max=10000)
    assert rig.refund(refund(s["cid"], 1, reason="other"))["code"] == "exceeds_refundable"
    # A long reason is cut to what the message carries.
    r = rig.review("reject", b2["rid"], note="x" * 100)
    assert r["note"] == "x" * 64
    messages.check("refund_result", rig.outbox()[0][2])


def test_a_refund_of_a_charge_the_host_does_not_know_is_rejected_unknown_charge(rig):
    """SPEC 8.3: refunds only of known charges. A sale still offline at its till is refunded
    once it has reached the host, with a new request; the rejected one stays rejected."""
    s = sale(1000)
    b = refund(s["cid"], 700)
    assert rig.refund(b, dev="T-2") == {"rid": b["rid"], "st": "rejected",
                                        "code": "unknown_charge"}
    messages.check("refund_result", rig.refund(b, dev="T-2"))
    with rig.store.read() as tx:
        assert refunds.waiting(tx) == []
    [row] = rig.rows()
    assert row["st"] == "rejected" and row["decided_at"] is not None
    with pytest.raises(RefundError) as e:
        rig.review("approve", b["rid"])
    assert e.value.code == "not_waiting"
    # Its charge arrives: nothing is decided behind the clerk's back; a repeat of the rejected
    # request gets the same answer, never a refund.
    assert rig.charge(s)["st"] == "approved"
    assert rig.outbox() == []
    assert rig.refund(b, dev="T-2")["st"] == "rejected"
    # A new request for the sale, now known, is decided by the rules.
    b2 = refund(s["cid"], 700)
    assert rig.refund(b2, dev="T-2") == {"rid": b2["rid"], "st": "approved", "fee": 0,
                                         "net": 700}


def test_a_refund_of_a_member_payment_goes_back_to_the_balance(rig):
    rig.settings(fee_pct=10)
    with rig.store.transaction() as tx:
        members.add(tx, "M-7", "M-1", "Ada", "gold", 5000, T0)
        m = members.locked(tx, "M-7")
        members.add_code(tx, m, b"\x07" * 16, T0, T0 + 60)
    s = sale(2000, "member", mem="M-7", mcti=b"\x07" * 16)
    assert rig.charge(s)["bal"] == 3000
    b = refund(s["cid"], 1000)
    assert rig.refund(b) == {"rid": b["rid"], "st": "refunded", "fee": 100, "net": 900,
                             "bal": 3900}
    with rig.store.read() as tx:
        h = members.history(tx, "M-7")[-1]
    assert (h["kind"], h["bal_delta"], h["note"]) == ("refund", 900, "refund " + b["rid"].hex())
    # A credit the members service cannot make fails: nothing moves, the amount is free.
    with rig.store.transaction() as tx:
        tx.execute("UPDATE members SET bal=? WHERE mid=?", (members.MAX_AMOUNT - 10, "M-7"))
    b2 = refund(s["cid"], 1000, reason="defective")
    assert rig.refund(b2) == {"rid": b2["rid"], "st": "failed", "code": "balance_limit",
                              "fee": 0, "net": 1000}
    with rig.store.read() as tx:
        assert members.member(tx, "M-7")["bal"] == members.MAX_AMOUNT - 10
        assert len(members.history(tx, "M-7")) == 3
    with rig.store.transaction() as tx:
        tx.execute("UPDATE members SET bal=0 WHERE mid=?", ("M-7",))
    assert rig.refund(refund(s["cid"], 1000, reason="defective"))["bal"] == 1000


def test_two_terminals_refunding_one_sale_at_once_never_over_refund(rig):
    """Worker A holds its transaction open after deciding; worker B, on its own connection,
    must wait for A's commit (the charge's row lock; on SQLite the write lock) and then sees
    A's refund: one approved, one exceeds_refundable."""
    s = sale(1000)
    rig.charge(s)
    a_decided, a_release = threading.Event(), threading.Event()
    results = {}
    # Each worker's connection is opened (and its schema checked) before either begins.
    wa, wb = Rig(rig.where), Rig(rig.where)

    def worker_a():
        with wa.store.transaction() as tx:
            results["A"] = wa.refund(refund(s["cid"], 700), "T-1", tx)
            a_decided.set()
            a_release.wait(30)

    def worker_b():
        results["B"] = wb.refund(refund(s["cid"], 700), "T-2")

    ta = threading.Thread(target=worker_a)
    ta.start()
    assert a_decided.wait(30)
    tb = threading.Thread(target=worker_b)
    tb.start()
    try:
        tb.join(1.0)
        assert tb.is_alive() and "B" not in results  # B waits for A's lock
    finally:
        a_release.set()
    ta.join(30)
    tb.join(30)
    wa.close()
    wb.close()
    assert results["A"]["st"] == "approved"
    assert (results["B"]["st"], results["B"]["code"]) == ("rejected", "exceeds_refundable")


def test_many_concurrent_refunds_never_pass_the_charge(rig):
    s = sale(1000)
    rig.charge(s)
    barrier = threading.Barrier(4)
    answers = []
    workers = [Rig(rig.where) for _ in range(4)]

    def worker(w, dev):
        barrier.wait(30)
        for _ in range(3):
            answers.append(w.refund(refund(s["cid"], 150), dev))

    threads = [threading.Thread(target=worker, args=(w, "T-%d" % (i % 2 + 1)))
               for i, w in enumerate(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for w in workers:
        w.close()
    sts = sorted(a["st"] for a in answers)
    assert sts == ["approved"] * 6 + ["rejected"] * 6  # 6 x 150 = 900 <= 1000 < 7 x 150
    assert sum(r["amt"] for r in rig.rows() if r["st"] == "approved") == 900


# ---------------------------------------------------------------- command line and report

def run(capsys, *argv):
    rc = host_main.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, [json.loads(line) for line in out.splitlines() if line.startswith("{")], err


def test_review_command_line_and_report(rig, capsys):
    db = rig.where
    rc, [st], _ = run(capsys, "refunds", "--db", db, "settings", "--auto-max", 100,
                      "--fee-pct", 3)
    # SPEC 8.3 names the rules refund_window_s, refund_auto_max, refund_fee_pct.
    assert rc == 0 and st == {"refund_window_s": 30 * DAY, "refund_auto_max": 100,
                              "refund_fee_pct": 3}
    rc, [st], _ = run(capsys, "refunds", "--db", db, "settings", "--refund-auto-max", 100,
                      "--refund-fee-pct", 3, "--refund-window-s", 30 * DAY)
    assert rc == 0 and st == {"refund_window_s": 30 * DAY, "refund_auto_max": 100,
                              "refund_fee_pct": 3}
    s = sale(5000)
    rig.charge(s)
    b1, b2 = refund(s["cid"], 1000), refund(s["cid"], 2000, reason="defective")
    rig.refund(b1)
    rig.refund(b2, dev="T-2")
    rig.refund(refund(s["cid"], 50))  # auto-approved
    rc, rows, _ = run(capsys, "refunds", "--db", db, "list")
    assert rc == 0 and sorted((r["amt"], r["rid"], r["device_id"], r["st"], r["cid"])
                              for r in rows) == [
        (1000, b1["rid"].hex(), "T-1", "review", s["cid"].hex()),
        (2000, b2["rid"].hex(), "T-2", "review", s["cid"].hex())]
    # SPEC 8.3 writes `refunds list`: --db may come after the command too
    assert run(capsys, "refunds", "list", "--db", db)[:2] == (0, rows)
    rc, out, err = run(capsys, "refunds", "--db", db, "approve", b1["rid"].hex()[:10], "--by",
                       "Mia")
    assert rc == 0, err
    [r] = out
    assert (r["st"], r["fee"], r["net"], r["decided_by"]) == ("approved", 30, 970,
                                                                           "Mia")
    rc, [r], _ = run(capsys, "refunds", "--db", db, "reject", b2["rid"].hex(), "--reason",
                     "item used")
    assert rc == 0 and (r["st"], r["code"], r["note"]) == ("rejected", "review_rejected",
                                                           "item used")
    assert [o[0] for o in rig.outbox()] == ["T-1", "T-2"]
    rc, _, err = run(capsys, "refunds", "--db", db, "approve", b2["rid"].hex())
    assert rc == 1 and "not_waiting" in err
    with pytest.raises(SystemExit) as e:
        run(capsys, "refunds", "--db", db, "reject", b1["rid"].hex())
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        run(capsys, "refunds", "--db", db, "settings", "--fee-pct", -1)
    assert e.value.code == 2
    rc, _, err = run(capsys, "refunds", "--db", db, "settings", "--fee-pct", 101)
    assert rc == 1 and "refund_fee_pct" in err

    rc, rows, _ = run(capsys, "refunds", "--db", db, "list", "--all")
    assert sorted((r["amt"], r["st"]) for r in rows) == [(50, "approved"), (1000, "approved"),
                                                         (2000, "rejected")]
    rc, lines, _ = run(capsys, "report", "--db", db, "--refunds")
    assert rc == 0 and lines == rows
    capsys.readouterr()
    assert host_main.main(["report", "--db", db]) == 0
    rep = json.loads(capsys.readouterr()[0])
    assert rep["charges"]["approved"]["count"] == 1
    assert rep["refunds"] == {
        "count": 3, "codes": {"review_rejected": 1},
        "states": {"approved": {"count": 2, "amount": {"CNY": 1050}},
                   "rejected": {"count": 1, "amount": {"CNY": 2000}}},
        "paid": {"CNY": 970 + 49}, "fees": {"CNY": 30 + 1}}
