# The sale being rung up: the typed amount, the coupons scanned (their verifier results, in scan
# order), and the member attached, if any. One place computes what the customer pays.


def allocate_discounts(gross, discounts):
    """The discounts actually given, in order: each is cut to what is left of gross, so their
    sum never exceeds it (a coupon scanned early keeps its full value)."""
    out = []
    left = gross
    for d in discounts:
        d = d if type(d) is int and d > 0 else 0
        if d > left:
            d = left
        left -= d
        out.append(d)
    return out


def coupon_discount(r):
    """The discount a coupon check result offers (0 for an item coupon or none)."""
    d = r.get("discount")
    return d if type(d) is int and d > 0 else 0


class Cart:
    def __init__(self, gross):
        self.gross = gross
        self.coupons = []
        self.member = None      # the member code's reading, attached by the members service
        self.member_pct = 0     # the member's tier discount (host config tier_disc), percent
        self.awaiting = None    # a service's next-key state on `sale` (F4: a VIP tier digit)

    def member_discount(self):
        if self.member is None or not self.member_pct:
            return 0
        return self.gross * self.member_pct // 100

    def coupon_discounts(self):
        return allocate_discounts(self.gross - self.member_discount(),
                                  [coupon_discount(c) for c in self.coupons])

    def total(self):
        """What the customer pays now: never below 0."""
        return self.gross - self.member_discount() - sum(self.coupon_discounts())

    def discount_of(self, r):
        return coupon_discount(r)

    def terms(self):
        """What a commit needs beyond gross and coupons."""
        if self.member is None:
            return {}
        return {"member": self.member, "mdisc": self.member_discount()}
