# The till: what the clerk screens ask of the terminal to sell: check a coupon, commit a sale of
# any kind (sale, member payment, top-up, VIP), the idle facts. Answered from the verifier, the
# queue, the host settings (limits) and the link state; every collaborator comes in explicitly.
#
# Services add rules without editing it: a gate (the licence refusing sales) and checks (a
# member payment's offline limits) each return the lines that explain a refusal, or None.
from device import crypto
from device.sales.cart import allocate_discounts
from device.sales.receipt import build_receipt
from device.sales.sale import make_sale, receipt_no
from device.screens import messages

# What a gate is asked about (SPEC 8.5: the licence restricts all of these).
SELLING = ("sale", "member", "topup", "vip")


def money(minor):
    sign = "-" if minor < 0 else ""
    minor = -minor if minor < 0 else minor
    return "%s%d.%02d" % (sign, minor // 100, minor % 100)


class Till:
    def __init__(self, shop, queue, verifier, clock, settings, link_state, roles, metrics, log):
        """shop: the ids printed and sent ({device_id, store_id, merchant_id, currency});
        link_state: an object with .online (the uplink); roles: gives clerk_id()."""
        self.shop = shop
        self.queue = queue
        self.verifier = verifier
        self.clock = clock
        self.settings = settings
        self.link_state = link_state
        self.roles = roles
        self.metrics = metrics
        self.log = log
        self._gates = []
        self._checks = []

    def add_gate(self, fn):
        """fn(action) -> refusal lines or None; action: sale, member, topup, vip, refund,
        redeem (a coupon used in a sale)."""
        self._gates.append(fn)

    def add_check(self, fn):
        """fn(kind, amt, offline, member, extra) -> refusal lines or None, before a charge."""
        self._checks.append(fn)

    def refusal(self, action):
        for fn in self._gates:
            reason = fn(action)
            if reason:
                return reason
        return None

    @property
    def online(self):
        return self.link_state.online

    def idle_lines(self):
        return [self.shop["store_id"], self.shop["device_id"],
                "online" if self.online else "offline", "queue: %d" % self.queue.count()]

    def check_coupon(self, token, total, stateful):
        uses = self.queue.ledger.uses if stateful else None
        try:
            res = self.verifier.check(token, total, self.shop["store_id"], self.shop["currency"],
                                      self.clock.now(), self.clock.trusted(), uses)
        except Exception as e:  # the screens must get a verdict, whatever went wrong
            self.metrics.inc("coupon_check_errors")
            self.log("coupon check failed: %s" % e)
            res = {"verdict": "malformed", "discount": None, "cti": None, "campaign": None}
        self.metrics.inc("coupon_" + res["verdict"])
        return res

    def limit_refusal(self, amt, offline, now):
        """The offline-limit refusal lines for a charge of amt, or None."""
        refusal = self.queue.refusal(amt, offline, now, self.settings.limits())
        if refusal is None:
            return None
        self.metrics.inc("refused_" + refusal.limit)
        detail = refusal.detail
        if refusal.limit == "offline_max_age_s":
            detail = "%d s" % detail
        elif refusal.limit != "offline_max_count":
            detail = "%s %s" % (money(detail), self.shop["currency"])
        return [messages.LIMIT_TEXT[refusal.limit], "over by %s" % detail]

    def commit_sale(self, gross, coupons, kind="sale", member=None, mdisc=0, extra=None):
        """Commits a charge durably, then builds its receipt; refuses (nothing recorded) when a
        gate, an offline limit or a service's check says no."""
        now = self.clock.now()
        offline = not self.online
        reason = self.refusal(kind) or (coupons and self.refusal("redeem"))
        allocated = allocate_discounts(gross - mdisc, [c["discount"] for c in coupons])
        amt = gross - mdisc - sum(allocated)
        if not reason:
            reason = self.limit_refusal(amt, offline, now)
        extra = dict(extra or {})
        if mdisc:
            extra["mdisc"] = mdisc
        if not reason:
            for fn in self._checks:
                reason = fn(kind, amt, offline, member, extra)
                if reason:
                    break
        if reason:
            return {"ok": False, "reason": reason}
        redemptions = []
        for i, c in enumerate(coupons):
            redemptions.append({"cti": c["cti"], "cmp": c["campaign"], "disc": allocated[i],
                                "exp": c["exp"]})
        rec = make_sale(crypto.random_bytes(16), self.queue.take_receipt_no(), gross,
                        redemptions, self.shop["currency"], now, offline, self.roles.clerk_id(),
                        kind=kind, mem=member["mid"] if member else None, extra=extra)
        failed = self.record(rec)
        if failed:
            return failed
        self.metrics.inc("sales" if kind == "sale" else "sales_" + kind)
        receipt = build_receipt(rec, self.shop, coupons, member)
        return {"ok": True, "amount": rec["amt"], "sent": not offline, "receipt": receipt,
                "cid": rec["cid"], "kind": kind, "receipt_no": receipt_no(rec)}

    def record(self, rec):
        """Commits any queue record durably: None, or the refusal to show when flash failed."""
        try:
            self.queue.commit(rec)  # durable from here on: only now may the clerk see it
        except Exception as e:  # full or failing flash: say so, record nothing
            self.metrics.inc("commit_errors")
            self.log("%s not recorded: %s" % (rec.get("r"), e))
            return {"ok": False, "reason": messages.NOT_RECORDED}
        return None
