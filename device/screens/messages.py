# What the clerk reads. One short line per SPEC 2.3 verdict code and for each clerk-screen event;
# every text fits the 32-column screens of device/screens/clerk.py with room for a prefix.

VERDICT_TEXT = {
    "ok": "coupon accepted",
    "malformed": "not a valid coupon",
    "unsupported_alg": "coupon type not supported",
    "unknown_key": "issuer not trusted",
    "bad_signature": "forged or damaged coupon",
    "wrong_issuer": "wrong issuer",
    "key_not_valid": "issuer key not valid",
    "revoked": "coupon withdrawn",
    "clock_unset": "clock not set: retry later",
    "not_yet_valid": "coupon not valid yet",
    "expired": "coupon expired",
    "wrong_store": "not valid in this store",
    "wrong_currency": "wrong currency",
    "below_min_spend": "minimum spend not reached",
    "already_redeemed": "coupon already used",
    "unreadable": "unreadable code",
}

UNREADABLE = VERDICT_TEXT["unreadable"]  # a bad scan (too long, binary garbage)
UNKNOWN_VERDICT = "coupon refused"

ALREADY_IN_SALE = "already in this sale"
NO_DISCOUNT = "no discount on this total"
COUPON_REMOVED = "last coupon removed"
ENTER_AMOUNT = "type an amount first"
MAX_DIGITS = "at most 9 digits"
PRESS_ENTER = "press ENTER first"
SALE_CANCELLED = "sale cancelled"
SENT = "sent"

QUEUED = "queued offline"
CHECK_ONLY = "checked only, not redeemed"
HINT_AMOUNT = "ENTER=ok CLEAR=del CANCEL"
HINT_SALE = "scan coupons, ENTER=pay"
NOT_SAVED = "nothing recorded"
SALE_REFUSED = "Sale refused"
NOT_RECORDED = ["Sale NOT recorded:", "storage error", "call a technician"]
STORAGE_FULL = ["STORAGE FULL: no new sales", "queued sales still send", "call a technician"]

# Offline limits (SPEC 4): the first line of a refusal names the limit.
LIMIT_TEXT = {
    "offline_max_charge": "over offline max charge",
    "offline_max_total": "offline total limit",
    "offline_max_count": "offline sale count limit",
    "offline_max_age_s": "oldest sale too old",
}



def receipt_line(no):
    """The receipt number on `committed`: what a refund or a query about the sale quotes."""
    return "receipt " + no

def verdict_text(code):
    """The clerk's line for a verdict code; unknown codes get a generic refusal with the code."""
    text = VERDICT_TEXT.get(code) if type(code) is str else None
    if text is not None:
        return text
    if type(code) is str and code:
        return (UNKNOWN_VERDICT + ": " + code)[:32]
    return UNKNOWN_VERDICT

# Roles: clerk login, the supervisor's PIN and the declined-charges menu.
TITLE_CLERK_LOGIN = "Clerk login"
TITLE_SUPERVISOR = "Supervisor PIN"
HINT_PIN = "ENTER=ok CLEAR=del CANCEL"
HINT_DECLINED = "ENTER=ack F1=print CANCEL"
HINT_BACK = "CANCEL=back"
LOGGED_IN = "logged in"
LOGGED_OUT = "logged out"
ENTER_PIN = "type the PIN first"
WRONG_PIN = "wrong PIN"
PIN_LOCKED = "PIN locked: try again later"
NO_PIN_SET = "no PIN set for this role"
LOG_IN_FIRST = "log in first"
FINISH_MENU = "finish the menu first"
NO_DECLINED = "no declined charges"
PRINTED = "list printed"
NOTHING_TO_PRINT = "nothing to print"
ACK_FAILED = "not saved: try again"


def pin_verdict_text(verdict):
    """The line for a PIN that was not accepted (device/staff/pins.py verdict codes)."""
    if verdict == "locked":
        return PIN_LOCKED
    if verdict == "no_pin":
        return NO_PIN_SET
    return WRONG_PIN


def acknowledged(n):
    return "%d decline%s acknowledged" % (n, "" if n == 1 else "s")


def more_declined(n):
    return "+%d more: F1 prints all" % n

# Service licence (SPEC 8.5): the idle reminders (stepping up at 30, 7 and 1 days left), the
# grace warning, and why a restricted terminal refuses a sale (the `refused` screen).
LICENCE_REFUSED = ["Service licence expired:", "no sales until it is renewed"]
LICENCE_RENEW = "Renew: ask your provider"
LICENCE_RENEW_SOON = "Renew soon: ask your provider"
LICENCE_RENEW_NOW = "RENEW NOW: ask your provider"
LICENCE_EXPIRED = "LICENCE EXPIRED: renew now"
LICENCE_STOPPED = "LICENCE EXPIRED: no new sales"


def _days(n):
    return "%d day%s" % (n, "" if n == 1 else "s")


def licence_lines(state, days, step):
    """Idle lines for a licence state; step: the reminder step reached (30, 7 or 1 days)."""
    if state == "expiring":
        head = "Licence: %s left" % _days(days)
        if step == 1:
            return [head, LICENCE_RENEW_NOW]
        if step == 7:
            return [head, LICENCE_RENEW_SOON]
        return [head]
    if state == "grace":
        return [LICENCE_EXPIRED, "Sales stop in %s" % _days(days)]
    if state == "restricted":
        return [LICENCE_STOPPED, LICENCE_RENEW]
    return []


# Bookings (SPEC 8.4): the `bookings` screen, its actions and the conflict notice.
TITLE_BOOKINGS = "Bookings"
BOOKINGS_OFF = "bookings are off"
NO_BOOKINGS = "no bookings"
NO_BOOKING_LIST = "no list from the host yet"
HINT_BOOKINGS = "ENTER=in F3=cancel F4=no-show"
HINT_REASON = "digit=reason CANCEL=back"
BOOKING_STATE = {"booked": "booked", "checked_in": "in", "cancelled": "cancel",
                 "no_show": "noshow"}
BOOKING_STATE_LONG = {"booked": "booked", "checked_in": "checked in",
                      "cancelled": "cancelled", "no_show": "no-show"}
BOOKING_DONE = {"check_in": "checked in", "cancel": "cancelled", "no_show": "no-show"}
BOOKING_FAR_DAY = "later"  # a slot beyond the year 9999 (a host's bad time)
BOOKING_REASON_TEXT = ("customer asked", "staff unavailable", "store closed", "other")


def booking_state(st):
    return BOOKING_STATE_LONG.get(st, st)


def already(st):
    """The line for an action on a booking that is not `booked` any more."""
    return "already " + booking_state(st)


def booking_done(name, op, offline):
    return "%s: %s%s" % (name[:14], BOOKING_DONE[op], " (offline)" if offline else "")


def idle_bookings(n):
    return "F2 bookings: %d to come today" % n



def waiting_title(n):
    return "Waiting for the host: %d" % n


def more_waiting(n):
    return "+%d more waiting" % n

# Refunds (SPEC 8.3): the `refund` screen opened by a receipt's QR on idle.
REFUND_REFUSED = "Refund refused"
REFUND_NOT_RECORDED = ["Refund NOT recorded:", "storage error", "call a technician"]
REFUND_OF_DECLINED = ["the sale was declined:", "nothing was paid"]
REFUND_NOTHING_LEFT = ["the sale is refunded in full"]
REFUND_UNKNOWN_SALE = "not on this till: type amount"
REFUND_TYPE_AMOUNT = "type the amount to refund"
REFUND_CANCELLED = "refund cancelled"
HINT_REFUND_ALL = "ENTER=all CLEAR=del CANCEL"
HINT_REFUND_REASON = ["1 changed mind  2 defective", "3 wrong item  4 not delivered",
                      "5 other  CLEAR=back"]
TITLE_REFUND_PIN = "Refund: supervisor PIN"
REFUND_QUEUED = "queued offline: host decides"
REFUND_SENT = "sent: the host decides"


def refund_title(no):
    return "Refund of receipt " + no


def refund_left(amount):
    return "refundable " + amount


def refund_at_most(amount):
    return "at most " + amount


def refund_amount(amount):
    return "Refund %s, why?" % amount


def refund_requested(amount):
    return "Refund requested " + amount


def refund_receipt_line(no):
    """The refund's own number on `committed`, as its receipt prints it."""
    return "refund receipt " + no


def refund_pay_back(amount):
    return "approved: pay back " + amount


def refund_credited(amount):
    return "credited to balance " + amount


def refund_fee(amount):
    return "fee kept " + amount


def refunds_waiting(n):
    return "refunds in review: %d" % n


# Members (SPEC 8.1): member codes, the `member` screen, the member on `sale` (F2/F3/F4).
MEMBER_VERDICT_TEXT = {
    "ok": "member code ok",
    "malformed": "not a valid member code",
    "unsupported_alg": "member code type not supported",
    "unknown_key": "issuer not trusted",
    "bad_signature": "forged or damaged member code",
    "wrong_issuer": "wrong issuer",
    "key_not_valid": "issuer key not valid",
    "blocked": "card blocked: lost or replaced",
    "clock_unset": "clock not set: retry later",
    "expired": "app code expired: show a new one",
}
UNKNOWN_MEMBER_VERDICT = "member code refused"
BALANCE_ASKING = "balance: asking the host"
BALANCE_OFFLINE = "balance offline"  # SPEC 8.1's words: no answer within 3 s
MEMBER_UNKNOWN = "member not known to the host"
MEMBER_BLOCKED = "ACCOUNT BLOCKED"
NO_VIP = "no VIP membership"
HINT_MEMBER = "digits=new sale, key=back"
MEMBER_ATTACHED = "member attached"
APP_CODE_ATTACHED = "member app code attached"
ONE_MEMBER = "one member per sale"
HINT_MEMBER_SALE = "F2=balance F3=top-up F4=VIP"
SCAN_MEMBER_FIRST = "scan a member card first"
SCAN_APP_CODE = "F2 needs the member's app code"
APP_CODE_USED = "app code already used"
NO_COUPONS_TOPUP = "no coupons on a top-up"
NO_COUPONS_VIP = "no coupons on VIP: CLEAR them"
NO_VIP_TIERS = "no VIP tiers set by the host"
VIP_CANCELLED = "VIP choice cancelled"
WAITING_FOR_HOST = "sent: waiting for the host"
APPROVED = "approved by the host"
HOST_SLOW = "sent; receipt printed w/o bal"
NO_RECEIPT = "no receipt: see supervisor"

# Member payments offline (SPEC 8.1): the first line of a refusal names the limit.
MEMBER_LIMIT_TEXT = {
    "offline_member_max": "over offline member max",
    "offline_member_total": "member offline total limit",
    "offline_member_none": "balance pay needs the host",
}
MEMBER_LIMIT_NONE_DETAIL = "no offline balance payments"


def member_verdict_text(code):
    """The clerk's line for a member code verdict."""
    text = MEMBER_VERDICT_TEXT.get(code) if type(code) is str else None
    if text is not None:
        return text
    if type(code) is str and code:
        return (UNKNOWN_MEMBER_VERDICT + ": " + code)[:32]
    return UNKNOWN_MEMBER_VERDICT


def vip_pick(n):
    return "VIP: type 1..%d, CLEAR=back" % n


def no_such_tier(n):
    return "no VIP tier %d" % n


def declined_code(code):
    return ("DECLINED: %s" % (code or "-"))[:32]


def member_title(kind):
    """The first line of `committed` for a member kind (amount follows)."""
    return {"member": "Balance pay", "topup": "Top-up", "vip": "VIP"}.get(kind, "Paid")


def member_id(mid):
    return "Member " + mid


def member_line(mid, tier):
    """The member attached on `sale`."""
    return ("Member %s %s" % (mid, tier)).rstrip()


def tier_line(tier):
    return "Tier " + tier


def host_tier_line(tier):
    return "Host tier " + tier


def tier_discount(pct, amount):
    return "Tier -%d%% -%s" % (pct, amount)


def vip_tier_line(n, name, fee, cycle):
    return "%d %s %s/%s" % (n, name, fee, cycle)


def balance_line(amount):
    return "Balance " + amount


def points_line(pts):
    return "Points %d" % pts


def vip_until(day):
    return "VIP until " + day
