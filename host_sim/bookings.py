# Bookings on the host (SPEC 8.4): a store's appointments with a version per booking (`v`) and
# per store list (`ver`), the terminals' updates under optimistic concurrency, and a history of
# every change with who and why.
#
# A store service (host_sim/service.py):
#   up booking_update -> booking_result to the asking terminal; the update is applied only if
#       its `v` is the booking's current one (else `conflict` with the booking as it is now;
#       an unknown bid, or one of another store: `unknown`). Keyed by (device, uid): a repeat
#       gets the stored answer, never a second change.
#   on_hello -> the store's current `bookings` list to that terminal.
#   tick(now) -> when the store day has rolled over, a new list (new ver) to every terminal.
# Every change (a terminal's update, `python -m host_sim bookings create|cancel`) bumps the
# booking's v and the store's list ver and queues the new list for every terminal of the store
# in the host outbox (service.push), all in one transaction.
#
# Rules (docs/protocol.md "Bookings"), checked when the version is current:
#   check_in, no_show, cancel   only a `booked` booking (else conflict, code not_booked); at
#                               any time (SPEC 8.4 sets no time rule: a customer who called to
#                               say they will not come may be marked before the slot)
#   cancel                      received within CUTOFF_S before the slot (or after its start):
#                               needs a reason (a terminal always sends one; the command line
#                               refuses without) and is flagged for review
# Store day: UTC (SPEC times are UTC). A list holds the bookings starting on its day and the day
# after, at most MAX_BOOKINGS of them, earliest first.
import os

import cbor2

from host_sim import service
from host_sim.service import Out
from protocol.store_messages import MAX_BOOKINGS

DAY = 86400
CUTOFF_S = 2 * 3600      # a cancellation closer to the slot than this is late
BOOKED = "booked"
TARGET = {"check_in": "checked_in", "cancel": "cancelled", "no_show": "no_show"}
HOST_CLI = "host cli"
MAX_TEXT = 64

SCHEMA = """
CREATE TABLE IF NOT EXISTS bookings (
    bid        TEXT PRIMARY KEY,
    store_id   TEXT NOT NULL,
    at         INTEGER NOT NULL,
    dur        INTEGER NOT NULL,
    name       TEXT NOT NULL,
    svc        TEXT NOT NULL,
    st         TEXT NOT NULL,
    v          INTEGER NOT NULL,
    review     INTEGER NOT NULL,
    hist_n     INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS bookings_store_at ON bookings (store_id, at);
CREATE TABLE IF NOT EXISTS booking_lists (
    store_id TEXT PRIMARY KEY,
    ver      INTEGER NOT NULL,
    day      INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS booking_history (
    bid       TEXT NOT NULL,
    n         INTEGER NOT NULL,
    at        INTEGER NOT NULL,
    op        TEXT NOT NULL,
    st        TEXT NOT NULL,
    v         INTEGER NOT NULL,
    who       TEXT NOT NULL,
    clerk     TEXT,
    why       TEXT,
    review    INTEGER NOT NULL,
    uid       BLOB,
    dev_at    INTEGER,
    PRIMARY KEY (bid, n)
);
CREATE TABLE IF NOT EXISTS booking_updates (
    device_id TEXT NOT NULL,
    uid       BLOB NOT NULL,
    bid       TEXT NOT NULL,
    answer    BLOB,
    at        INTEGER NOT NULL,
    PRIMARY KEY (device_id, uid)
);
"""

_COLUMNS = ("bid", "store_id", "at", "dur", "name", "svc", "st", "v", "review", "hist_n",
            "created_at")
_HISTORY = ("bid", "n", "at", "op", "st", "v", "who", "clerk", "why", "review", "uid",
            "dev_at")


class BookingError(ValueError):
    def __init__(self, code, message):
        super().__init__(code + ": " + message)
        self.code = code
        self.message = message


def day_of(t):
    return int(t) // DAY


def wire_item(b):
    """A booking row as the SPEC's item."""
    return {"bid": b["bid"], "at": b["at"], "dur": b["dur"], "name": b["name"], "svc": b["svc"],
            "st": b["st"], "v": b["v"]}


# ---------------------------------------------------------------- reading

def booking(tx, bid, lock=False):
    """The booking's row as a dict (review as bool), or None. lock=True holds the row until the
    transaction ends: two terminals updating one booking are decided one after the other."""
    sql = "SELECT %s FROM bookings WHERE bid=?" % ", ".join(_COLUMNS)
    row = tx.execute(sql + (" FOR UPDATE" if lock else ""), (bid,)).fetchone()
    if row is None:
        return None
    b = dict(zip(_COLUMNS, row, strict=True))
    b["review"] = bool(b["review"])
    return b


def between(tx, store_id, start, end, limit=None):
    """The store's bookings starting in [start, end), earliest first."""
    sql = ("SELECT %s FROM bookings WHERE store_id=? AND at >= ? AND at < ? ORDER BY at, bid"
           % ", ".join(_COLUMNS))
    args = [store_id, int(start), int(end)]
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    out = []
    for row in tx.execute(sql, args).fetchall():
        b = dict(zip(_COLUMNS, row, strict=True))
        b["review"] = bool(b["review"])
        out.append(b)
    return out


def history(tx, bid):
    """The booking's history rows, oldest first."""
    rows = tx.execute("SELECT %s FROM booking_history WHERE bid=? ORDER BY n"
                      % ", ".join(_HISTORY), (bid,)).fetchall()
    out = []
    for r in rows:
        h = dict(zip(_HISTORY, r, strict=True))
        h["review"] = bool(h["review"])
        if h["uid"] is not None:
            h["uid"] = bytes(h["uid"])
        out.append(h)
    return out


def list_row(tx, store_id, now, lock=False):
    """(ver, day) of the store's list; a store without one gets ver 1 for the day of now."""
    row = tx.execute("SELECT ver, day FROM booking_lists WHERE store_id=?"
                     + (" FOR UPDATE" if lock else ""), (store_id,)).fetchone()
    if row is not None:
        return row[0], row[1]
    tx.execute("INSERT INTO booking_lists (store_id, ver, day) VALUES (?, 1, ?)"
               " ON CONFLICT (store_id) DO NOTHING", (store_id, day_of(now)))
    row = tx.execute("SELECT ver, day FROM booking_lists WHERE store_id=?",
                     (store_id,)).fetchone()
    return row[0], row[1]


def list_body(tx, store_id, now):
    """The `bookings` body of the store: the list's ver and the bookings of its day and the
    next (a given ver always means the same items)."""
    ver, day = list_row(tx, store_id, now)
    items = [wire_item(b) for b in between(tx, store_id, day * DAY, (day + 2) * DAY,
                                           MAX_BOOKINGS)]
    return {"ver": ver, "items": items}


# ---------------------------------------------------------------- changing

def announce(tx, store_id, now, day=None):
    """A change: the store's list ver + 1 (and its day moved on when given), and the new list
    queued for every terminal of the store. Returns the new ver."""
    ver, cur_day = list_row(tx, store_id, now, lock=True)
    tx.execute("UPDATE booking_lists SET ver=?, day=? WHERE store_id=?",
               (ver + 1, cur_day if day is None else day, store_id))
    body = list_body(tx, store_id, now)
    for dev in service.store_devices(tx, store_id):
        service.push(tx, dev, "bookings", body, now)
    return body["ver"]


def _record(tx, b, now, op, who, clerk=None, why=None, review=False, uid=None, dev_at=None,
            **cols):
    """Applies column changes to the (locked) booking row b: v + 1, a history row, the store's
    list announced. b is updated in place and returned."""
    n = b["hist_n"] + 1
    sets = dict(cols, v=b["v"] + 1, hist_n=n)
    if review:
        sets["review"] = 1
    names = sorted(sets)
    tx.execute("UPDATE bookings SET %s WHERE bid=?" % ", ".join("%s=?" % k for k in names),
               [sets[k] for k in names] + [b["bid"]])
    b.update(sets)
    b["review"] = bool(b["review"])
    tx.execute("INSERT INTO booking_history (bid, n, at, op, st, v, who, clerk, why, review,"
               " uid, dev_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
               (b["bid"], n, int(now), op, b["st"], b["v"], who, clerk, why, int(bool(review)),
                uid, dev_at))
    announce(tx, b["store_id"], now)
    return b


def _text(value, what, lo=0):
    if type(value) is not str or not lo <= len(value) <= MAX_TEXT:
        raise BookingError("bad_" + what, "%s must be %d..%d characters" % (what, lo, MAX_TEXT))
    return value


def create(tx, store_id, at, dur, name, svc, now, who=HOST_CLI, bid=None):
    """A new booking (state booked, v 1) with its history row; the store's terminals get the
    new list. bid: given, or made here ("B" + 8 hex digits)."""
    _text(store_id, "store", 1)
    _text(name, "name", 1)
    _text(svc, "svc")
    for value, what in ((at, "at"), (dur, "dur")):
        if type(value) is not int or not 0 <= value < 1 << 63:
            raise BookingError("bad_" + what, "%s must be a uint" % what)
    if dur < 1:
        raise BookingError("bad_dur", "a booking lasts at least 1 s")
    for _ in range(8):
        b = bid or "B" + os.urandom(4).hex()
        _text(b, "bid", 1)
        row = tx.execute("INSERT INTO bookings (bid, store_id, at, dur, name, svc, st, v, review,"
                         " hist_n, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, 0, ?)"
                         " ON CONFLICT (bid) DO NOTHING RETURNING bid",
                         (b, store_id, at, dur, name, svc, BOOKED, int(now))).fetchone()
        if row is not None:
            break
        if bid is not None:
            raise BookingError("exists", "booking %r exists already" % bid)
    else:
        raise BookingError("exists", "no free booking id")
    return _record(tx, booking(tx, row[0], lock=True), now, "create", who)


def late(b, now):
    """A cancellation at `now` falls inside the cut-off before the slot (or after its start)."""
    return now >= b["at"] - CUTOFF_S


def cancel(tx, bid, reason, now, who=HOST_CLI):
    """Cancels a booked booking from the host (the command line); a late one needs a reason
    and is flagged for review. Returns the row."""
    b = booking(tx, bid, lock=True)
    if b is None:
        raise BookingError("unknown_booking", "no booking %r" % (bid,))
    if b["st"] != BOOKED:
        raise BookingError("not_booked", "booking %s is %s" % (bid, b["st"]))
    if reason is not None:
        _text(reason, "reason", 1)
    flagged = late(b, now)
    if flagged and not reason:
        raise BookingError("reason_required", "the slot is less than %d min away: give a "
                           "--reason (the cancellation is flagged for review)" % (CUTOFF_S // 60))
    return _record(tx, b, now, "cancel", who, why=reason, review=flagged, st="cancelled")


def decide(tx, device_id, store_id, body, now):
    """The booking_result for a checked booking_update body (the change made when ok)."""
    uid = body["uid"]
    b = booking(tx, body["bid"], lock=True)
    if b is None or b["store_id"] != store_id:
        return {"uid": uid, "st": "unknown", "code": "unknown_booking"}
    if body["v"] != b["v"]:
        return {"uid": uid, "st": "conflict", "booking": wire_item(b)}
    if b["st"] != BOOKED:
        return {"uid": uid, "st": "conflict", "booking": wire_item(b), "code": "not_booked"}
    op = body["op"]
    flagged = op == "cancel" and late(b, now)
    _record(tx, b, now, op, device_id, clerk=body["clerk"], why=body.get("reason"),
            review=flagged, uid=uid, dev_at=body["at"], st=TARGET[op])
    return {"uid": uid, "st": "ok", "booking": wire_item(b)}


def roll_over(tx, store_id, now):
    """A new list for the store when its day is behind the day of now; True when sent."""
    ver, day = list_row(tx, store_id, now, lock=True)
    if day >= day_of(now):
        return False
    announce(tx, store_id, now, day=day_of(now))
    return True


# ---------------------------------------------------------------- the service

class Bookings:
    """The bookings service. ctx: the host's service context (its store and log serve tick)."""

    name = "bookings"
    SCHEMA = SCHEMA

    def __init__(self, ctx=None):
        self.ctx = ctx
        self.up = {"booking_update": self.booking_update}

    def booking_update(self, tx, msg):
        """booking_update -> booking_result to the asking terminal, decided once per uid."""
        dev, body = msg.device_id, msg.body
        # The key first: a repeat (or the same uid on another worker) waits here and then
        # reads the stored answer; it never decides a second time.
        claimed = tx.execute("INSERT INTO booking_updates (device_id, uid, bid, at)"
                             " VALUES (?, ?, ?, ?) ON CONFLICT (device_id, uid) DO NOTHING"
                             " RETURNING uid", (dev, body["uid"], body["bid"], msg.now)
                             ).fetchone()
        if claimed is None:
            row = tx.execute("SELECT answer FROM booking_updates WHERE device_id=? AND uid=?",
                             (dev, body["uid"])).fetchone()
            return [Out(dev, "booking_result", cbor2.loads(bytes(row[0])))]
        answer = decide(tx, dev, msg.store_id, body, msg.now)
        tx.execute("UPDATE booking_updates SET answer=? WHERE device_id=? AND uid=?",
                   (cbor2.dumps(answer), dev, body["uid"]))
        if self.ctx is not None:
            self.ctx.log("booking_update %s %s %s v%d -> %s%s" % (
                dev, body["bid"], body["op"], body["v"], answer["st"],
                " " + answer["code"] if "code" in answer else ""))
        return [Out(dev, "booking_result", answer)]

    def on_hello(self, tx, msg):
        return [Out(msg.device_id, "bookings", list_body(tx, msg.store_id, msg.now))]

    def tick(self, now):
        """Called about once a second by the serving host: the store day rolls over."""
        today = day_of(now)
        with self.ctx.store.read() as tx:
            stale = [r[0] for r in tx.execute(
                "SELECT store_id FROM booking_lists WHERE day < ?", (today,)).fetchall()]
        if not stale:
            return 0
        with self.ctx.store.transaction() as tx:
            rolled = [s for s in stale if roll_over(tx, s, now)]
        for s in rolled:
            self.ctx.log("bookings: store %s rolled over to a new day" % s)
        return len(rolled)

