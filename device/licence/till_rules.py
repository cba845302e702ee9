# What the licence state changes at the till (SPEC 8.5): a restricted terminal refuses to sell
# (sales, member payments, top-ups, VIP, refunds, coupon redemptions: nothing is recorded), says
# so as soon as the clerk starts typing an amount, and the idle screen carries the reminders and
# warnings. Everything else (forwarding, status, console, licence loading, coupon checks on idle,
# bookings) never asks here.
from device.licence import states
from device.screens import messages

RESTRICTED_ACTIONS = ("sale", "member", "topup", "vip", "refund", "redeem")


def _is_digit(key):
    return len(key) == 1 and "0" <= key <= "9"


class LicenceRules:
    def __init__(self, licence, metrics):
        """licence: the InstalledLicence (state() -> (state, days))."""
        self.licence = licence
        self.metrics = metrics

    def refusal(self, action):
        """The till gate: the refusal lines for a restricted action, else None."""
        if action not in RESTRICTED_ACTIONS:
            return None
        if self.licence.state()[0] != states.RESTRICTED:
            return None
        self.metrics.inc("refused_licence")
        return list(messages.LICENCE_REFUSED)

    def idle_key(self, clerk, key, now):
        """A digit on idle would start an amount for a sale that will be refused: say why now."""
        if not _is_digit(key):
            return None
        reason = self.refusal("sale")
        if reason is None:
            return None
        return clerk.done({"ok": False, "reason": reason, "title": messages.SALE_REFUSED}, now)

    def idle_lines(self):
        st, days = self.licence.state()
        step = states.reminder_step(days) if st == states.EXPIRING else None
        return messages.licence_lines(st, days, step)
