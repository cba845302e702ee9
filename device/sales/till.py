# The till: what the clerk screens ask of the terminal (check a coupon, commit a sale, the idle
# facts, the declined-charge notice), answered from the verifier, the queue and the link state.
# PINs, the clerk's login and the supervisor's declined list come from Supervisor.
from device import crypto
from device.sales.receipt import build_receipt
from device.sales.sale import make_sale
from device.staff.roles import Supervisor

LIMIT_TEXT = {
    "offline_max_charge": "over offline max charge",
    "offline_max_total": "offline total limit",
    "offline_max_count": "offline sale count limit",
    "offline_max_age_s": "oldest sale too old",
}


def money(minor):
    sign = "-" if minor < 0 else ""
    minor = -minor if minor < 0 else minor
    return "%s%d.%02d" % (sign, minor // 100, minor % 100)


class Till(Supervisor):
    def __init__(self, agent):
        Supervisor.__init__(self, agent)

    def idle_lines(self):
        a = self.agent
        return [a.cfg["store_id"], a.device_id, "online" if a.online else "offline",
                "queue: %d" % len(a.queue.pending)]

    def check_coupon(self, token, total, stateful):
        a = self.agent
        uses = a.queue.ledger.uses if stateful else None
        try:
            res = a.verifier.check(token, total, a.cfg["store_id"], a.cfg["currency"],
                                   a.clock.now(), a.clock.trusted(), uses)
        except Exception as e:  # the screens must get a verdict, whatever went wrong
            a.metrics.inc("coupon_check_errors")
            a.log("coupon check failed: %s" % e)
            res = {"verdict": "malformed", "discount": None, "cti": None, "campaign": None}
        a.metrics.inc("coupon_" + res["verdict"])
        return res

    def commit_sale(self, gross, coupons):
        """Commits the sale durably, then prints; refuses when an offline limit would break."""
        a = self.agent
        now = a.clock.now()
        offline = not a.online
        amt = gross - sum(c["discount"] for c in coupons)
        if amt < 0:
            amt = 0
        refusal = a.queue.refusal(amt, offline, now, a.cfg["limits"])
        if refusal is not None:
            a.metrics.inc("refused_" + refusal.limit)
            detail = refusal.detail
            if refusal.limit == "offline_max_age_s":
                detail = "%d s" % detail
            elif refusal.limit != "offline_max_count":
                detail = "%s %s" % (money(detail), a.cfg["currency"])
            return {"ok": False, "reason": [LIMIT_TEXT[refusal.limit], "over by %s" % detail]}
        redemptions = []
        left = gross
        for c in coupons:
            disc = c["discount"] if c["discount"] <= left else left
            left -= disc
            redemptions.append({"cti": c["cti"], "cmp": c["campaign"], "disc": disc,
                                "exp": c["exp"]})
        rec = make_sale(crypto.random_bytes(16), a.queue.take_receipt_no(), gross, redemptions,
                        a.cfg["currency"], now, offline, self.clerk_id())
        try:
            a.queue.commit(rec)  # durable from here on: only now may the clerk see it
        except Exception as e:  # full or failing flash: say so, record nothing
            a.metrics.inc("commit_errors")
            a.log("sale not recorded: %s" % e)
            return {"ok": False, "reason": ["Sale NOT recorded:", "storage error",
                                            "call a technician"]}
        a.metrics.inc("sales")
        receipt = build_receipt(rec, a.cfg, coupons)
        a.kick_forwarder()
        return {"ok": True, "amount": rec["amt"], "sent": not offline, "receipt": receipt,
                "cid": rec["cid"]}

    def notice(self):
        declined = self.agent.queue.declined()
        if not declined:
            return None
        sale, result = declined[0]
        return ["DECLINED x%d: %s" % (len(declined), money(sale["amt"])),
                "code %s - see supervisor" % result.get("code", "-")]
