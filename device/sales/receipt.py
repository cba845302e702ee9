# The sale receipt in ESC/POS: header, totals, coupon and member lines, a QR of the receipt (the
# text a refund scans, SPEC 8.3: DEVICE_ID/RECEIPT_NO/CID_HEX), cut.
from device.ports.clock import gmtime
from device.sales.escpos import Receipt, format_amount
from device.sales.sale import receipt_no
from protocol.schema import all_in

KIND_TITLE = {"member": "Paid from member balance", "topup": "Member balance top-up",
              "vip": "VIP membership"}


def header(r, shop, at, width):
    r.align("center").bold(True).double(True).text(shop["merchant_id"]).double(False)
    r.bold(False).text("Store %s  Terminal %s" % (shop["store_id"], shop["device_id"]))
    r.text(_when(at)).align("left").text("-" * width)


def build_receipt(rec, shop, coupons=(), member=None, answer=None, width=42):
    """rec: the committed sale record; coupons: the verifier results (for names), same order;
    member: the member code's reading; answer: the host's charge_result when it is known."""
    cur = rec["cur"]
    no = receipt_no(rec)
    r = Receipt(width)
    header(r, shop, rec["at"], width)
    if rec["kind"] in KIND_TITLE:
        r.bold(True).text(KIND_TITLE[rec["kind"]]).bold(False)
    r.columns("Receipt", no).columns("Clerk", rec["clerk"]).columns("Sale", format_amount(
        rec["gross"], cur))
    for i, c in enumerate(rec["cpn"]):
        name = coupons[i].get("name") if i < len(coupons) else None
        r.columns("  " + (name or c["cmp"]), "-" + format_amount(c["disc"], cur))
    for c in coupons:
        if c.get("kind") == "item":
            r.columns("  free: %s x%d" % (c.get("sku"), c.get("val", 1)), "0.00")
    if rec.get("mdisc"):
        r.columns("  Member discount", "-" + format_amount(rec["mdisc"], cur))
    if "mem" in rec:
        name = member.get("name") if member else None
        r.columns("Member", (name + " " if name else "") + rec["mem"])
    if "tier" in rec:
        r.columns("VIP tier", rec["tier"])
    answer = answer or {}
    vip = answer.get("vip")
    if vip:
        r.columns("VIP period", "%s - %s" % (_when(vip["start"])[:10], _when(vip["end"])[:10]))
    if "bal" in answer:
        r.columns("Balance", format_amount(answer["bal"], cur))
    if "pts" in answer:
        r.columns("Points", "%d" % answer["pts"])
    r.text("-" * width).bold(True).columns("TOTAL", format_amount(rec["amt"], cur)).bold(False)
    r.text("Approved offline - sent when online" if rec["off"] else "Sent to host")
    r.align("center").qr(receipt_code(shop["device_id"], no, rec["cid"]), module=4)
    r.text(no).feed(3).cut()
    return r.bytes()


def receipt_code(device_id, no, cid):
    """The text of a receipt's QR (SPEC 8.3): DEVICE_ID/RECEIPT_NO/CID_HEX."""
    return "%s/%s/%s" % (device_id, no, cid.hex())


def read_receipt_code(text):
    """(device_id, receipt number, cid) of a receipt QR's text, or None for any other text.
    The device id follows the config's id rule (printable ASCII, no "/+#", at most 64), the
    number is decimal, the cid 32 lowercase hex digits."""
    j = text.rfind("/")
    i = text.rfind("/", 0, j) if j > 0 else -1
    if i <= 0:
        return None
    dev, no, cid = text[:i], text[i + 1:j], text[j + 1:]
    if len(cid) != 32 or not all_in(cid, "0123456789abcdef"):
        return None
    if not 1 <= len(no) <= 9 or not all_in(no, "0123456789"):
        return None
    if len(dev) > 64:
        return None
    for c in dev:
        if c in "/+#" or not 0x21 <= ord(c) <= 0x7E:
            return None
    return dev, int(no), bytes.fromhex(cid)


def _when(t):
    y, mo, d, h, mi, s = gmtime(t)[:6]
    return "%04d-%02d-%02d %02d:%02d:%02d UTC" % (y, mo, d, h, mi, s)
