# Paying from a member's balance while the terminal is offline (SPEC 8.1): allowed only up to
# `offline_member_max` per charge and `offline_member_total` per member (keys of `limits`;
# absent or 0: never offline). The member's total is what the host has not answered yet: every
# member payment of that mid still pending in the journal (committed offline, or online with no
# answer yet: either way the host has not said whether the balance covered it). Derived from the
# journal through the queue's listeners, at boot (replay) as after each commit and answer, so a
# power cut cannot reset it.
from device.sales.escpos import format_amount
from device.screens import messages

MAX = "offline_member_max"
TOTAL = "offline_member_total"


def is_payment(rec):
    return rec.get("r") == "sale" and rec.get("kind") == "member" and "mem" in rec


class OfflineBalance:
    def __init__(self, settings, currency, metrics):
        self.settings = settings
        self.currency = currency
        self.metrics = metrics
        self._owed = {}  # mid -> amount of its member payments the host has not answered

    # -- the journal (queue listeners) ------------------------------------------------------
    def on_commit(self, kind, rec):
        if is_payment(rec):
            mid = rec["mem"]
            self._owed[mid] = self._owed.get(mid, 0) + rec["amt"]

    def on_resolve(self, kind, rec, answer):
        if is_payment(rec):
            mid = rec["mem"]
            left = self._owed.get(mid, 0) - rec["amt"]
            if left > 0:
                self._owed[mid] = left
            else:
                self._owed.pop(mid, None)

    def owed(self, mid):
        return self._owed.get(mid, 0)

    # -- the till's check before a charge ---------------------------------------------------
    def check(self, kind, amt, offline, member, extra):
        """Refusal lines for an offline member payment beyond the limits, else None."""
        if kind != "member" or not offline:
            return None
        limits = self.settings.limits()
        most = limits.get(MAX) or 0
        total = limits.get(TOTAL) or 0
        if not most or not total:
            return self._refuse("offline_member_none", None)
        if amt > most:
            return self._refuse(MAX, amt - most)
        owed = self.owed(member["mid"])
        if owed + amt > total:
            return self._refuse(TOTAL, owed + amt - total)
        return None

    def _refuse(self, limit, over):
        self.metrics.inc("refused_" + limit)
        if over is None:
            return [messages.MEMBER_LIMIT_TEXT[limit], messages.MEMBER_LIMIT_NONE_DETAIL]
        return [messages.MEMBER_LIMIT_TEXT[limit],
                "over by %s" % format_amount(over, self.currency)]
