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
