# The refund record (SPEC 8.3): one journal record per refund request, its rid fixed at commit,
# forwarded as `refund` through the same queue as charges (device/sales/queue.py), so it has the
# charges' ordering, exactly-once and power-cut guarantees. Format: docs/formats.md.
from device.sales.escpos import format_amount
from device.sales.queue import Kind
from device.sales.sale import RECORD_VERSION
from protocol.store_messages import REFUND_BAD, REFUND_REASONS

RECORD = "refund"
REVIEW = "review"  # the one answer that is not final: the request waits for the host's review


def reason_for(key):
    """The reason code a digit picks ("1" changed_mind .. "5" other), or None."""
    if len(key) == 1 and "1" <= key <= "5":
        return REFUND_REASONS[int(key) - 1]
    return None


def make_refund(rid, n, cid, amt, cur, reason, at, off, clerk, sale_n=None, sup=False):
    """rid: 16 random bytes fixed now; n: this refund's receipt number (the sales' counter);
    sale_n: the refunded sale's receipt number when its QR gave one; sup: the supervisor's PIN
    was given for it (above refund_pin_over)."""
    rec = {"r": RECORD, "v": RECORD_VERSION, "rid": rid, "n": n, "cid": cid, "amt": amt,
           "cur": cur, "reason": reason, "at": at, "off": off, "clerk": clerk}
    if sale_n is not None:
        rec["sn"] = sale_n
    if sup:
        rec["sup"] = True
    return rec


def refund_body(rec):
    """The `refund` body of a refund record."""
    body = {"rid": rec["rid"], "cid": rec["cid"], "amt": rec["amt"], "cur": rec["cur"],
            "reason": rec["reason"], "at": rec["at"], "clerk": rec["clerk"], "off": rec["off"]}
    if "sn" in rec:
        body["n"] = rec["sn"]
    return body


def refund_no(rec):
    return "R%06d" % rec["n"]


class RefundKind(Kind):
    """The queue kind of refunds: answered by refund_result, final unless `review`; a rejected
    or failed one is a notice a supervisor acknowledges, like a declined charge."""

    def __init__(self):
        Kind.__init__(self, RECORD, "refund", "refund_result", "rid", refund_body,
                      final=lambda a: a.get("st") != REVIEW,
                      bad=lambda a: a.get("st") in REFUND_BAD)

    def title(self, rec):
        return "Refund " + refund_no(rec), rec["amt"]

    def notice(self, rec, answer, count):
        more = " +%d" % (count - 1) if count > 1 else ""
        return ["REFUND %s %s%s" % (str(answer.get("st", "")).upper(),
                                    format_amount(rec["amt"]), more),
                answer.get("note") or "code %s - see supervisor" % (answer.get("code") or "-")]


REFUND = RefundKind()
