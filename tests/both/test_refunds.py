# Refunds on the terminal (SPEC 8.3), on both runtimes: the receipt QR, the refund record and its
# queue kind, the `refund` screen on a whole agent (keys and scans as the clerk gives them), the
# host's answers (review, then final; rejected as a notice until a supervisor acknowledges it)
# and restarts in between.
import json

from device import config
from device.agent import Agent
from device.console.commands import Commands
from device.console.lines import Console
from device.ports.clock import FixedClock
from device.ports.storage import PosixFS
from device.refunds.record import REFUND, make_refund, reason_for, refund_body
from device.sales.receipt import read_receipt_code, receipt_code
from device.screens import messages
from device.staff import pins
from protocol import envelope, topics
from protocol import messages as wire
from tests.both.util import tmpdir

NOW = 1795400000
SECRET = bytes(range(32))
TECH = pins.hash_pin("2468", b"tech-salt-000001", 1000)
SUPERVISOR = pins.hash_pin("1357", b"supv-salt-000001", 1000)
DEV = "T-0800"


class Quiet:
    def write(self, text):
        pass


class Clock(FixedClock):
    def __init__(self, t=NOW):
        FixedClock.__init__(self, t, build_time=NOW - 86400)


class Link:
    connected = True


def agent(d, **cfg):
    obj = {"device_id": DEV, "store_id": "S-001", "merchant_id": "M-ACME", "currency": "CNY",
           "secret_hex": SECRET.hex(), "root_keys": ["cd" * 32], "data_dir": d + "/data",
           "pins": {"tech": TECH, "supervisor": SUPERVISOR}}
    obj.update(cfg)
    return Agent(config.parse(obj), PosixFS(), Clock(), log_out=Quiet())


def reboot(a):
    a.queue.log.close()
    return agent(a.data_dir[:-len("/data")], limits=a.cfg["limits"])


def keys(a, *names):
    out = []
    for k in names:
        out = a.clerk.key(k, NOW)
    return out


def screen(actions):
    shows = [x for x in actions if x[0] == "show"]
    return shows[-1][1], shows[-1][2]


def prints(actions):
    return [x[1] for x in actions if x[0] == "print"]


def sell(a, digits):
    """A sale rung up on the keypad; its receipt QR text."""
    keys(a, *(list(digits) + ["ENTER"]))
    out = keys(a, "ENTER")
    assert screen(out)[0] == "committed", out
    rec = a.queue.pending[-1]
    return receipt_code(DEV, "%06d" % rec["n"], rec["cid"])


def down(a, mtype, body, seq):
    a.downlink.receive(topics.down("pos/v1", DEV, mtype),
                       envelope.seal(SECRET, DEV, mtype, seq, NOW, body, bytes(16)))


def refunds(a):
    return [r for r in a.queue.pending if r["r"] == "refund"]


def console(a):
    con = Console(Commands(a.view, None, fs=a.fs, clock=a.clock, log_out=Quiet()))

    def call(line):
        return json.loads(con.feed(line.encode() + b"\n")[0].decode())
    assert call("login 2468")["ok"]
    return call


# -- the receipt code and the record ---------------------------------------------------------
def test_receipt_code_is_read_back_and_nothing_else_is():
    cid = bytes(range(16))
    text = receipt_code("T-0001", "000042", cid)
    assert text == "T-0001/000042/" + cid.hex()
    assert read_receipt_code(text) == ("T-0001", 42, cid)
    assert read_receipt_code("T:9/1234567/" + "ab" * 16) == ("T:9", 1234567, bytes([0xAB]) * 16)
    for bad in ("", "T-0001/000042", "/000042/" + cid.hex(), "T-0001//" + cid.hex(),
                "T-0001/00a042/" + cid.hex(), "T-0001/000042/" + cid.hex().upper(),
                "T-0001/000042/" + cid.hex()[:-2], "T 1/000042/" + cid.hex(),
                "T+1/000042/" + cid.hex(), "X" * 65 + "/1/" + cid.hex(),
                "T-1/1234567890/" + cid.hex(), "PC1:6BFOXN*TS0BI$ZD.P9UOL97O4-2HH77HRM3HSZ"):
        assert read_receipt_code(bad) is None, bad


def test_refund_record_body_and_kind():
    rid, cid = b"\x11" * 16, b"\x22" * 16
    rec = make_refund(rid, 7, cid, 500, "CNY", reason_for("2"), NOW, True, "clerk", 3, True)
    body = refund_body(rec)
    wire.check("refund", body)
    assert body == {"rid": rid, "cid": cid, "amt": 500, "cur": "CNY", "reason": "defective",
                    "at": NOW, "clerk": "clerk", "off": True, "n": 3}
    assert "sn" not in body and "sup" not in body
    assert [reason_for(k) for k in "123456"] == ["changed_mind", "defective", "wrong_item",
                                                  "not_delivered", "other", None]
    assert reason_for("ENTER") is None and reason_for("0") is None
    assert (REFUND.record, REFUND.up, REFUND.answer, REFUND.key) == (
        "refund", "refund", "refund_result", "rid")
    assert not REFUND.final({"st": "review"})
    for st in ("approved", "refunded", "rejected", "failed"):
        assert REFUND.final({"st": st})
        assert REFUND.bad({"st": st}) == (st in ("rejected", "failed"))
    assert REFUND.title(rec) == ("Refund R000007", 500)
    assert REFUND.notice(rec, {"st": "rejected", "code": "window_expired"}, 2) == [
        "REFUND REJECTED 5.00 +1", "code window_expired - see supervisor"]
    assert REFUND.notice(rec, {"st": "rejected", "note": "no receipt"}, 1)[1] == "no receipt"


# -- the screen on a whole agent ---------------------------------------------------------------
def test_refund_of_a_sale_on_this_till_enter_refunds_all_that_is_left():
    a = agent(tmpdir("refund-all"))
    qr = sell(a, "1234")
    out = a.clerk.scan(qr, NOW)
    assert screen(out) == ("refund", ["Refund of receipt 000001", "refundable 12.34 CNY",
                                      "Amount 0.00 CNY", messages.HINT_REFUND_ALL])
    assert screen(keys(a, "ENTER"))[1] == ["Refund 12.34 CNY, why?"] + \
        messages.HINT_REFUND_REASON
    assert screen(keys(a, "9"))[0] == "refund"  # not a reason: nothing happens
    out = keys(a, "2")
    assert screen(out) == ("committed", ["Refund requested 12.34 CNY", messages.REFUND_QUEUED,
                                         "refund receipt R000002"])
    [receipt] = prints(out)
    assert b"REFUND REQUEST" in receipt and b"12.34 CNY" in receipt and b"defective" in receipt
    [rec] = refunds(a)
    assert b"Refund id " + rec["rid"].hex().encode() in receipt
    assert rec["cid"] == a.queue.pending[0]["cid"] and rec["amt"] == 1234
    assert rec["n"] == 2 and rec["sn"] == 1 and rec["off"] is True and "sup" not in rec
    mtype, body = a.queue.message(rec)
    assert mtype == "refund"
    wire.check("refund", body)
    # Forwarded in commit order behind its sale, in the same window.
    assert [r["r"] for r in a.queue.due(0)] == ["sale", "refund"]
    # Nothing left to refund now: the next scan is refused, nothing recorded.
    out = keys(a, "CLEAR")
    assert screen(a.clerk.scan(qr, NOW)) == ("refused", [messages.REFUND_REFUSED] +
                                             messages.REFUND_NOTHING_LEFT + [messages.NOT_SAVED])
    assert len(refunds(a)) == 1


def test_typed_amounts_partial_refunds_and_what_is_left():
    a = agent(tmpdir("refund-part"))
    qr = sell(a, "1000")
    a.uplink.link = Link()  # online: the committed screen says sent
    a.clerk.scan(qr, NOW)
    assert screen(keys(a, "1", "2", "0", "0", "ENTER"))[1][-1] == "at most 10.00 CNY"
    keys(a, "CLEAR", "CLEAR", "CLEAR", "CLEAR")
    assert screen(keys(a, "4", "0", "0"))[1][2] == "Amount 4.00 CNY"
    keys(a, "ENTER")
    assert screen(keys(a, "CLEAR"))[1][2] == "Amount 4.00 CNY"  # back to the amount
    keys(a, "ENTER")
    out = keys(a, "1")
    assert screen(out) == ("committed", ["Refund requested 4.00 CNY", messages.REFUND_SENT,
                                         "refund receipt R000002"])
    assert refunds(a)[0]["off"] is False and refunds(a)[0]["reason"] == "changed_mind"
    keys(a, "CLEAR")
    assert screen(a.clerk.scan(qr, NOW))[1][1] == "refundable 6.00 CNY"
    out = keys(a, "CANCEL")
    assert screen(out) == ("idle", screen(out)[1]) and messages.REFUND_CANCELLED in screen(out)[1]
    assert len(refunds(a)) == 1


def test_a_sale_this_till_does_not_hold_needs_a_typed_amount():
    a = agent(tmpdir("refund-other"))
    qr = receipt_code("T-0999", "000031", b"\x31" * 16)
    assert screen(a.clerk.scan(qr, NOW))[1] == ["Refund of receipt 000031",
                                                messages.REFUND_UNKNOWN_SALE, "Amount 0.00 CNY",
                                                messages.HINT_AMOUNT]
    assert screen(keys(a, "ENTER"))[1][-1] == messages.REFUND_TYPE_AMOUNT
    keys(a, "9", "9", "9", "9", "9", "ENTER", "5")
    [rec] = refunds(a)
    assert (rec["cid"], rec["amt"], rec["sn"], rec["reason"]) == (b"\x31" * 16, 99999, 31,
                                                                 "other")


def test_a_declined_sale_is_not_refunded():
    a = agent(tmpdir("refund-declined"))
    qr = sell(a, "500")
    cid = a.queue.pending[0]["cid"]
    down(a, "charge_result", {"cid": cid, "st": "declined", "code": "over_limit", "cpn": []}, 5)
    out = a.clerk.scan(qr, NOW)
    assert screen(out)[0] == "refused"
    assert messages.REFUND_OF_DECLINED[0] in screen(out)[1] and not refunds(a)


def test_above_refund_pin_over_the_supervisor_pin_is_asked():
    a = agent(tmpdir("refund-pin"), limits={"refund_pin_over": 1000})
    qr = sell(a, "3000")
    a.clerk.scan(qr, NOW)
    keys(a, "1", "0", "0", "0", "ENTER")
    assert screen(keys(a, "3"))[0] == "committed"  # 10.00 is not above 10.00
    keys(a, "CLEAR")
    a.clerk.scan(qr, NOW)
    keys(a, "ENTER")
    out = keys(a, "4")
    assert screen(out) == ("pin", [messages.TITLE_REFUND_PIN, "PIN ", messages.HINT_PIN])
    assert len(refunds(a)) == 1
    assert screen(keys(a, "0", "0", "0", "0", "ENTER"))[1][-1] == messages.WRONG_PIN
    out = keys(a, "1", "3", "5", "7", "ENTER")
    assert screen(out)[0] == "committed" and b"PIN given" in prints(out)[0]
    rec = refunds(a)[1]
    assert rec["amt"] == 2000 and rec["sup"] is True and rec["reason"] == "not_delivered"
    # CANCEL at the PIN records nothing.
    keys(a, "CLEAR")
    out = a.clerk.scan(receipt_code("T-9", "000001", b"\x01" * 16), NOW)
    keys(a, "5", "0", "0", "0", "ENTER", "1")
    assert screen(keys(a, "CANCEL"))[0] == "idle" and len(refunds(a)) == 2


def test_a_gate_refuses_new_refunds_with_nothing_recorded():
    a = agent(tmpdir("refund-gate"))
    qr = sell(a, "800")
    lines = ["LICENCE RESTRICTED", "renew the service"]
    asked = []
    closed = [True]

    def gate(action):
        asked.append(action)
        return lines if action == "refund" and closed[0] else None
    a.till.add_gate(gate)
    out = a.clerk.scan(qr, NOW)
    assert screen(out) == ("refused", [messages.REFUND_REFUSED] + lines + [messages.NOT_SAVED])
    assert "refund" in asked and not refunds(a)
    # A gate that closes while the clerk types refuses at the commit too.
    closed[0] = False
    keys(a, "CLEAR")
    a.clerk.scan(qr, NOW)
    keys(a, "ENTER")
    closed[0] = True
    assert screen(keys(a, "1"))[0] == "refused" and not refunds(a)


# -- answers, waiting, notices and restarts ----------------------------------------------------
def test_review_waits_across_a_restart_then_the_final_answer_clears_it():
    a = agent(tmpdir("refund-review"))
    sell(a, "2000")
    qr = receipt_code(DEV, "000001", a.queue.pending[0]["cid"])
    a.clerk.scan(qr, NOW)
    keys(a, "ENTER", "2")
    rid = refunds(a)[0]["rid"]
    body = a.queue.message(refunds(a)[0])[1]
    # Power cut before any answer: the same record (same rid, same body) is forwarded again.
    a = reboot(a)
    assert [a.queue.message(r)[1] for r in refunds(a)] == [body]
    down(a, "refund_result", {"rid": rid, "st": "review", "fee": 0, "net": 2000}, 3)
    assert not refunds(a) and a.queue.count() == 1  # the sale is still pending
    assert [p[0]["rid"] for p in a.queue.waiting] == [rid]
    assert messages.refunds_waiting(1) in screen(a.clerk.refresh(NOW))[1]
    assert a.status.console_fields()["refunds"] == {"waiting": 1}
    assert a.roles.waiting_lines() == ["R000002 20.00 review"]
    # The same "still in review" again writes nothing.
    size = a.fs.size(a.queue.log.path)
    down(a, "refund_result", {"rid": rid, "st": "review"}, 4)
    assert a.fs.size(a.queue.log.path) == size
    # Asked again after every reconnect; still waiting after a restart.
    assert [r["rid"] for r in a.queue.waiting_due()] == [rid]
    a = reboot(a)
    assert [p[0]["rid"] for p in a.queue.waiting] == [rid]
    assert a.queue.find(rid)[1]["st"] == "review"
    # The supervisor's menu shows it under "waiting"; nothing to acknowledge.
    keys(a, "MENU", "1", "3", "5", "7")
    out = keys(a, "ENTER")
    assert screen(out) == ("declined", [messages.waiting_title(1), "R000002 20.00 review",
                                        messages.HINT_BACK])
    keys(a, "CANCEL")
    down(a, "refund_result", {"rid": rid, "st": "approved", "fee": 0, "net": 2000}, 9)
    assert not a.queue.waiting and a.queue.notices() == []
    assert messages.refunds_waiting(1) not in screen(a.clerk.refresh(NOW))[1]
    a = reboot(a)
    assert not a.queue.waiting and a.queue.find(rid)[1]["st"] == "approved"
    # A late repeat of the final answer changes nothing.
    down(a, "refund_result", {"rid": rid, "st": "approved"}, 10)
    assert a.queue.find(rid)[1]["st"] == "approved" and a.queue.dup_results == 1


_SEQ = [100]


def _seq():
    """A host seq above any before it (the host's answers only count with a growing seq)."""
    _SEQ[0] += 1
    return _SEQ[0]


def _refund_online(a, digits, reason):
    if a.clerk.screen != "idle":
        keys(a, "CLEAR")  # leaves `committed`
    qr = sell(a, digits)
    a.uplink.link = Link()  # online: the committed screen says sent
    down(a, "charge_result", {"cid": a.queue.pending[-1]["cid"], "st": "approved", "cpn": []},
         _seq())
    a.clerk.scan(qr, NOW)
    keys(a, "ENTER")
    out = keys(a, reason)
    assert screen(out)[1][1] == messages.REFUND_SENT
    return refunds(a)[-1]


def test_a_granted_refund_prints_its_payout_slip_and_committed_says_what_to_pay_back():
    a = agent(tmpdir("refund-payout"))
    rec = _refund_online(a, "2000", "1")
    assert prints(a.clerk.tick(NOW)) == []  # nothing before the host's answer
    down(a, "refund_result", {"rid": rec["rid"], "st": "approved", "fee": 200, "net": 1800},
         _seq())
    out = a.clerk.tick(NOW)
    [slip] = prints(out)
    assert b"REFUND APPROVED" in slip and b"PAY BACK" in slip and b"18.00 CNY" in slip
    assert b"-2.00 CNY" in slip and b"R000002" in slip and rec["rid"].hex().encode() in slip
    assert screen(out) == ("committed", ["Refund requested 20.00 CNY",
                                         "approved: pay back 18.00 CNY", "fee kept 2.00 CNY",
                                         "refund receipt R000002"])
    assert a.clerk.tick(NOW) == []  # printed once, drawn once
    # Paid back to a member's balance by the host itself: the slip says so, with the balance.
    rec = _refund_online(a, "500", "2")
    down(a, "refund_result", {"rid": rec["rid"], "st": "refunded", "fee": 0, "net": 500,
                              "bal": 12500}, _seq())
    out = a.clerk.tick(NOW)
    [slip] = prints(out)
    assert b"REFUND TO BALANCE" in slip and b"CREDITED" in slip and b"125.00 CNY" in slip
    assert b"PAY BACK" not in slip
    assert screen(out)[1] == ["Refund requested 5.00 CNY", "credited to balance 5.00 CNY",
                              "Balance 125.00 CNY", "refund receipt R000004"]


def test_a_refund_granted_after_review_prints_its_slip_and_a_rejected_one_none():
    a = agent(tmpdir("refund-payout-late"))
    rec = _refund_online(a, "3000", "3")
    down(a, "refund_result", {"rid": rec["rid"], "st": "review", "fee": 0, "net": 3000},
         _seq())
    assert prints(a.clerk.tick(NOW)) == []  # review is not final: no slip
    keys(a, "CLEAR")
    idle = screen(a.clerk.refresh(NOW))
    assert idle[0] == "idle"
    # Decided later, the clerk elsewhere: the slip prints, the idle screen is left alone.
    down(a, "refund_result", {"rid": rec["rid"], "st": "approved", "fee": 0, "net": 3000},
         _seq())
    out = a.clerk.tick(NOW)
    [slip] = prints(out)
    assert b"PAY BACK" in slip and b"30.00 CNY" in slip and b"Fee" in slip
    assert [x for x in out if x[0] == "show"] == []
    # A restart replays the journal: no slip is printed again.
    a = reboot(a)
    assert prints(a.clerk.tick(NOW)) == []
    rec = _refund_online(a, "900", "5")
    down(a, "refund_result", {"rid": rec["rid"], "st": "rejected", "code": "window_expired"},
         _seq())
    assert prints(a.clerk.tick(NOW)) == []


def test_rejected_is_a_notice_until_a_supervisor_acknowledges_it():
    a = agent(tmpdir("refund-reject"))
    qr = sell(a, "700")
    a.clerk.scan(qr, NOW)
    keys(a, "ENTER", "5")
    rid = refunds(a)[0]["rid"]
    down(a, "charge_result", {"cid": a.queue.pending[0]["cid"], "st": "approved", "cpn": []}, 1)
    down(a, "refund_result", {"rid": rid, "st": "review"}, 2)
    down(a, "refund_result", {"rid": rid, "st": "rejected", "code": "review_rejected",
                              "note": "no receipt shown"}, 3)
    assert a.queue.count() == 0 and not a.queue.waiting
    idle = screen(keys(a, "CLEAR"))[1]
    assert idle[:2] == ["REFUND REJECTED 7.00", "no receipt shown"]
    # Like a declined charge: on every screen's top line, in the console, kept over a restart.
    call = console(a)
    listed = call("queue list")
    assert listed["declined_unseen"] == 1 and listed["pending"] == []
    [n] = listed["notices"]
    assert (n["kind"], n["id"], n["st"], n["code"], n["acked"], n["amt"]) == (
        "refund", rid.hex(), "rejected", "review_rejected", False, 700)
    a = reboot(a)
    assert screen(a.clerk.refresh(NOW))[1][0] == "REFUND REJECTED 7.00"
    # What was asked comes back: the whole 7.00 may be asked for again (under the notice).
    keys(a, "CLEAR")
    assert screen(a.clerk.scan(qr, NOW))[1][:3] == ["REFUND REJECTED 7.00",
                                                    "Refund of receipt 000001",
                                                    "refundable 7.00 CNY"]
    keys(a, "CANCEL")
    keys(a, "MENU", "1", "3", "5", "7")
    out = keys(a, "ENTER")
    assert screen(out) == ("declined", ["REFUND REJECTED 7.00", "Declined: 1",
                                        "R000002 7.00 review_rejected",
                                        messages.HINT_DECLINED])
    out = keys(a, "F1")
    assert b"Refund R000002" in prints(out)[0] and b"review_rejected" in prints(out)[0]
    assert screen(keys(a, "ENTER"))[1][-1] == messages.acknowledged(1)
    assert a.queue.notices() == []
    a = reboot(a)
    assert a.queue.notices() == [] and screen(a.clerk.refresh(NOW))[1][0] == "S-001"


def test_queue_list_shows_pending_and_waiting_refunds():
    a = agent(tmpdir("refund-list"))
    qr = sell(a, "900")
    a.clerk.scan(qr, NOW)
    keys(a, "3", "0", "0", "ENTER", "3")
    rid1 = refunds(a)[0]["rid"]
    keys(a, "CLEAR")
    a.clerk.scan(qr, NOW)
    keys(a, "2", "0", "0", "ENTER", "4")
    rid2 = refunds(a)[1]["rid"]
    down(a, "refund_result", {"rid": rid1, "st": "review", "fee": 0, "net": 300}, 1)
    listed = console(a)("queue list")
    assert [(o["kind"], o["id"], o["amt"], o["reason"]) for o in listed["others"]] == [
        ("refund", rid2.hex(), 200, "not_delivered")]
    [w] = listed["waiting"]
    assert (w["id"], w["st"], w["code"], w["cid"]) == (
        rid1.hex(), "review", None, a.queue.pending[0]["cid"].hex())
    assert listed["pending_count"] == 1  # charges only: refunds are not offline sales
    assert a.status.console_fields()["records"] == 2
