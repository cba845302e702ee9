# The member at the counter (SPEC 8.1), on the `sale` screen: a member code scanned there
# attaches the member (one per sale; the host's `tier_disc` for the code's tier applies, offline
# too); then ENTER pays as usual (the charge carries "mem"), F2 pays from the member's balance
# (kind member; it needs the member's dynamic app code, scanned in this sale, whose cti pays once:
# the ledger counts it from the journal), F3 records the typed amount as a top-up (kind topup),
# F4 and a digit 1..9 sells VIP tier N of the host's `vip_tiers` (kind vip, amount = its fee).
from device.sales.escpos import format_amount
from device.screens import messages
from device.screens.clerk import is_digit

VIP = "vip"  # cart.awaiting while F4 waits for the tier's digit


class Counter:
    def __init__(self, check, till, settings, uses, receipts):
        """check(text) -> the member code reading (stateful: the terminal's clock); uses(cti):
        the ledger's count of coupons and app codes; receipts: HeldReceipts."""
        self.check = check
        self.till = till
        self.settings = settings
        self.uses = uses
        self.receipts = receipts

    def tier_pct(self, tier):
        pct = (self.settings.get("tier_disc") or {}).get(tier, 0)
        return pct if type(pct) is int and 0 <= pct <= 100 else 0

    def vip_tiers(self):
        return self.settings.get("vip_tiers") or []

    # -- a member code on `sale` ----------------------------------------------------------------
    def scan(self, clerk, text, now):
        cart = clerk.cart
        r = self.check(text)
        if r["verdict"] != "ok":
            return clerk.say(messages.member_verdict_text(r["verdict"]))
        had = cart.member
        if had is not None and had["mid"] != r["mid"]:
            return clerk.say(messages.ONE_MEMBER)
        if r["dynamic"] and self.uses(r["cti"]):
            return clerk.say(messages.APP_CODE_USED)
        # A static card after the app code keeps the app code (F2 still needs it).
        if had is None or r["dynamic"] or not had["dynamic"]:
            cart.member = r
        cart.member_pct = self.tier_pct(cart.member["tier"])
        return clerk.say(messages.APP_CODE_ATTACHED if cart.member["dynamic"]
                         else messages.MEMBER_ATTACHED)

    def lines(self, cart):
        """Lines under the totals on `sale`."""
        m = cart.member
        if m is None:
            return []
        lines = [messages.member_line(m["mid"], m["tier"])]
        if cart.member_pct:
            lines.append(messages.tier_discount(cart.member_pct,
                                                format_amount(cart.member_discount())))
        if cart.awaiting == VIP:
            for i, t in enumerate(self.vip_tiers()):
                lines.append(messages.vip_tier_line(i + 1, t["name"], format_amount(t["fee"]),
                                                    t["cycle"]))
        else:
            lines.append(messages.HINT_MEMBER_SALE)
        return lines

    # -- keys on `sale` -------------------------------------------------------------------------
    def key(self, clerk, name, now):
        """F2/F3/F4 and the VIP digit; None lets other keys through to the sale."""
        cart = clerk.cart
        if cart.awaiting == VIP:
            return self._vip_key(clerk, name, now)
        if name not in ("F2", "F3", "F4"):
            return None
        if cart.member is None:
            return clerk.say(messages.SCAN_MEMBER_FIRST)
        if name == "F2":
            return self._pay_from_balance(clerk, now)
        if name == "F3":
            return self._top_up(clerk, now)
        tiers = self.vip_tiers()
        if not tiers:
            return clerk.say(messages.NO_VIP_TIERS)
        if cart.coupons:
            return clerk.say(messages.NO_COUPONS_VIP)
        cart.awaiting = VIP
        return clerk.say(messages.vip_pick(len(tiers)))

    def _pay_from_balance(self, clerk, now):
        cart = clerk.cart
        m = cart.member
        if not m["dynamic"]:
            return clerk.say(messages.SCAN_APP_CODE)
        if now >= m["exp"]:  # valid when scanned, run out since
            return clerk.say(messages.member_verdict_text("expired"))
        if self.uses(m["cti"]):
            return clerk.say(messages.APP_CODE_USED)
        coupons = list(cart.coupons)
        terms = cart.terms()
        terms["extra"] = {"mcti": m["cti"], "mexp": m["exp"]}
        result = self.till.commit_sale(cart.gross, coupons, kind="member", **terms)
        return clerk.done(self.receipts.hold(result, coupons, m), now)

    def _top_up(self, clerk, now):
        cart = clerk.cart
        if cart.coupons:
            return clerk.say(messages.NO_COUPONS_TOPUP)
        # The typed amount goes on the balance whole: no tier discount, no coupons.
        result = self.till.commit_sale(cart.gross, [], kind="topup", member=cart.member)
        return clerk.done(self.receipts.hold(result, [], cart.member), now)

    def _vip_key(self, clerk, name, now):
        cart = clerk.cart
        tiers = self.vip_tiers()
        if name in ("CLEAR", "CANCEL"):
            cart.awaiting = None
            return clerk.say(messages.VIP_CANCELLED)
        if not is_digit(name) or name == "0":
            return clerk.say(messages.vip_pick(len(tiers)))
        n = int(name)
        if n > len(tiers):
            return clerk.say(messages.no_such_tier(n))
        tier = tiers[n - 1]
        cart.awaiting = None
        result = self.till.commit_sale(tier["fee"], [], kind="vip", member=cart.member,
                                       extra={"tier": tier["name"]})
        # Online, the receipt waits for the host's answer: it prints the period paid.
        return clerk.done(self.receipts.hold(result, [], cart.member), now)
