# A clerk's action on a booking (SPEC 8.4) as a queue record: journal kind "bkup", forwarded as
# `booking_update`, answered by `booking_result`, keyed by "uid" (16 random bytes fixed at
# commit). Format (docs/formats.md):
#   {"r": "bkup", "v": 1, "uid", "bid", "op", "reason"?, "bv": the booking's v the clerk saw,
#    "at", "clerk", "nm": the customer's name, "slot": the booking's start}
# "bv" because "v" is the record version of every journal record; "nm" and "slot" are for the
# clerk's notice and the supervisor's list only and are not sent.
#
# A `conflict` or `unknown` answer is a notice for the supervisor (Kind.bad), like a declined
# charge: the clerk who acted may be on another screen, or the answer may come hours later
# after an offline spell, and someone must see that the customer's booking is not as recorded.
from device.sales.queue import Kind
from device.sales.sale import RECORD_VERSION
from device.screens import messages

RECORD = "bkup"
# The state an action leaves a booking in (the overlay shows it until the host answers).
TARGET = {"check_in": "checked_in", "cancel": "cancelled", "no_show": "no_show"}
BAD = ("conflict", "unknown")


def make_update(uid, item, op, reason, at, clerk):
    """The record of `op` on `item` (the booking as the clerk saw it: its v is sent)."""
    rec = {"r": RECORD, "v": RECORD_VERSION, "uid": uid, "bid": item["bid"], "op": op,
           "bv": item["v"], "at": at, "clerk": clerk, "nm": item["name"], "slot": item["at"]}
    if reason is not None:
        rec["reason"] = reason
    return rec


def update_body(rec):
    body = {"uid": rec["uid"], "bid": rec["bid"], "op": rec["op"], "v": rec["bv"],
            "at": rec["at"], "clerk": rec["clerk"]}
    if "reason" in rec:
        body["reason"] = rec["reason"]
    return body


def hhmm(t):
    """UTC HH:MM of a Unix time (any uint from the host), by arithmetic: no date needed."""
    return "%02d:%02d" % (t // 3600 % 24, t // 60 % 60)


def title(rec):
    """(title, amount) for the supervisor's list: a booking moves no money."""
    return "Booking " + rec["bid"], 0


def notice(rec, answer, count):
    """The two lines of the persistent notice (the first one tops every screen)."""
    head = "%s x%d: %s %s" % ("CONFLICT" if answer.get("st") == "conflict" else "UNKNOWN",
                              count, hhmm(rec["slot"]), rec["nm"])
    booking = answer.get("booking")
    if answer.get("st") == "unknown" or booking is None:
        return [head, "host has no such booking"]
    line = "host: " + messages.booking_state(booking["st"])
    code = answer.get("code")
    if code is not None:
        line += ", " + code  # not a race: a rule refused it (no longer booked...)
    return [head, line]


def kind():
    k = Kind(RECORD, "booking_update", "booking_result", "uid", update_body,
             bad=lambda a: a.get("st") in BAD)
    k.title = title
    k.notice = notice
    return k
