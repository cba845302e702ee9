# The sale receipt in ESC/POS: header, totals, coupon lines, a QR of the receipt number, cut.
from device.ports.clock import gmtime
from device.sales.escpos import Receipt, format_amount
from device.sales.sale import receipt_no


def build_receipt(rec, cfg, coupons=(), width=42):
    """rec: the committed sale record; coupons: the verifier results (for names), same order."""
    cur = rec["cur"]
    no = receipt_no(rec)
    r = Receipt(width)
    r.align("center").bold(True).double(True).text(cfg["merchant_id"]).double(False)
    r.bold(False).text("Store %s  Terminal %s" % (cfg["store_id"], cfg["device_id"]))
    r.text(_when(rec["at"])).align("left").text("-" * width)
    r.columns("Receipt", no).columns("Clerk", rec["clerk"]).columns("Sale", format_amount(
        rec["gross"], cur))
    for i, c in enumerate(rec["cpn"]):
        name = coupons[i].get("name") if i < len(coupons) else None
        r.columns("  " + (name or c["cmp"]), "-" + format_amount(c["disc"], cur))
    for c in coupons:
        if c.get("kind") == "item":
            r.columns("  free: %s x%d" % (c.get("sku"), c.get("val", 1)), "0.00")
    r.text("-" * width).bold(True).columns("TOTAL", format_amount(rec["amt"], cur)).bold(False)
    r.text("Approved offline - sent when online" if rec["off"] else "Sent to host")
    r.align("center").qr("%s/%s/%s" % (cfg["device_id"], no, rec["cid"].hex()), module=4)
    r.text(no).feed(3).cut()
    return r.bytes()


def _when(t):
    y, mo, d, h, mi, s = gmtime(t)[:6]
    return "%04d-%02d-%02d %02d:%02d:%02d UTC" % (y, mo, d, h, mi, s)
