# A granted refund at the till (SPEC 8.3: the fee policy "is applied and shown"). `approved`:
# the shop pays `net` back at the till; `refunded`: the host credited the member's balance
# itself. Either answer prints a payout slip whenever it arrives (at once online, or after the
# host's review) and, while `committed` still shows that refund, puts the outcome in its lines.
# Rejected and failed answers are the supervisor's notices (the queue's), not here. A slip is
# printed from RAM: lost with a power cut before the next tick, the host's `refunds list` still
# has its figures.
from device.refunds.receipt import build_payout_slip
from device.refunds.record import RECORD
from device.sales.escpos import format_amount
from device.screens import messages
from device.screens.clerk import COMMITTED

GRANTED = ("approved", "refunded")


def outcome_lines(rec, answer):
    """What `committed` says of a granted refund, in place of "sent: the host decides"."""
    cur = rec["cur"]
    fee = answer.get("fee") or 0
    net = answer.get("net")
    if net is None:
        net = rec["amt"] - fee
    net = format_amount(net, cur)
    if answer.get("st") == "refunded":
        lines = [messages.refund_credited(net)]
        if "bal" in answer:
            lines.append(messages.balance_line(format_amount(answer["bal"], cur)))
    else:
        lines = [messages.refund_pay_back(net)]
    if fee:
        lines.append(messages.refund_fee(format_amount(fee, cur)))
    return lines


class Payouts:
    def __init__(self, shop, clock):
        self.shop = shop
        self.clock = clock
        self._slips = []       # printed at the next tick
        self._shown = None     # (rid, result) of the refund `committed` shows
        self._changed = False  # its lines changed: redraw

    def showing(self, rec, result):
        """The desk committed rec and `committed` shows result now."""
        self._shown = (rec["rid"], result)

    def on_resolve(self, kind, rec, answer):
        """Queue listener (final answers only, never at boot)."""
        if kind.record != RECORD or answer.get("st") not in GRANTED:
            return
        self._slips.append(build_payout_slip(rec, answer, self.shop, self.clock.now()))
        shown = self._shown
        if shown is not None and shown[0] == rec["rid"]:
            self._shown = None
            shown[1]["lines"][1:2] = outcome_lines(rec, answer)
            self._changed = True

    def tick(self, clerk, now):
        """Clerk ticker: prints the slips, redraws `committed` when its lines changed."""
        if clerk.screen != COMMITTED:
            self._shown = None  # the clerk moved on: a late answer only prints its slip
        if self._changed:
            self._changed = False
            if clerk.screen == COMMITTED:
                clerk.touch()
        if not self._slips:
            return []
        out = [("print", s) for s in self._slips]
        self._slips = []
        return out
