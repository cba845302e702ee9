# The refund desk (SPEC 8.3): what the `refund` screen asks of the terminal. It reads a receipt's
# QR, tells what is left to refund of a sale this terminal still has in its journal, asks the
# gates (the licence's `restricted`, a full disk), and commits the refund record durably before
# the clerk sees `committed` and the refund receipt prints. The host decides every refund.
from device import crypto
from device.refunds.receipt import build_refund_receipt
from device.refunds.record import RECORD, make_refund, refund_no
from device.sales.escpos import format_amount
from device.sales.receipt import read_receipt_code
from device.screens import messages
from protocol.store_messages import REFUND_BAD


class Ticket:
    """The sale a refund is for, as its QR and this terminal's journal know it. left (what may
    still be refunded) is None when this terminal does not hold the sale (another terminal's,
    or compacted away): then the clerk types the amount and the host alone knows what is
    left."""

    def __init__(self, device_id, n, cid, left=None):
        self.device_id = device_id
        self.n = n
        self.cid = cid
        self.left = left


class RefundBook:
    """What this terminal has asked to refund per sale (cid), derived from its journal (queue
    listeners, so a replay at boot rebuilds it): requests pending, waiting or granted count;
    a rejected or failed one frees its amount again."""

    def __init__(self):
        self.asked = {}

    def on_commit(self, kind, rec):
        if kind.record == RECORD:
            self.asked[rec["cid"]] = self.asked.get(rec["cid"], 0) + rec["amt"]

    def on_resolve(self, kind, rec, answer):
        if kind.record == RECORD and answer.get("st") in REFUND_BAD:
            self.asked[rec["cid"]] = self.asked.get(rec["cid"], 0) - rec["amt"]

    def refunded(self, cid):
        return self.asked.get(cid, 0)


class RefundDesk:
    def __init__(self, till, queue, settings, roles, book, shop, clock, metrics, log,
                 payouts=None):
        self.till = till
        self.queue = queue
        self.settings = settings
        self.roles = roles
        self.book = book
        self.shop = shop
        self.clock = clock
        self.metrics = metrics
        self.log = log
        self.payouts = payouts  # told which refund `committed` shows (its outcome goes there)

    @staticmethod
    def is_receipt(text):
        return read_receipt_code(text) is not None

    def ticket(self, text):
        """The Ticket of a receipt QR, or the refusal lines when nothing can be refunded."""
        dev, n, cid = read_receipt_code(text)
        found = self.queue.find(cid) if dev == self.shop["device_id"] else None
        if found is None or found[0].get("r") != "sale":
            return Ticket(dev, n, cid)
        sale, answer = found
        if answer is not None and answer.get("st") == "declined":
            return messages.REFUND_OF_DECLINED
        left = sale["amt"] - self.book.refunded(cid)
        if left <= 0:
            return messages.REFUND_NOTHING_LEFT
        return Ticket(dev, n, cid, left)

    def refusal(self):
        """Lines of a gate that refuses new refunds now (restricted licence, full disk)."""
        return self.till.refusal("refund")

    def open(self, clerk, text, now):
        """A receipt QR scanned on idle: the `refund` screen for that sale, or `refused`."""
        reason = self.refusal()
        ticket = None
        if not reason:
            ticket = self.ticket(text)
            if not isinstance(ticket, Ticket):
                reason, ticket = ticket, None
        if reason:
            self.metrics.inc("refunds_refused")
            return clerk.done({"ok": False, "title": messages.REFUND_REFUSED,
                               "reason": reason}, now)
        return clerk.go("refund", now, ticket=ticket)

    def needs_pin(self, amt):
        over = self.settings.limits().get("refund_pin_over")
        return over is not None and amt > over

    def commit(self, clerk, ticket, amt, reason, sup, now):
        """Records the refund durably, then shows `committed` with its receipt printed first."""
        refusal = self.refusal()
        if refusal:
            self.metrics.inc("refunds_refused")
            return clerk.done({"ok": False, "title": messages.REFUND_REFUSED,
                               "reason": refusal}, now)
        at = self.clock.now()
        offline = not self.till.online
        rec = make_refund(crypto.random_bytes(16), self.queue.take_receipt_no(), ticket.cid,
                          amt, self.shop["currency"], reason, at, offline,
                          self.roles.clerk_id(), ticket.n, sup)
        if self.till.record(rec):
            return clerk.done({"ok": False, "title": messages.REFUND_REFUSED,
                               "reason": messages.REFUND_NOT_RECORDED}, now)
        self.metrics.inc("refunds")
        self.log("refund %s of %s recorded: %d %s %s" % (
            rec["rid"].hex(), ticket.cid.hex(), amt, rec["cur"], reason))
        receipt = build_refund_receipt(rec, self.shop, ticket.device_id)
        result = {"ok": True, "receipt": receipt, "lines": [
            messages.refund_requested(format_amount(amt, rec["cur"])),
            messages.REFUND_QUEUED if offline else messages.REFUND_SENT,
            messages.refund_receipt_line(refund_no(rec))]}
        out = clerk.done(result, now)
        if self.payouts is not None:
            self.payouts.showing(rec, result)
        return out

    def waiting(self):
        """How many of this terminal's refunds wait for the host's review."""
        return len([p for p in self.queue.waiting if p[0].get("r") == RECORD])
