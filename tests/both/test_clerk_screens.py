# The clerk state machine (SPEC 5.1) against fake services: the whole sale flow and each branch.
from device.screens import messages
from device.screens.clerk import LINE_WIDTH, Clerk

VERDICTS = ("ok", "malformed", "unsupported_alg", "unknown_key", "bad_signature", "wrong_issuer",
            "key_not_valid", "revoked", "clock_unset", "not_yet_valid", "expired", "wrong_store",
            "wrong_currency", "below_min_spend", "already_redeemed")


def coupon(cti, kind="amt", val=200, name="Spring sale", campaign="SPRING", sku=None, mn=None):
    return {"cti": cti, "kind": kind, "val": val, "name": name, "campaign": campaign,
            "sku": sku, "min": mn}


class FakeServices:
    """Coupons are looked up by token in a dict; the discount follows SPEC 2.3 step 15."""

    def __init__(self):
        self.coupons = {
            "PC1:AMT": coupon(b"\x01", "amt", 200),
            "PC1:PCT": coupon(b"\x02", "pct", 10, name=None, campaign="TENPCT"),
            "PC1:ITEM": coupon(b"\x03", "item", 2, name="Free coffee", sku="COFFEE"),
            "PC1:BIG": coupon(b"\x04", "amt", 100000),
            "PC1:MIN": coupon(b"\x05", "amt", 100, mn=5000),
        }
        self.forced = {}  # token -> verdict
        self.overdiscount = {}  # token -> a discount larger than asked for (a faulty service)
        self.checks = []
        self.commits = []
        self.refuse = None
        self.online = True
        self.notice_lines = None

    def idle_lines(self):
        return ["S-001 T-0001", "online" if self.online else "offline", "queue 0"]

    def notice(self):
        return self.notice_lines

    def check_coupon(self, token, total, stateful):
        self.checks.append((token, total, stateful))
        c = self.coupons.get(token)
        r = {"verdict": "malformed", "discount": None, "cti": None, "campaign": None,
             "name": None, "kind": None, "sku": None, "val": None}
        if token in self.forced:
            r["verdict"] = self.forced[token]
            return r
        if c is None:
            return r
        r.update(c)
        if total is not None and c["min"] is not None and total < c["min"]:
            r["verdict"] = "below_min_spend"
            return r
        r["verdict"] = "ok"
        if total is not None:
            if c["kind"] == "pct":
                r["discount"] = total * c["val"] // 100
            elif c["kind"] == "amt":
                r["discount"] = min(c["val"], total)
            else:
                r["discount"] = 0
        r["discount"] = self.overdiscount.get(token, r["discount"])
        return r

    def commit_sale(self, gross, coupons):
        self.commits.append((gross, coupons))
        if self.refuse:
            return {"ok": False, "reason": self.refuse}
        amt = gross - sum(c["discount"] for c in coupons)
        return {"ok": True, "amount": amt, "sent": self.online, "receipt": b"\x1b@R%d" % amt,
                "cid": b"\x00" * 16}


def new(**kw):
    s = FakeServices()
    for k, v in kw.items():
        setattr(s, k, v)
    return s, Clerk(s, s, timeout_s=5, currency="CNY")


def shown(actions):
    """The single show action of an event: (screen, lines)."""
    shows = [a for a in actions if a[0] == "show"]
    assert len(shows) == 1, actions
    return shows[0][1], shows[0][2]


def keys(clerk, names, now=100):
    out = []
    for k in names:
        out = clerk.key(k, now)
    return out


def to_sale(clerk, digits, now=100):
    keys(clerk, list(digits) + ["ENTER"], now)
    assert clerk.screen == "sale"


def test_idle_shows_service_lines():
    s, c = new()
    assert shown(c.refresh(0)) == ("idle", ["S-001 T-0001", "online", "queue 0"])
    s.online = False
    assert shown(c.refresh(1)) == ("idle", ["S-001 T-0001", "offline", "queue 0"])


def test_whole_sale_flow_with_coupons_commit_and_receipt():
    s, c = new()
    assert shown(c.key("1", 100)) == ("amount", ["Amount 0.01 CNY", messages.HINT_AMOUNT])
    keys(c, ["2", "3", "4"])
    assert shown(c.key("5", 100))[1][0] == "Amount 123.45 CNY"
    screen, lines = shown(c.key("ENTER", 101))
    assert (screen, lines) == ("sale", ["Total 123.45 CNY", messages.HINT_SALE])
    screen, lines = shown(c.scan("PC1:AMT", 102))
    assert screen == "sale"
    assert lines == ["Total 121.45 CNY", "Gross 123.45 CNY", "1 coupon -2.00",
                     messages.HINT_SALE, "-2.00 Spring sale"]
    # the second coupon is checked against what is left, stateful
    screen, lines = shown(c.scan("PC1:PCT", 103))
    assert s.checks[-1] == ("PC1:PCT", 12145, True)
    assert lines[:3] == ["Total 109.31 CNY", "Gross 123.45 CNY", "2 coupons -14.14"]
    assert lines[-1] == "-12.14 TENPCT"  # no name: the campaign
    assert c.total() == 10931
    actions = c.key("ENTER", 104)
    assert [a[0] for a in actions] == ["print", "show"]  # the receipt, then the frame
    assert actions[1] == ("show", "committed", ["Paid 109.31 CNY", "sent"])
    assert actions[0] == ("print", b"\x1b@R10931")
    gross, cpns = s.commits[0]
    assert gross == 12345 and [x["cti"] for x in cpns] == [b"\x01", b"\x02"]
    assert [x["discount"] for x in cpns] == [200, 1214]
    # back to idle on the next key, which is consumed (no amount started)
    assert shown(c.key("7", 105))[0] == "idle"
    assert c.screen == "idle"
    assert shown(c.key("7", 106))[1][0] == "Amount 0.07 CNY"


def test_committed_offline_then_timeout():
    s, c = new(online=False)
    to_sale(c, "500")
    actions = c.key("ENTER", 200)
    assert actions[-1] == ("show", "committed", ["Paid 5.00 CNY", "queued offline"])
    assert c.tick(204.9) == []
    assert shown(c.tick(205)) == ("idle", ["S-001 T-0001", "offline", "queue 0"])
    assert c.tick(300) == []


def test_refused_commits_nothing_shows_reason_and_returns_to_idle():
    s, c = new(refuse=["offline limit reached", "max charge 500.00"])
    to_sale(c, "60000")
    actions = c.key("ENTER", 10)
    assert actions == [("show", "refused", ["Sale refused", "offline limit reached",
                                            "max charge 500.00", messages.NOT_SAVED])]
    assert len(s.commits) == 1  # asked once, refused: no print action, no record
    assert shown(c.key("ENTER", 11))[0] == "idle"
    s2, c2 = new(refuse="offline too long")
    to_sale(c2, "1")
    assert shown(c2.key("ENTER", 10))[1] == ["Sale refused", "offline too long",
                                             messages.NOT_SAVED]
    assert c2.tick(14) == [] and shown(c2.tick(15))[0] == "idle"


def test_amount_editing():
    s, c = new()
    keys(c, ["0", "0", "1", "0"])  # leading zeros are not digits
    assert shown(c.refresh(0))[1][0] == "Amount 0.10 CNY"
    assert shown(c.key("CLEAR", 0))[1][0] == "Amount 0.01 CNY"
    assert shown(c.key("CLEAR", 0))[1][0] == "Amount 0.00 CNY"
    assert shown(c.key("CLEAR", 0))[1][0] == "Amount 0.00 CNY"  # nothing left to delete
    assert shown(c.key("ENTER", 0)) == ("amount", ["Amount 0.00 CNY", messages.HINT_AMOUNT,
                                                   messages.ENTER_AMOUNT])
    assert c.screen == "amount" and s.commits == []
    keys(c, list("123456789"))
    screen, lines = shown(c.key("9", 0))
    assert lines == ["Amount 1234567.89 CNY", messages.HINT_AMOUNT, messages.MAX_DIGITS]
    keys(c, ["UP", "MENU", "F1"])  # no meaning here
    assert c.screen == "amount"
    assert shown(c.key("CANCEL", 0))[0] == "idle"
    keys(c, ["4", "2", "ENTER"])
    assert c.total() == 42  # a new amount starts from nothing


def test_scan_on_amount_asks_for_enter():
    s, c = new()
    keys(c, ["5"])
    assert shown(c.scan("PC1:AMT", 0))[1][-1] == messages.PRESS_ENTER
    assert s.checks == [] and c.screen == "amount"


def test_each_refusal_verdict_shown_in_sale():
    s, c = new()
    to_sale(c, "1000")
    for v in VERDICTS[1:]:
        s.forced["PC1:" + v] = v
        screen, lines = shown(c.scan("PC1:" + v, 0))
        assert screen == "sale" and lines[-1] == messages.VERDICT_TEXT[v]
        assert lines[0] == "Total 10.00 CNY"
    assert c.total() == 1000
    s.forced["PC1:NEW"] = "future_code"
    assert shown(c.scan("PC1:NEW", 0))[1][-1] == "coupon refused: future_code"


def test_same_coupon_twice_in_one_sale():
    s, c = new()
    to_sale(c, "1000")
    c.scan("PC1:AMT", 0)
    screen, lines = shown(c.scan("PC1:AMT", 0))
    assert lines[-1] == messages.ALREADY_IN_SALE and lines[0] == "Total 8.00 CNY"
    c.key("ENTER", 1)
    assert len(s.commits[0][1]) == 1


def test_total_never_below_zero_and_zero_discounts_not_added():
    s, c = new()
    to_sale(c, "300")
    shown(c.scan("PC1:BIG", 0))
    assert c.total() == 0
    assert shown(c.refresh(0))[1][:3] == ["Total 0.00 CNY", "Gross 3.00 CNY", "1 coupon -3.00"]
    # 10 % of nothing would burn the coupon for no discount
    assert shown(c.scan("PC1:PCT", 0))[1][-1] == messages.NO_DISCOUNT
    assert shown(c.scan("PC1:AMT", 0))[1][-1] == messages.NO_DISCOUNT
    # a free item still applies
    assert shown(c.scan("PC1:ITEM", 0))[1][-1] == "free COFFEE x2"
    actions = c.key("ENTER", 1)
    assert actions[-1] == ("show", "committed", ["Paid 0.00 CNY", "sent"])
    assert [x["cti"] for x in s.commits[0][1]] == [b"\x04", b"\x03"]


def test_total_clamped_even_if_a_discount_exceeds_it():
    s, c = new()
    s.overdiscount["PC1:AMT"] = 10 ** 6
    to_sale(c, "500")
    assert shown(c.scan("PC1:AMT", 0))[1][0] == "Total 0.00 CNY"
    assert c.total() == 0


def test_below_min_spend_checked_on_current_total():
    s, c = new()
    to_sale(c, "5100")
    c.scan("PC1:AMT", 0)  # 51.00 - 2.00 = 49.00 < 50.00
    assert shown(c.scan("PC1:MIN", 0))[1][-1] == messages.VERDICT_TEXT["below_min_spend"]
    assert c.total() == 4900


def test_clear_removes_last_coupon():
    s, c = new()
    to_sale(c, "1000")
    c.scan("PC1:AMT", 0)
    c.scan("PC1:PCT", 0)
    assert c.total() == 720
    assert shown(c.key("CLEAR", 0))[1][-1] == messages.COUPON_REMOVED
    assert c.total() == 800
    c.key("CLEAR", 0)
    assert shown(c.key("CLEAR", 0))[1] == ["Total 10.00 CNY", messages.HINT_SALE,
                                          messages.COUPON_REMOVED]


def test_cancel_abandons_the_sale():
    s, c = new()
    to_sale(c, "999")
    c.scan("PC1:AMT", 0)
    screen, lines = shown(c.key("CANCEL", 50))
    assert screen == "idle" and lines[-1] == messages.SALE_CANCELLED
    assert s.commits == []
    assert shown(c.tick(55)) == ("idle", ["S-001 T-0001", "online", "queue 0"])
    keys(c, ["1", "ENTER"])
    assert c.total() == 1 and shown(c.refresh(0))[1][0] == "Total 0.01 CNY"  # no old coupons


def test_scan_on_idle_checks_only():
    s, c = new()
    screen, lines = shown(c.scan("PC1:PCT", 10))
    assert screen == "coupon"
    assert lines == ["coupon accepted", "TENPCT", "10% off", messages.CHECK_ONLY]
    assert s.checks == [("PC1:PCT", None, True)]  # no cart: total None, stateful
    assert s.commits == []
    assert shown(c.scan("PC1:AMT", 11))[1] == ["coupon accepted", "Spring sale",
                                                "2.00 CNY off", messages.CHECK_ONLY]
    assert c.tick(15.9) == []
    assert shown(c.tick(16))[0] == "idle"
    shown(c.scan("PC1:ITEM", 20))
    assert shown(c.refresh(20))[1][2] == "free COFFEE x2"
    assert shown(c.key("CANCEL", 21))[0] == "idle"
    s.forced["PC1:OLD"] = "expired"
    assert shown(c.scan("PC1:OLD", 22)) == ("coupon", ["coupon expired"])
    assert shown(c.key("5", 23))[0] == "idle"  # the key only leaves the coupon screen
    assert s.commits == []


def test_scan_on_committed_is_a_check_on_idle():
    s, c = new()
    to_sale(c, "100")
    c.key("ENTER", 0)
    assert shown(c.scan("PC1:AMT", 1))[0] == "coupon"
    assert s.checks[-1] == ("PC1:AMT", None, True) and len(s.commits) == 1


def test_bad_scan_says_unreadable_code():
    s, c = new()
    screen, lines = shown(c.bad_scan("too_long", 0))
    assert screen == "idle" and lines[-1] == "unreadable code"
    assert c.tick(4) == [] and shown(c.tick(5))[1][-1] == "queue 0"
    to_sale(c, "100")
    screen, lines = shown(c.bad_scan("non_printable", 6))
    assert screen == "sale" and lines[-1] == "unreadable code"
    assert c.tick(1000) == [] and c.screen == "sale"  # a sale never times out
    assert s.checks == []


def test_notice_on_every_screen():
    notice = ["! 2 charges declined", "see supervisor"]
    s, c = new(notice_lines=notice)
    assert shown(c.refresh(0))[1] == notice + ["S-001 T-0001", "online", "queue 0"]
    assert shown(c.key("1", 0))[1][0] == notice[0]
    c.key("ENTER", 0)
    assert shown(c.refresh(0))[1][:2] == [notice[0], "Total 0.01 CNY"]
    assert shown(c.scan("PC1:BIG", 0))[1][0] == notice[0]
    actions = c.key("ENTER", 0)
    assert actions[-1][1:] == ("committed", [notice[0], "Paid 0.00 CNY", "sent"])
    c.key("ENTER", 0)
    assert shown(c.scan("PC1:AMT", 0))[1][0] == notice[0]
    s.notice_lines = None  # acknowledged by a supervisor
    assert shown(c.refresh(0))[1][0] == "coupon accepted"


def test_lines_fit_small_displays():
    s, c = new(notice_lines=["N" * 50])
    s.coupons["PC1:LONG"] = coupon(b"\x09", "item", 1, name="X" * 80, sku="Y" * 80)
    for actions in (c.refresh(0), c.scan("PC1:LONG", 0), c.key("1", 0), c.key("ENTER", 0),
                    c.scan("PC1:LONG", 0), c.key("ENTER", 0)):
        for a in actions:
            if a[0] == "show":
                assert all(len(line) <= LINE_WIDTH for line in a[2]), a
    for text in messages.VERDICT_TEXT.values():
        assert len(text) <= LINE_WIDTH


def test_unknown_keys_and_idle_keys():
    s, c = new()
    assert c.key("F9", 0) == [] and c.key("", 0) == []
    for k in ("ENTER", "CANCEL", "CLEAR", "MENU", "UP", "DOWN", "F1"):
        assert shown(c.key(k, 0))[0] == "idle"
    c.bad_scan("too_long", 0)
    assert shown(c.key("MENU", 1))[1][-1] == "queue 0"  # a key clears the message


def test_every_verdict_has_a_message():
    for v in VERDICTS:
        assert messages.verdict_text(v) == messages.VERDICT_TEXT[v]
        assert messages.VERDICT_TEXT[v] and messages.VERDICT_TEXT[v] != messages.UNKNOWN_VERDICT
    assert messages.UNREADABLE == "unreadable code"
    assert messages.verdict_text(None) == messages.UNKNOWN_VERDICT
    assert messages.verdict_text(7) == messages.UNKNOWN_VERDICT
    assert messages.verdict_text("x" * 100).startswith("coupon refused: xx")
    assert len(messages.verdict_text("x" * 100)) <= LINE_WIDTH
