# Message bodies of the store services (SPEC 8): members, refunds, bookings, licence.
# Registered into protocol/messages.py; every field rule is protocol/schema.py's.
from protocol import schema as s
from protocol.messages import register
from protocol.schema import MessageError

MEMBER_STATES = ("active", "blocked", "unknown")
REFUND_REASONS = ("changed_mind", "defective", "wrong_item", "not_delivered", "other")
REFUND_STATES = ("review", "approved", "rejected", "refunded", "failed")
REFUND_FINAL = ("approved", "rejected", "refunded", "failed")
REFUND_BAD = ("rejected", "failed")  # final answers a supervisor must acknowledge
BOOKING_STATES = ("booked", "checked_in", "cancelled", "no_show")
BOOKING_OPS = ("check_in", "cancel", "no_show")
BOOKING_REASONS = ("customer_asked", "staff_unavailable", "store_closed", "other")
BOOKING_RESULTS = ("ok", "conflict", "unknown")
# The project's optional "code" of booking_result: which rule refused an update whose version
# was current (a version that is not current is a plain conflict, without a code).
BOOKING_CODES = ("not_booked", "unknown_booking")
MAX_BOOKINGS = 200
MAX_LICENCE = 2048


# ---------------------------------------------------------------- members (8.1)

def _member_query(b):
    s.req(b, "qid", s.id16)
    s.req(b, "mid", s.text, 1, 64)


def _member_info(b):
    s.req(b, "qid", s.id16)
    s.req(b, "mid", s.text, 1, 64)
    s.req(b, "bal", s.amount)
    s.req(b, "pts", s.amount)
    s.req(b, "tier", s.text, 0, 32)
    vip = s.field(b, "vip_exp", "vip_exp")
    if vip is not None:
        s.uint(vip, "vip_exp")
    s.req(b, "st", s.choice, MEMBER_STATES)
    s.opt(b, "nm", s.text, 0, 64)


# ---------------------------------------------------------------- refunds (8.3)

def _refund(b):
    s.req(b, "rid", s.id16)
    s.req(b, "cid", s.id16)
    amt = s.req(b, "amt", s.amount)
    if amt < 1:
        raise MessageError("amt", "a refund is at least 1")
    s.req(b, "cur", s.text, 1, 8)
    # SPEC 8.3: text. This terminal sends one of REFUND_REASONS; a host takes any text, so a
    # request from another terminal is answered, never dropped and retried for ever.
    s.req(b, "reason", s.text, 1, 64)
    s.req(b, "at", s.uint)
    s.req(b, "clerk", s.text)
    s.req(b, "off", s.boolean)
    s.opt(b, "n", s.uint)  # the original sale's receipt number, when the QR carried it


def _refund_result(b):
    s.req(b, "rid", s.id16)
    s.req(b, "st", s.choice, REFUND_STATES)
    s.opt(b, "code", s.text, 1, 64)
    s.opt(b, "fee", s.amount)
    s.opt(b, "net", s.amount)
    s.opt(b, "bal", s.amount)
    s.opt(b, "note", s.text, 1, 64)  # the reviewer's words on a rejection


# ---------------------------------------------------------------- bookings (8.4)

def booking_item(v, path):
    s.mapping(v, path)
    s.text(s.field(v, "bid", path + ".bid"), path + ".bid", 1, 64)
    s.uint(s.field(v, "at", path + ".at"), path + ".at")
    s.uint(s.field(v, "dur", path + ".dur"), path + ".dur")
    s.text(s.field(v, "name", path + ".name"), path + ".name", 0, 64)
    s.text(s.field(v, "svc", path + ".svc"), path + ".svc", 0, 64)
    s.choice(s.field(v, "st", path + ".st"), path + ".st", BOOKING_STATES)
    s.uint(s.field(v, "v", path + ".v"), path + ".v")
    return v


def _bookings(b):
    s.req(b, "ver", s.uint)
    for i, item in enumerate(s.req(b, "items", s.array, MAX_BOOKINGS)):
        booking_item(item, "items[%d]" % i)


def _booking_update(b):
    s.req(b, "uid", s.id16)
    s.req(b, "bid", s.text, 1, 64)
    s.req(b, "op", s.choice, BOOKING_OPS)
    s.opt(b, "reason", s.text, 1, 64)  # SPEC 8.4: optional, a cancel too (this terminal sends one)
    s.req(b, "v", s.uint)
    s.req(b, "at", s.uint)
    s.req(b, "clerk", s.text)


def _booking_result(b):
    s.req(b, "uid", s.id16)
    s.req(b, "st", s.choice, BOOKING_RESULTS)
    s.opt(b, "booking", booking_item)
    s.opt(b, "code", s.text, 1, 64)  # one of BOOKING_CODES from this host; text for others


# ---------------------------------------------------------------- licence (8.5)

def _licence(b):
    s.req(b, "lic", s.bstr, 1, MAX_LICENCE)


register("member_query", "up", _member_query)
register("refund", "up", _refund)
register("booking_update", "up", _booking_update)
register("member_info", "down", _member_info)
register("refund_result", "down", _refund_result)
register("bookings", "down", _bookings)
register("booking_result", "down", _booking_result)
register("licence", "down", _licence)
