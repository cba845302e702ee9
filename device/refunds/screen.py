# The `refund` screen (SPEC 8.3), opened by a receipt's QR on idle: digits type the amount
# (ENTER alone = all that is left, when this terminal knows the sale), then a digit picks the
# reason; above refund_pin_over the supervisor's PIN is asked; then the desk commits. CANCEL
# leaves with nothing recorded; CLEAR deletes a digit, or goes back from the reason to the
# amount. Like every menu screen it closes after the clerk's menu timeout without a key.
from device.refunds.record import reason_for
from device.screens import messages
from device.screens.clerk import MAX_DIGITS, Screen, is_digit


class RefundScreen(Screen):
    name = "refund"
    menu = True

    def __init__(self, desk):
        self.desk = desk
        self.ticket = None
        self.digits = ""
        self.amount = None  # set once the amount is confirmed: the reason is asked next

    def enter(self, clerk, now, ticket=None):
        self.ticket = ticket
        self.digits = ""
        self.amount = None

    def key(self, clerk, name, now):
        if name == "CANCEL":
            return clerk.go_idle(messages.REFUND_CANCELLED, now)
        if self.amount is None:
            return self._key_amount(clerk, name, now)
        return self._key_reason(clerk, name, now)

    def _key_amount(self, clerk, name, now):
        if is_digit(name):
            if len(self.digits) >= MAX_DIGITS:
                return clerk.say(messages.MAX_DIGITS)
            if self.digits or name != "0":
                self.digits += name
            return clerk.say(None)
        if name == "CLEAR":
            self.digits = self.digits[:-1]
            return clerk.say(None)
        if name != "ENTER":
            return clerk.say(clerk.message)
        left = self.ticket.left
        if not self.digits:
            if left is None:
                return clerk.say(messages.REFUND_TYPE_AMOUNT)
            amount = left
        else:
            amount = int(self.digits)
        if left is not None and amount > left:
            return clerk.say(messages.refund_at_most(clerk.money(left)))
        self.amount = amount
        return clerk.say(None)

    def _key_reason(self, clerk, name, now):
        if name == "CLEAR":
            self.amount = None
            return clerk.say(None)
        reason = reason_for(name)
        if reason is None:
            return clerk.say(clerk.message)
        ticket, amount = self.ticket, self.amount
        desk = self.desk
        if desk.needs_pin(amount):
            def approved(clerk, now):
                return desk.commit(clerk, ticket, amount, reason, True, now)
            return clerk.ask_pin("supervisor", messages.TITLE_REFUND_PIN, approved, now)
        return desk.commit(clerk, ticket, amount, reason, False, now)

    def body(self, clerk):
        t = self.ticket
        if self.amount is not None:
            return [messages.refund_amount(clerk.money(self.amount))] + \
                messages.HINT_REFUND_REASON
        lines = [messages.refund_title("%06d" % t.n)]
        if t.left is None:
            lines.append(messages.REFUND_UNKNOWN_SALE)
        else:
            lines.append(messages.refund_left(clerk.money(t.left)))
        lines.append("Amount " + clerk.money(int(self.digits or "0")))
        lines.append(messages.HINT_REFUND_ALL if t.left is not None else messages.HINT_AMOUNT)
        return lines
