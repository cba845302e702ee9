"""The clerk's screens (SPEC 5.1) as a sans-I/O state machine.

Events in: key(name, now), scan(text, now), bad_scan(code, now), tick(now), refresh(now).
Actions out (a list, in order): ("show", screen, lines) and ("print", receipt_bytes).

Core screens (these names are the `screen` field of the display frames):
  idle       store/device/link/queue lines from till.idle_lines() and any service's idle lines;
             a digit starts `amount`, a scan is routed by its prefix (a coupon opens `coupon`),
             other keys only clear a message unless a service claims them (F2: bookings).
  amount     digits type the amount in minor units (at most 9); CLEAR deletes the last digit,
             CANCEL goes back to idle, ENTER with an amount opens `sale` (with 0 it says so).
  sale       scans are routed by prefix (coupons are checked, stateful, against the current total
             and ok ones added once per cti; services attach a member...); CLEAR removes the last
             coupon; CANCEL abandons the sale (nothing is recorded); ENTER commits it through
             till.commit_sale; services may claim other keys (F2/F3/F4 with a member).
  committed  the amount and "sent" / "queued offline" (or a service's lines); printed with it.
  refused    the sale was refused (an offline limit, the licence): the reason; nothing recorded.
  coupon     a scan on idle: the verdict, checked only (never redeemed).
  login      when a clerk PIN is configured and nobody is logged in (roles.clerk_login_required()),
             in place of idle: digits type the PIN (masked), CLEAR deletes, CANCEL clears, ENTER
             calls roles.clerk_login(pin); MENU opens `pin`.
  pin        a PIN prompt (masked): MENU on idle or login asks the supervisor PIN for `declined`;
             services ask it for their own steps (a refund above refund_pin_over); ENTER checks
             it with roles.check_pin(role, pin); CANCEL goes back.
  declined   the notices no supervisor has acknowledged (roles.declined_lines()): declined
             charges, rejected refunds...; ENTER acknowledges them all (roles.ack_declined()),
             F1 prints the list (roles.print_declined()), CANCEL goes back. Under them, the
             records still waiting for the host's decision (roles.waiting_lines(), optional:
             refunds in review), which only the host's final answer clears.
committed, refused and coupon go back to idle on the next key (which is consumed) or after
timeout_s; a scan there is handled as on idle. A message on idle clears after timeout_s too. pin,
declined and the services' menu screens go back after menu_timeout_s without a key. F4 on idle
logs the clerk out. Keys without a meaning leave the screen as it is; "back"/"idle" means login
when a clerk must log in.

A persistent notice (roles.notice()) is shown while present: its first line on top of every
screen, all of its lines on idle.

Collaborators:
  till: idle_lines() -> [text]; check_coupon(token, total, stateful) -> verdict dict;
      commit_sale(gross, coupons, **terms) -> {"ok": True, "amount", "sent", "receipt", "cid"}
      or {"ok": False, "reason": [text]}; returns once the record is durable.
  roles (optional; without it there is no login, no notice and MENU does nothing):
      notice() -> [text] or None; clerk_login_required(); clerk_login(pin); clerk_logout();
      check_pin(role, pin) -> "ok" | "wrong" | "locked" | "no_pin"; declined_lines();
      ack_declined() -> int; print_declined() -> ESC/POS bytes or None.
Services extend the machine without editing it: add_screen(Screen), route_scan(prefix, ...),
on_key(screen, fn), add_idle_lines(fn), add_sale_lines(fn), on_tick(fn). Collaborators are
trusted not to raise; the agent wraps its cores so that they do not.
"""
from device.drivers.keypad import KEYS
from device.sales.cart import Cart
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


def is_digit(name):
    return len(name) == 1 and "0" <= name <= "9"


class Screen:
    """A screen a service adds. `timed`: back home on the next key or after timeout_s (the key is
    consumed); `menu`: back home after menu_timeout_s without a key."""

    name = ""
    timed = False
    menu = False

    def enter(self, clerk, now, **kw):
        pass

    def key(self, clerk, name, now):
        return clerk.say(clerk.message)

    def scan(self, clerk, text, now):
        return clerk.say(messages.FINISH_MENU)

    def body(self, clerk):
        return []

    def tick(self, clerk, now):
        return []


class Clerk:
    def __init__(self, till, roles=None, timeout_s=5, currency="", menu_timeout_s=30):
        self.till = till
        self.roles = roles
        self.timeout_s = timeout_s
        self.menu_timeout_s = menu_timeout_s
        self.currency = currency  # only for display: "12.34 CNY" rather than "12.34"
        self.screen = IDLE
        self.cart = None
        self.message = None
        self._pin = ""      # digits of a PIN being typed (never shown)
        self._ask = None    # (role, title, on_ok) of the PIN prompt open
        self._digits = ""
        self._shown = None  # the coupon check, the commit result or the refusal being shown
        self._until = None  # when a timed screen (or a message on idle) goes away
        self._dirty = False
        self._screens = {}
        self._scan_routes = []   # (prefix, on_idle, on_sale)
        self._key_hooks = {}     # screen -> [fn(clerk, key, now) -> actions or None]
        self._idle_lines = []
        self._sale_lines = []
        self._tickers = []
        if self._login_required():
            self.screen = LOGIN

    # -- extension points --------------------------------------------------------------------
    def add_screen(self, screen):
        self._screens[screen.name] = screen

    def route_scan(self, match, idle=None, sale=None):
        """Scans that start with `match` (a text) or that match(text) accepts (a function) go
        to idle(clerk, text, now) on idle (and the timed screens) and to sale(clerk, text, now)
        on `sale`; each returns actions. Unrouted scans are coupons."""
        self._scan_routes.append((match, idle, sale))

    def on_key(self, screen, fn):
        """fn(clerk, key, now) sees the keys of a core screen first; None lets them through."""
        self._key_hooks.setdefault(screen, []).append(fn)

    def add_idle_lines(self, fn):
        self._idle_lines.append(fn)

    def add_sale_lines(self, fn):
        """fn(cart) -> lines shown on `sale` under the totals."""
        self._sale_lines.append(fn)

    def on_tick(self, fn):
        """fn(clerk, now) -> actions on every tick, whatever the screen (a receipt printed when
        the host's answer arrives); they come before the screen's own."""
        self._tickers.append(fn)

    def touch(self):
        """Something under the current screen changed (an answer from the host): redraw it on
        the next tick."""
        self._dirty = True

    # -- events ------------------------------------------------------------------------------
    def key(self, name, now):
        if name not in KEYS:
            return []
        if self.screen in TIMED or self._service(True, "timed"):
            return self._go_idle(None, now)
        for fn in self._key_hooks.get(self.screen, ()):
            out = fn(self, name, now)
            if out is not None:
                return out
        svc = self._screens.get(self.screen)
        if svc is not None:
            if svc.menu:
                self._until = now + self.menu_timeout_s
            return svc.key(self, name, now)
        return getattr(self, "_key_" + self.screen)(name, now)

    def scan(self, text, now):
        if self.screen == LOGIN:
            return self._say(messages.LOG_IN_FIRST)
        if self.screen in MENU_SCREENS:
            return self._say(messages.FINISH_MENU)
        svc = self._screens.get(self.screen)
        if svc is not None and not svc.timed:
            return svc.scan(self, text, now)
        if self.screen == AMOUNT:
            return self._say(messages.PRESS_ENTER)
        where = 2 if self.screen == SALE else 1
        for route in self._scan_routes:
            m = route[0]
            hit = text.startswith(m) if type(m) is str else m(text)
            if hit and route[where] is not None:
                return route[where](self, text, now)
        if where == 2:
            return self._sale_scan(text)
        return self._check_only(text, now)

    def bad_scan(self, code, now):
        if self.screen == IDLE:
            self._until = now + self.timeout_s
        return self._say(messages.UNREADABLE)

    def tick(self, now):
        early = []
        for fn in self._tickers:
            early += fn(self, now) or []
        return early + self._tick_screen(now)

    def _tick_screen(self, now):
        out = []
        svc = self._screens.get(self.screen)
        if svc is not None:
            out = svc.tick(self, now)
        if self._until is not None and now >= self._until:
            if self.screen in TIMED or self.screen in MENU_SCREENS or self.screen == IDLE \
                    or svc is not None:
                return self._go_idle(None, now)
            self._until = None
        if self._dirty and not out:
            self._dirty = False
            out = [self._show()]
        return out

    def refresh(self, now):
        # A clerk PIN set or removed by the host, or a logout elsewhere, shows on the next redraw.
        if self.screen == IDLE and self._login_required():
            self.screen = LOGIN
            self._pin = ""
        elif self.screen == LOGIN and not self._login_required():
            self.screen = IDLE
        return [self._show()]

    # -- moving between screens (also for the services) ---------------------------------------
    def go(self, name, now, **kw):
        """Opens a service's screen."""
        svc = self._screens[name]
        self.screen = name
        self.message = None
        self._until = now + (self.timeout_s if svc.timed else self.menu_timeout_s) \
            if (svc.timed or svc.menu) else None
        svc.enter(self, now, **kw)
        return [self._show()]

    def go_idle(self, message, now):
        return self._go_idle(message, now)

    def say(self, message):
        return self._say(message)

    def ask_pin(self, role, title, on_ok, now):
        """Opens the PIN prompt; on_ok(clerk, now) -> actions runs once the PIN is accepted."""
        self.screen = PIN
        self._ask = (role, title, on_ok)
        self._pin = ""
        self.message = None
        self._until = now + self.menu_timeout_s
        return [self._show()]

    def done(self, result, now):
        """Shows the outcome of a commit: `committed` (receipt printed first) or `refused`.
        result: {"ok", "lines"?, "amount"?, "sent"?, "receipt"?} or {"ok": False, "reason"}."""
        self._shown = result
        self.message = None
        self.cart = None
        self._until = now + self.timeout_s
        if not result.get("ok"):
            self.screen = REFUSED
            return [self._show()]
        self.screen = COMMITTED
        # The receipt goes to the printer first: whoever sees `committed` (the clerk, a test)
        # can take it that the receipt is out.
        actions = []
        receipt = result.get("receipt")
        if receipt:
            actions.append(("print", receipt))
        actions.append(self._show())
        return actions

    def commit(self, now, kind="sale", **terms):
        """Commits the cart on `sale` as a charge of `kind`."""
        cart = self.cart
        terms.update(cart.terms())
        if kind != "sale":
            terms["kind"] = kind
        return self.done(self.till.commit_sale(cart.gross, list(cart.coupons), **terms), now)

    # -- keys per core screen ----------------------------------------------------------------
    def _key_idle(self, name, now):
        if is_digit(name):
            self.screen = AMOUNT
            self._digits = ""
            self.message = None
            self._until = None
            return self._key_amount(name, now)
        if name == "MENU" and self._opt("check_pin"):
            return self._open_notices(now)
        if name == "F4" and self._opt("clerk_logout"):
            self.roles.clerk_logout()
            if self._login_required():
                return self._go_idle(messages.LOGGED_OUT, now)
        self._until = None
        return self._say(None)

    def _opt(self, name):
        return self.roles is not None and getattr(self.roles, name, None) is not None

    def _login_required(self):
        fn = getattr(self.roles, "clerk_login_required", None) if self.roles else None
        return bool(fn is not None and fn())

    def _home(self):
        return LOGIN if self._login_required() else IDLE

    def _type_pin(self, name):
        """Digits, CLEAR and CANCEL on a PIN screen; False for any other key."""
        if is_digit(name):
            if len(self._pin) < MAX_PIN:
                self._pin += name
        elif name == "CLEAR":
            self._pin = self._pin[:-1]
        elif name == "CANCEL":
            self._pin = ""
        else:
            return False
        self.message = None
        return True

    def _key_login(self, name, now):
        if self._type_pin(name):
            return self._say(None)
        if name == "MENU" and self._opt("check_pin"):
            return self._open_notices(now)
        if name != "ENTER":
            return self._say(self.message)
        if not self._pin:
            return self._say(messages.ENTER_PIN)
        verdict = self.roles.clerk_login(self._pin)
        self._pin = ""
        if verdict != "ok":
            return self._say(messages.pin_verdict_text(verdict))
        return self._go_idle(messages.LOGGED_IN, now)

    def _open_notices(self, now):
        return self.ask_pin("supervisor", messages.TITLE_SUPERVISOR, _to_notices, now)

    def _key_pin(self, name, now):
        self._until = now + self.menu_timeout_s
        if name == "CANCEL":
            return self._go_idle(None, now)
        if self._type_pin(name):
            return self._say(None)
        if name != "ENTER":
            return self._say(self.message)
        if not self._pin:
            return self._say(messages.ENTER_PIN)
        role, _, on_ok = self._ask
        verdict = self.roles.check_pin(role, self._pin)
        self._pin = ""
        if verdict != "ok":
            return self._say(messages.pin_verdict_text(verdict))
        self._ask = None
        return on_ok(self, now)

    def _key_declined(self, name, now):
        self._until = now + self.menu_timeout_s
        if name == "CANCEL":
            return self._go_idle(None, now)
        if name == "ENTER":
            n = self.roles.ack_declined()
            if not n:
                left = self.roles.declined_lines()
                return self._go_idle(messages.ACK_FAILED if left else None, now)
            return self._go_idle(messages.acknowledged(n), now)
        if name == "F1":
            job = self.roles.print_declined()
            if not job:
                return self._say(messages.NOTHING_TO_PRINT)
            return self._say(messages.PRINTED) + [("print", job)]
        return self._say(self.message)

    def _key_amount(self, name, now):
        if is_digit(name):
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
            self.cart = Cart(int(self._digits))
            return self._say(None)
        return self._say(self.message)

    def _key_sale(self, name, now):
        if name == "ENTER":
            return self.commit(now)
        if name == "CANCEL":
            return self._go_idle(messages.SALE_CANCELLED, now)
        if name == "CLEAR" and self.cart.coupons:
            self.cart.coupons.pop()
            return self._say(messages.COUPON_REMOVED)
        return self._say(self.message)

    # -- sale --------------------------------------------------------------------------------
    def total(self):
        """What the customer pays now: gross less the discounts, never below 0."""
        return self.cart.total() if self.cart is not None else 0

    def _sale_scan(self, text):
        cart = self.cart
        r = self.till.check_coupon(text, cart.total(), True)
        verdict = r.get("verdict")
        if verdict != "ok":
            return self._say(messages.verdict_text(verdict))
        for c in cart.coupons:
            if c.get("cti") == r.get("cti"):
                return self._say(messages.ALREADY_IN_SALE)
        disc = cart.discount_of(r)
        if disc == 0 and r.get("kind") != "item":
            # e.g. 10 % of a total already at 0: redeeming it would use the coupon up for nothing
            return self._say(messages.NO_DISCOUNT)
        cart.coupons.append(r)
        if r.get("kind") == "item":
            return self._say(_what(r, self.currency) or messages.VERDICT_TEXT["ok"])
        return self._say("-" + format_amount(disc) + " " + _label(r, messages.VERDICT_TEXT["ok"]))

    # -- idle and coupon ---------------------------------------------------------------------
    def _check_only(self, text, now):
        self._shown = self.till.check_coupon(text, None, True)
        self.screen = COUPON
        self.message = None
        self._until = now + self.timeout_s
        return [self._show()]

    def _go_idle(self, message, now):
        self.screen = self._home()
        self._pin = ""
        self._ask = None
        self._digits = ""
        self.cart = None
        self._shown = None
        self.message = message
        self._until = now + self.timeout_s if message else None
        return [self._show()]

    def _say(self, message):
        self.message = message
        return [self._show()]

    def _service(self, want, attr):
        svc = self._screens.get(self.screen)
        return svc is not None and getattr(svc, attr) == want

    # -- rendering ---------------------------------------------------------------------------
    def _show(self):
        self._dirty = False
        notice = (self.roles.notice() if self.roles is not None else None) or []
        if self.screen == IDLE:
            lines = list(notice) + list(self.till.idle_lines())
            for fn in self._idle_lines:
                lines += fn()
        elif self.screen == LOGIN:
            lines = list(notice[:1]) + self._pin_body(messages.TITLE_CLERK_LOGIN)
        else:
            svc = self._screens.get(self.screen)
            body = svc.body(self) if svc is not None else getattr(self, "_body_" + self.screen)()
            lines = list(notice[:1]) + body
        if self.message:
            lines.append(self.message)
        return ("show", self.screen, _fit(lines))

    def money(self, minor):
        return format_amount(minor, self.currency)

    def _pin_body(self, title):
        return [title, "PIN " + "*" * len(self._pin), messages.HINT_PIN]

    def _body_pin(self):
        return self._pin_body(self._ask[1] if self._ask else messages.TITLE_SUPERVISOR)

    def _body_declined(self):
        lines = self.roles.declined_lines()
        waiting = self.roles.waiting_lines() if self._opt("waiting_lines") else []
        if not lines and not waiting:
            return [messages.NO_DECLINED, messages.HINT_BACK]
        body = []
        if lines:
            body = ["Declined: %d" % len(lines)] + list(lines[:DECLINED_SHOWN])
            if len(lines) > DECLINED_SHOWN:
                body.append(messages.more_declined(len(lines) - DECLINED_SHOWN))
        if waiting:
            body += [messages.waiting_title(len(waiting))] + list(waiting[:DECLINED_SHOWN])
            if len(waiting) > DECLINED_SHOWN:
                body.append(messages.more_waiting(len(waiting) - DECLINED_SHOWN))
        return body + [messages.HINT_DECLINED if lines else messages.HINT_BACK]

    def _body_amount(self):
        return ["Amount " + self.money(int(self._digits or "0")), messages.HINT_AMOUNT]

    def _body_sale(self):
        cart = self.cart
        lines = ["Total " + self.money(cart.total())]
        if cart.coupons:
            disc = sum(cart.coupon_discounts())
            lines.append("Gross " + self.money(cart.gross))
            lines.append("%d coupon%s -%s" % (len(cart.coupons),
                                              "" if len(cart.coupons) == 1 else "s",
                                              format_amount(disc)))
        for fn in self._sale_lines:
            lines += fn(cart)
        lines.append(messages.HINT_SALE)
        return lines

    def _body_committed(self):
        r = self._shown
        if r.get("lines"):
            return list(r["lines"])
        amount = r.get("amount")
        lines = ["Paid " + self.money(amount) if type(amount) is int else "Paid"]
        lines.append(messages.SENT if r.get("sent") else messages.QUEUED)
        if r.get("receipt_no"):
            lines.append(messages.receipt_line(r["receipt_no"]))
        return lines

    def _body_refused(self):
        reason = self._shown.get("reason") or []
        if type(reason) is str:
            reason = [reason]
        title = self._shown.get("title") or messages.SALE_REFUSED
        return [title] + list(reason) + [messages.NOT_SAVED]

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


def _to_notices(clerk, now):
    clerk.screen = DECLINED
    clerk._until = now + clerk.menu_timeout_s
    return clerk.say(None)


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
