"""The clerk's screens (SPEC 5.1) as a sans-I/O state machine.

Events in: key(name, now), scan(text, now), bad_scan(code, now), tick(now), refresh(now).
Actions out (a list, in order): ("show", screen, lines) and ("print", receipt_bytes).

Screens (these names are the `screen` field of the display frames):
  idle       store/device/link/queue lines from services.idle_lines(); a digit starts `amount`,
             a scan opens `coupon`, other keys only clear a message.
  amount     digits type the amount in minor units (at most 9); CLEAR deletes the last digit,
             CANCEL goes back to idle, ENTER with an amount opens `sale` (with 0 it says so).
  sale       scans are checked (stateful) against the current total and ok coupons are added,
             once per cti; CLEAR removes the last coupon; CANCEL abandons the sale (nothing is
             recorded); ENTER calls services.commit_sale.
  committed  the amount and "sent" / "queued offline"; the receipt is printed with it.
  refused    an offline limit refused the sale: the reason lines; nothing was recorded.
  coupon     a scan on idle: the verdict, checked only (never redeemed).
  login      when a clerk PIN is configured and nobody is logged in (services.
             clerk_login_required()), in place of idle: digits type the PIN (shown masked),
             CLEAR deletes, CANCEL clears, ENTER calls services.clerk_login(pin); MENU opens `pin`.
  pin        MENU on idle or login: the supervisor PIN, masked; ENTER checks it with
             services.check_pin("supervisor", pin) and opens `declined`; CANCEL goes back.
  declined   the declined charges no supervisor has acknowledged (services.declined_lines());
             ENTER acknowledges them all (services.ack_declined()) and goes back, F1 prints the
             list (services.print_declined()), CANCEL goes back without acknowledging.
committed, refused and coupon go back to idle on the next key (which is consumed) or after
timeout_s; a scan there is handled as on idle. A message on idle (sale cancelled, unreadable
code) clears after timeout_s too. pin and declined go back after menu_timeout_s without a key, so
an unlocked supervisor menu does not stay open. F4 on idle logs the clerk out. Keys without a
meaning on a screen (UP, DOWN, F2, ...) leave it as it is; "back"/"idle" means login when a clerk
must log in.

A persistent notice (services.notice(), declined charges) is shown while present: its first line
on top of every screen, all of its lines on idle.

services (provided by the agent):
  idle_lines() -> [text]
  notice() -> [text] or None
  check_coupon(token, total, stateful) -> {"verdict", "discount", "cti", "campaign", "name",
      "kind", "val", "sku", ...}; total is None for a check on idle: there is no cart yet, so
      the minimum-spend rule has nothing to apply to (the discount shown is then None).
  commit_sale(gross, coupons) -> {"ok": True, "amount", "sent", "receipt", "cid"} or
      {"ok": False, "reason": [text]}; coupons are the check_coupon results added to the sale,
      in scan order. It returns only once the record is durable, so `committed` is shown after.
Optional (device/staff/roles.py; without them there is no login and MENU does nothing):
  clerk_login_required() -> bool; clerk_login(pin) -> "ok" | "wrong" | "locked" | "no_pin";
  clerk_logout(); check_pin(role, pin) -> the same codes; declined_lines() -> [text];
  ack_declined() -> int acknowledged; print_declined() -> ESC/POS bytes or None.
Services are trusted not to raise; the agent wraps its cores so that they do not.
"""
from device.drivers.keypad import KEYS
from device.sales.escpos import format_amount
from device.screens import messages

IDLE = "idle"
AMOUNT = "amount"
SALE = "sale"
COMMITTED = "committed"
REFUSED = "refused"
COUPON = "coupon"
LOGIN = "login"
PIN = "pin"
DECLINED = "declined"
TIMED = (COMMITTED, REFUSED, COUPON)
MENU_SCREENS = (PIN, DECLINED)
MAX_PIN = 12
DECLINED_SHOWN = 4  # lines of the declined list on screen; F1 prints them all

MAX_DIGITS = 9  # 999 999 999 minor units: above any offline limit, and fits every int type
# Lines are cut at 32 characters: the small displays a terminal carries (128x64 OLED, 240-px
# TFT with a small font) and the 58 mm receipt show about that many; cutting here keeps what the
# clerk sees the same on every display instead of leaving the wrap to each driver.
LINE_WIDTH = 32


def _fit(lines):
    return [(line if type(line) is str else str(line))[:LINE_WIDTH] for line in lines]


class Clerk:
    def __init__(self, services, timeout_s=5, currency="", menu_timeout_s=30):
        self.services = services
        self.timeout_s = timeout_s
        self.menu_timeout_s = menu_timeout_s
        self._pin = ""  # digits of a PIN being typed (never shown)
        self.currency = currency  # only for display: "12.34 CNY" rather than "12.34"
        self.screen = IDLE
        self._digits = ""
        self._gross = 0
        self._coupons = []
        self._message = None
        self._shown = None  # the coupon check, the commit result or the refusal being shown
        self._until = None  # when a timed screen (or a message on idle) goes away
        if self._login_required():
            self.screen = LOGIN

    # -- events ------------------------------------------------------------------------------
    def key(self, name, now):
        if name not in KEYS:
            return []
        if self.screen in TIMED:
            return self._go_idle(None, now)
        handler = getattr(self, "_key_" + self.screen)
        return handler(name, now)

    def scan(self, text, now):
        if self.screen == LOGIN:
            return self._say(messages.LOG_IN_FIRST)
        if self.screen in MENU_SCREENS:
            return self._say(messages.FINISH_MENU)
        if self.screen in (IDLE, COUPON) + TIMED:
            return self._check_only(text, now)
        if self.screen == AMOUNT:
            return self._say(messages.PRESS_ENTER)
        return self._sale_scan(text)

    def bad_scan(self, code, now):
        if self.screen == IDLE:
            self._until = now + self.timeout_s
        return self._say(messages.UNREADABLE)

    def tick(self, now):
        if self._until is None or now < self._until:
            return []
        if self.screen in TIMED or self.screen in MENU_SCREENS or self.screen == IDLE:
            return self._go_idle(None, now)
        self._until = None
        return []

    def refresh(self, now):
        # A clerk PIN set or removed by the host, or a logout elsewhere, shows on the next redraw.
        if self.screen == IDLE and self._login_required():
            self.screen = LOGIN
            self._pin = ""
        elif self.screen == LOGIN and not self._login_required():
            self.screen = IDLE
        return [self._show()]

    # -- keys per screen ---------------------------------------------------------------------
    def _key_idle(self, name, now):
        if "0" <= name <= "9" and len(name) == 1:
            self.screen = AMOUNT
            self._digits = ""
            self._message = None
            self._until = None
            return self._key_amount(name, now)
        if name == "MENU" and self._opt("check_pin"):
            return self._open_pin(now)
        if name == "F4" and self._opt("clerk_logout"):
            self.services.clerk_logout()
            if self._login_required():
                return self._go_idle(messages.LOGGED_OUT, now)
        self._until = None
        return self._say(None)

    # -- roles -------------------------------------------------------------------------------
    def _opt(self, name):
        return getattr(self.services, name, None) is not None

    def _login_required(self):
        fn = getattr(self.services, "clerk_login_required", None)
        return bool(fn is not None and fn())

    def _home(self):
        return LOGIN if self._login_required() else IDLE

    def _type_pin(self, name):
        """Digits, CLEAR and CANCEL on a PIN screen; False for any other key."""
        if len(name) == 1 and "0" <= name <= "9":
            if len(self._pin) < MAX_PIN:
                self._pin += name
        elif name == "CLEAR":
            self._pin = self._pin[:-1]
        elif name == "CANCEL":
            self._pin = ""
        else:
            return False
        self._message = None
        return True

    def _key_login(self, name, now):
        if self._type_pin(name):
            return self._say(None)
        if name == "MENU" and self._opt("check_pin"):
            return self._open_pin(now)
        if name != "ENTER":
            return self._say(self._message)
        if not self._pin:
            return self._say(messages.ENTER_PIN)
        verdict = self.services.clerk_login(self._pin)
        self._pin = ""
        if verdict != "ok":
            return self._say(messages.pin_verdict_text(verdict))
        return self._go_idle(messages.LOGGED_IN, now)

    def _open_pin(self, now):
        self.screen = PIN
        self._pin = ""
        self._message = None
        self._until = now + self.menu_timeout_s
        return [self._show()]

    def _key_pin(self, name, now):
        self._until = now + self.menu_timeout_s
        if name == "CANCEL":
            return self._go_idle(None, now)
        if self._type_pin(name):
            return self._say(None)
        if name != "ENTER":
            return self._say(self._message)
        if not self._pin:
            return self._say(messages.ENTER_PIN)
        verdict = self.services.check_pin("supervisor", self._pin)
        self._pin = ""
        if verdict != "ok":
            return self._say(messages.pin_verdict_text(verdict))
        self.screen = DECLINED
        return self._say(None)

    def _key_declined(self, name, now):
        self._until = now + self.menu_timeout_s
        if name == "CANCEL":
            return self._go_idle(None, now)
        if name == "ENTER":
            n = self.services.ack_declined()
            if not n:
                left = self.services.declined_lines()
                return self._go_idle(messages.ACK_FAILED if left else None, now)
            return self._go_idle(messages.acknowledged(n), now)
        if name == "F1":
            job = self.services.print_declined()
            if not job:
                return self._say(messages.NOTHING_TO_PRINT)
            return self._say(messages.PRINTED) + [("print", job)]
        return self._say(self._message)

    def _key_amount(self, name, now):
        if len(name) == 1 and "0" <= name <= "9":
            if len(self._digits) >= MAX_DIGITS:
                return self._say(messages.MAX_DIGITS)
            if self._digits or name != "0":  # no leading zeros
                self._digits += name
            return self._say(None)
        if name == "CLEAR":
            self._digits = self._digits[:-1]
            return self._say(None)
        if name == "CANCEL":
            return self._go_idle(None, now)
        if name == "ENTER":
            if not self._digits:
                return self._say(messages.ENTER_AMOUNT)
            self.screen = SALE
            self._gross = int(self._digits)
            self._coupons = []
            return self._say(None)
        return self._say(self._message)

    def _key_sale(self, name, now):
        if name == "ENTER":
            return self._commit(now)
        if name == "CANCEL":
            self._coupons = []
            return self._go_idle(messages.SALE_CANCELLED, now)
        if name == "CLEAR" and self._coupons:
            self._coupons.pop()
            return self._say(messages.COUPON_REMOVED)
        return self._say(self._message)

    # -- sale --------------------------------------------------------------------------------
    def total(self):
        """What the customer pays now: gross less the coupons' discounts, never below 0."""
        left = self._gross - sum(_discount(c) for c in self._coupons)
        return left if left > 0 else 0

    def _sale_scan(self, text):
        r = self.services.check_coupon(text, self.total(), True)
        verdict = r.get("verdict")
        if verdict != "ok":
            return self._say(messages.verdict_text(verdict))
        for c in self._coupons:
            if c.get("cti") == r.get("cti"):
                return self._say(messages.ALREADY_IN_SALE)
        disc = _discount(r)
        if disc == 0 and r.get("kind") != "item":
            # e.g. 10 % of a total already at 0: redeeming it would use the coupon up for nothing
            return self._say(messages.NO_DISCOUNT)
        self._coupons.append(r)
        if r.get("kind") == "item":
            return self._say(_what(r, self.currency) or messages.VERDICT_TEXT["ok"])
        return self._say("-" + format_amount(disc) + " " + _label(r, messages.VERDICT_TEXT["ok"]))

    def _commit(self, now):
        r = self.services.commit_sale(self._gross, list(self._coupons))
        self._shown = r
        self._message = None
        self._until = now + self.timeout_s
        if not r.get("ok"):
            self.screen = REFUSED
            return [self._show()]
        self.screen = COMMITTED
        # The receipt goes to the printer first: whoever sees `committed` (the clerk, a test)
        # can take it that the receipt is out.
        actions = []
        receipt = r.get("receipt")
        if receipt:
            actions.append(("print", receipt))
        actions.append(self._show())
        return actions

    # -- idle and coupon ---------------------------------------------------------------------
    def _check_only(self, text, now):
        self._shown = self.services.check_coupon(text, None, True)
        self.screen = COUPON
        self._message = None
        self._until = now + self.timeout_s
        return [self._show()]

    def _go_idle(self, message, now):
        self.screen = self._home()
        self._pin = ""
        self._digits = ""
        self._gross = 0
        self._coupons = []
        self._shown = None
        self._message = message
        self._until = now + self.timeout_s if message else None
        return [self._show()]

    def _say(self, message):
        self._message = message
        return [self._show()]

    # -- rendering ---------------------------------------------------------------------------
    def _show(self):
        notice = self.services.notice() or []
        if self.screen == IDLE:
            lines = list(notice) + list(self.services.idle_lines())
        elif self.screen == LOGIN:
            lines = list(notice[:1]) + self._pin_body(messages.TITLE_CLERK_LOGIN)
        else:
            lines = list(notice[:1]) + getattr(self, "_body_" + self.screen)()
        if self._message:
            lines.append(self._message)
        return ("show", self.screen, _fit(lines))

    def _money(self, minor):
        return format_amount(minor, self.currency)

    def _pin_body(self, title):
        return [title, "PIN " + "*" * len(self._pin), messages.HINT_PIN]

    def _body_pin(self):
        return self._pin_body(messages.TITLE_SUPERVISOR)

    def _body_declined(self):
        lines = self.services.declined_lines()
        if not lines:
            return [messages.NO_DECLINED, messages.HINT_BACK]
        body = ["Declined: %d" % len(lines)] + list(lines[:DECLINED_SHOWN])
        if len(lines) > DECLINED_SHOWN:
            body.append(messages.more_declined(len(lines) - DECLINED_SHOWN))
        return body + [messages.HINT_DECLINED]

    def _body_amount(self):
        return ["Amount " + self._money(int(self._digits or "0")), messages.HINT_AMOUNT]

    def _body_sale(self):
        lines = ["Total " + self._money(self.total())]
        if self._coupons:
            disc = sum(_discount(c) for c in self._coupons)
            lines.append("Gross " + self._money(self._gross))
            lines.append("%d coupon%s -%s" % (len(self._coupons),
                                              "" if len(self._coupons) == 1 else "s",
                                              format_amount(disc)))
        lines.append(messages.HINT_SALE)
        return lines

    def _body_committed(self):
        r = self._shown
        amount = r.get("amount")
        lines = ["Paid " + self._money(amount) if type(amount) is int else "Paid"]
        lines.append(messages.SENT if r.get("sent") else messages.QUEUED)
        return lines

    def _body_refused(self):
        reason = self._shown.get("reason") or []
        if type(reason) is str:
            reason = [reason]
        return ["Sale refused"] + list(reason) + [messages.NOT_SAVED]

    def _body_coupon(self):
        r = self._shown
        verdict = r.get("verdict")
        lines = [messages.verdict_text(verdict)]
        label = _label(r, None)
        if label:
            lines.append(label)
        if verdict == "ok":
            what = _what(r, self.currency)
            if what:
                lines.append(what)
            lines.append(messages.CHECK_ONLY)
        return lines


def _discount(r):
    d = r.get("discount")
    return d if type(d) is int and d > 0 else 0


def _label(r, default):
    for key in ("name", "campaign"):
        v = r.get(key)
        if type(v) is str and v:
            return v
    return default


def _what(r, cur):
    """What an ok coupon gives, from its claims: "10% off", "5.00 CNY off", "free SKU x2"."""
    kind = r.get("kind")
    val = r.get("val")
    if type(val) is not int:
        return None
    if kind == "pct":
        return "%d%% off" % val
    if kind == "amt":
        return format_amount(val, cur) + " off"
    if kind == "item":
        return "free %s x%d" % (r.get("sku") or "item", val)
    return None
