"""Refunds end to end (SPEC 8.3, issue 11) on both runtimes: real mosquitto, `python -m host_sim
serve` (members and refunds services), real terminal processes driven through their keypad and
scanner ptys, the receipt QR read back from the printer file as a scanner would read it, and the
supervisor's review through `python -m host_sim refunds`.

- online: ENTER refunds all that is left, approved at once;
- offline: a refund of a sale still queued offline is recorded, forwarded behind its charge
  once the network is back, and approved (the host saw the charge first);
- above refund_auto_max: `review`, the terminal lists it as waiting, the supervisor approves on
  the host and the terminal clears it; rejected instead: the terminal shows it like a declined
  charge until a supervisor acknowledges it on the keypad;
- window expired: rejected `window_expired`;
- SIGKILL after the commit and before any answer: the same rid is sent again after the boot and
  the host applies it once (the repeat is answered as it stands);
- two terminals refunding one sale at once beyond what was paid: one approved, the other
  `exceeds_refundable`.
"""
import json
import re
import subprocess
import sys
import time

import pytest

from host_sim.__main__ import pin_hash
from host_sim.netcut import NetCut
from tests.support.shop import CUR, ROOT
from tests.support.terminal import wait_until

SUPERVISOR_PIN = "1357"
RECEIPT_QR = re.compile(rb"(T-[A-Z0-9]+/\d{6}/[0-9a-f]{32})")


def host_refunds(shop, *argv):
    """`python -m host_sim refunds --db DB ...`: its JSON lines."""
    out = subprocess.run([sys.executable, "-m", "host_sim", "refunds", "--db", shop.db]
                         + [str(a) for a in argv], cwd=ROOT, capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.decode().splitlines()]


def refund_rows(shop, device_id=None):
    return [r for r in host_refunds(shop, "list", "--all")
            if device_id in (None, r["device_id"])]


def wait_refund(shop, t, pred, timeout=30):
    """The host's refund rows once pred(rows) holds."""
    return wait_until(lambda: (lambda rows: rows if pred(rows) else None)(refund_rows(shop)),
                      timeout, t.tail, interval=0.2)


def receipt_qrs(t):
    """The QR texts of the sale receipts printed so far, oldest first."""
    with open(t.printer_path, "rb") as f:
        return [m.decode() for m in RECEIPT_QR.findall(f.read())]


def printed_after(t, title):
    """What the printer got from the last `title` on, or None before it."""
    with open(t.printer_path, "rb") as f:
        out = f.read()
    i = out.rfind(title)
    return out[i:] if i >= 0 else None


def sell(t, amount):
    """A sale on the keypad; the QR of its receipt."""
    t.sell(amount)
    return wait_until(lambda: receipt_qrs(t), 5, t.tail)[-1]


def refund(t, qr, amount=None, reason="2"):
    """Scans qr, types the amount (None: ENTER alone), picks the reason; the frame that ends
    it (committed or refused)."""
    mark = len(t.read_frames())
    t.press("CLEAR")  # leaves a committed screen; nothing on idle
    t.scan(qr)
    t.wait_frame(lambda f: f["screen"] == "refund", 10, mark)
    t.press(*(list(str(amount)) if amount else []) + ["ENTER"])
    t.wait_frame(lambda f: f["screen"] == "refund" and f["lines"][-1].startswith("5 other"),
                 10, mark)
    t.press(reason)
    return t.wait_frame(lambda f: f["screen"] in ("committed", "refused"), 10, mark)


def records(t):
    return t.wait_status(lambda s: True)["records"]


def idle_with(t, text, timeout=20):
    mark = len(t.read_frames())
    t.press("CLEAR")
    return t.wait_frame(lambda f: f["screen"] == "idle" and any(text in x for x in f["lines"]),
                        timeout, mark)


def terminal(shop, device_id, runtime, port=None):
    t = shop.terminal(device_id, runtime, port=port,
                      pins={"supervisor": pin_hash(SUPERVISOR_PIN)})
    t.wait_status(lambda s: s["online"], 30)
    return t


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_refunds_online_offline_review_reject_and_window(shop, runtime):
    host_refunds(shop, "settings", "--auto-max", 5000)
    shop.start_host()
    relay = NetCut(shop.broker.port)
    try:
        t = terminal(shop, "T-R", runtime, relay.port)
        _online(shop, t)
        sale2 = _offline(shop, t, relay)
        _review_approve(shop, t)
        _review_reject(shop, t)
        # The window: the sale refunded in part offline is now too old for the host.
        host_refunds(shop, "settings", "--window-s", 1)
        time.sleep(2.2)
        f = refund(t, sale2)
        assert f["lines"][0] == "Refund requested 15.00 " + CUR, f  # ENTER: what is left
        rows = wait_refund(shop, t, lambda rows: any(r["code"] == "window_expired"
                                                     for r in rows))
        assert rows[-1]["amt"] == 1500 and rows[-1]["st"] == "rejected"
        idle_with(t, "REFUND REJECTED 15.00")
        t.wait_status(lambda s: s["declined_unseen"] == 1 and s["records"] == 0)
    finally:
        relay.close()


def _online(shop, t):
    qr = sell(t, 1234)
    assert qr.startswith("T-R/000001/")
    f = refund(t, qr)
    assert f["screen"] == "committed" and f["lines"] == ["Refund requested 12.34 " + CUR,
                                                         "sent: the host decides",
                                                         "refund receipt R000002"], f
    [r] = wait_refund(shop, t, lambda rows: rows and rows[0]["st"] == "approved")
    assert (r["amt"], r["cid"], r["reason"], r["charge_dev"], r["device_id"], r["off"]) == (
        1234, qr.split("/")[2], "defective", "T-R", "T-R", False)
    with open(t.printer_path, "rb") as fh:
        assert b"REFUND REQUEST" in fh.read()
    # The host granted it: the payout slip says what to pay back (no fee by default).
    slip = wait_until(lambda: printed_after(t, b"REFUND APPROVED"), 10, t.tail)
    assert b"PAY BACK" in slip and b"12.34 " + CUR.encode() in slip, slip
    t.wait_status(lambda s: s["records"] == 0)
    # Refunded in full: the terminal refuses another, nothing recorded.
    f = refund_refused(t, qr)
    assert "the sale is refunded in full" in f["lines"], f


def refund_refused(t, qr):
    mark = len(t.read_frames())
    t.press("CLEAR")
    t.scan(qr)
    return t.wait_frame(lambda f: f["screen"] == "refused", 10, mark)


def _offline(shop, t, relay):
    relay.cut()
    t.wait_status(lambda s: not s["online"], 20)
    qr = sell(t, 2000)
    f = refund(t, qr, 500, reason="1")
    assert f["lines"][:2] == ["Refund requested 5.00 " + CUR, "queued offline: host decides"], f
    st = t.wait_status(lambda s: True)
    assert st["records"] == 2 and st["queue"]["pending"] == 1  # the sale and its refund
    relay.restore()
    t.wait_status(lambda s: s["online"] and s["records"] == 0, 30)
    cid = qr.split("/")[2]
    rows = wait_refund(shop, t, lambda rows: any(r["cid"] == cid for r in rows))
    [r] = [r for r in rows if r["cid"] == cid]
    assert (r["st"], r["amt"], r["off"], r["reason"]) == ("approved", 500, True, "changed_mind")
    # Forwarded in commit order: the host had the charge when the refund came (never rejected
    # unknown_charge).
    log = shop.host_log()
    assert log.index("cid=%s amt=2000" % cid) < log.index("rid=%s" % r["rid"])
    assert "rid=%s cid=%s amt=500 -> approved\n" % (r["rid"], cid) in log
    return qr


def _review_approve(shop, t):
    qr = sell(t, 8000)
    f = refund(t, qr, 6000)
    assert f["screen"] == "committed"
    cid = qr.split("/")[2]
    rows = wait_refund(shop, t, lambda rows: any(r["cid"] == cid for r in rows))
    [r] = [r for r in rows if r["cid"] == cid]
    assert r["st"] == "review"
    t.wait_status(lambda s: s["refunds"] == {"waiting": 1} and s["records"] == 0)
    idle_with(t, "refunds in review: 1")
    [w] = host_refunds(shop, "list")
    assert w["rid"] == r["rid"]
    [done] = host_refunds(shop, "approve", r["rid"][:12], "--by", "Mia")
    assert (done["st"], done["decided_by"]) == ("approved", "Mia")
    t.wait_status(lambda s: s["refunds"] == {"waiting": 0}, 20)
    assert host_refunds(shop, "list") == []


def _review_reject(shop, t):
    qr = sell(t, 7000)
    refund(t, qr, reason="4")
    t.wait_status(lambda s: s["refunds"] == {"waiting": 1} and s["records"] == 0, 20)
    [w] = host_refunds(shop, "list")
    assert (w["amt"], w["reason"]) == (7000, "not_delivered")
    host_refunds(shop, "reject", w["rid"], "--reason", "no receipt shown")
    # Shown like a declined charge, on idle, until a supervisor acknowledges it.
    f = idle_with(t, "REFUND REJECTED 70.00")
    assert f["lines"][:2] == ["REFUND REJECTED 70.00", "no receipt shown"], f
    t.wait_status(lambda s: s["declined_unseen"] == 1 and s["refunds"] == {"waiting": 0})
    mark = len(t.read_frames())
    t.press("MENU", *SUPERVISOR_PIN, "ENTER")
    f = t.wait_frame(lambda f: f["screen"] == "declined", 10, mark)
    assert any("70.00 review_rejected" in x for x in f["lines"]), f
    t.press("ENTER")
    f = t.wait_frame(lambda f: f["screen"] == "idle" and "1 decline acknowledged" in f["lines"],
                     10, mark)
    assert not any("REFUND REJECTED" in x for x in f["lines"]), f
    t.wait_status(lambda s: s["declined_unseen"] == 0)


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_refund_resent_after_sigkill_and_two_terminals_over_the_limit(shop, runtime):
    shop.start_host()
    a = terminal(shop, "T-K", runtime)
    b = terminal(shop, "T-L", runtime)
    qr_a = sell(a, 3000)
    qr_b = sell(a, 4000)
    a.wait_status(lambda s: s["records"] == 0, 20)
    # The host goes away: what the terminals send now waits for it at the broker.
    shop.host.terminate()
    shop.host.wait(10)

    # SIGKILL after the refund was committed and sent, before any answer could come.
    f = refund(a, qr_a)
    assert f["lines"][0] == "Refund requested 30.00 " + CUR, f
    a.wait_status(lambda s: s["metrics"].get("sent_refund", 0) >= 1)
    a.kill()
    a.start()
    # After the boot the same record (same rid) is sent again.
    a.wait_status(lambda s: s["online"] and s["metrics"].get("sent_refund", 0) >= 1, 30)
    assert records(a) == 1

    # Two terminals refund the second sale at once, each 30.00 of the 40.00 paid. T-L does not
    # hold the sale: its clerk types the amount.
    f = refund(a, qr_b, 3000, reason="3")
    assert f["screen"] == "committed", f
    f = refund(b, qr_b, 3000, reason="3")
    assert f["screen"] == "committed", f
    for t in (a, b):
        t.wait_status(lambda s: s["metrics"].get("sent_refund", 0) >= 1)

    shop.start_host()
    for t in (a, b):
        t.wait_status(lambda s: s["records"] == 0, 30)
    rows = refund_rows(shop)
    cid_a, cid_b = qr_a.split("/")[2], qr_b.split("/")[2]
    [first] = [r for r in rows if r["cid"] == cid_a]
    assert (first["st"], first["amt"], first["device_id"]) == ("approved", 3000, "T-K")
    log = shop.host_log()
    assert log.count("rid=%s" % first["rid"]) == 2, log  # sent twice, applied once
    assert "rid=%s cid=%s amt=3000 -> approved (repeat)" % (first["rid"], cid_a) in log
    both = sorted((r["st"], r["code"] or "", r["device_id"]) for r in rows if r["cid"] == cid_b)
    assert [x[:2] for x in both] == [("approved", ""), ("rejected", "exceeds_refundable")]
    loser = a if both[1][2] == "T-K" else b
    idle_with(loser, "REFUND REJECTED 30.00")
    loser.wait_status(lambda s: s["declined_unseen"] == 1)
    winner = b if loser is a else a
    assert winner.wait_status(lambda s: True)["declined_unseen"] == 0
    assert sum(r["amt"] for r in rows if r["st"] == "approved") == 6000
