# The refund receipt in ESC/POS (SPEC 8.3): what was asked back, for which sale, why, by whom,
# and that the host decides; printed once the refund record is durable.
from device.refunds.record import refund_no
from device.sales.escpos import Receipt, format_amount
from device.sales.receipt import header

REASON_TEXT = {"changed_mind": "changed mind", "defective": "defective",
               "wrong_item": "wrong item", "not_delivered": "not delivered", "other": "other"}


def build_refund_receipt(rec, shop, sale_device, width=42):
    """rec: the committed refund record; sale_device: the terminal that sold (from the QR)."""
    cur = rec["cur"]
    r = Receipt(width)
    header(r, shop, rec["at"], width)
    r.bold(True).text("REFUND REQUEST").bold(False)
    r.columns("Refund", refund_no(rec)).columns("Clerk", rec["clerk"])
    if "sn" in rec:
        r.columns("Sale receipt", "%s/%06d" % (sale_device, rec["sn"]))
    r.text("Sale " + rec["cid"].hex())
    r.columns("Reason", REASON_TEXT.get(rec["reason"], rec["reason"]))
    if rec.get("sup"):
        r.columns("Supervisor", "PIN given")
    r.text("-" * width).bold(True).columns("REFUND", format_amount(rec["amt"], cur)).bold(False)
    r.text("Queued offline - the host decides" if rec["off"] else "Sent - the host decides")
    r.text("Refund id " + rec["rid"].hex())
    r.feed(3).cut()
    return r.bytes()


def build_payout_slip(rec, answer, shop, at, width=42):
    """The slip of a granted refund (SPEC 8.3: the fee is applied and shown): `approved`, the
    shop pays `net` back at the till; `refunded`, the host credited the member's balance."""
    cur = rec["cur"]
    fee = answer.get("fee") or 0
    net = answer.get("net")
    if net is None:
        net = rec["amt"] - fee
    r = Receipt(width)
    header(r, shop, at, width)
    credited = answer.get("st") == "refunded"
    r.bold(True).text("REFUND TO BALANCE" if credited else "REFUND APPROVED").bold(False)
    r.columns("Refund", refund_no(rec)).columns("Asked", format_amount(rec["amt"], cur))
    r.columns("Fee", "-" + format_amount(fee, cur) if fee else format_amount(0, cur))
    r.text("-" * width).bold(True)
    r.columns("CREDITED" if credited else "PAY BACK", format_amount(net, cur)).bold(False)
    if credited and "bal" in answer:
        r.columns("Balance", format_amount(answer["bal"], cur))
    r.text("Sale " + rec["cid"].hex())
    r.text("Refund id " + rec["rid"].hex())
    r.feed(3).cut()
    return r.bytes()
