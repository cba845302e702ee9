# How a store service plugs into the host (SPEC 8): members, VIP, refunds, bookings, licences.
#
# A service is one module with one class built as Cls(ctx) (ctx: a Context below: the store, a
# clock, a log); the host (host_sim/host.py: Host(..., services=[Cls, ...])) and the command
# lines create it over the same Store. It declares:
#   name         short name ("refunds")
#   SCHEMA       its tables (portable DDL, see host_sim/store.py), created at start
#   up           {message type: method(tx, msg) -> [Out]} for the up messages it answers (bound
#                methods, or the functions of a class-level dict, which the host binds); the
#                host has checked the envelope, the seq and the body schema, and runs the
#                method inside the transaction that also records the seq: the effect and the
#                "seen" mark commit together or not at all
#   on_hello(tx, msg) -> [Out]                 optional: what to push after a terminal's hello
#   on_charge(tx, charge) -> (code, extra)     optional: a charge being decided (any kind), in
#                the charge's transaction; code: None approves as far as this service goes,
#                a text declines (its writes are rolled back to a savepoint); extra: fields for
#                the charge_result ("bal", "pts", "vip")
#   tick(now)                                  optional: called by the serving host about once a
#                second from its worker, between batches; it opens its own transactions (on
#                ctx.store) and pushes what it must (bookings: a new list when the day rolls over)
# Pushes that arise outside a message (a command line, a scheduler) go through the host outbox:
# push(tx, ...) inserts a row in the same transaction as the change; the serving host publishes
# the rows in order and deletes them, so a change and its announcement commit together, from
# any process.
import json

from protocol import messages

OUTBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS host_outbox (
    id         INTEGER PRIMARY KEY,
    device_id  TEXT,
    mtype      TEXT NOT NULL,
    body       BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS host_outbox_ids (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""
FLEET = None  # device_id of a retained fleet list (mtype "trustlist" or "revocations")


class Context:
    """What a service is built with: the host database, the clock (a time.time-like callable)
    and a log (one line of text per call)."""

    def __init__(self, store, clock=None, log=None):
        import time

        self.store = store
        self.clock = clock or time.time
        self.log = log or (lambda line: None)

    def now(self):
        return int(self.clock())


class Msg:
    """One authenticated up message as a service sees it."""

    def __init__(self, device_id, store_id, mtype, body, seq, now):
        self.device_id = device_id
        self.store_id = store_id
        self.mtype = mtype
        self.body = body
        self.seq = seq
        self.now = now


class Out:
    """A down message to seal and publish once the transaction has committed. note: a line
    for the host's log, written after the commit in the batch's order (what was decided)."""

    def __init__(self, device_id, mtype, body, note=None):
        if mtype in messages.DOWN_TYPES:
            messages.check(mtype, body)
        self.device_id = device_id
        self.mtype = mtype
        self.body = body
        self.note = note

    def __repr__(self):
        return "Out(%s, %s)" % (self.device_id, self.mtype)


def store_devices(tx, store_id):
    """The device ids of a store, sorted."""
    return [r[0] for r in tx.execute(
        "SELECT device_id FROM devices WHERE store_id=? ORDER BY device_id", (store_id,))]


def push(tx, device_id, mtype, body, now):
    """Queues a down message (device_id) or a retained fleet list (device_id FLEET, body the raw
    COSE bytes) for the serving host to publish after this transaction commits."""
    import cbor2

    if device_id is not FLEET:
        Out(device_id, mtype, body)  # checks the body now, in the caller's process
        data = cbor2.dumps(body)
    else:
        data = bytes(body)
    row = tx.execute("INSERT INTO host_outbox_ids (name, value) VALUES ('outbox', 1)"
                     " ON CONFLICT (name) DO UPDATE SET value = host_outbox_ids.value + 1"
                     " RETURNING value").fetchone()
    tx.execute("INSERT INTO host_outbox (id, device_id, mtype, body, created_at)"
               " VALUES (?, ?, ?, ?, ?)", (row[0], device_id, mtype, data, int(now)))


def take_outbox(tx, limit=100):
    """Claims the oldest queued pushes: [(device_id, mtype, body)] (fleet bodies are bytes)."""
    import cbor2

    rows = tx.execute("SELECT id, device_id, mtype, body FROM host_outbox ORDER BY id LIMIT ?"
                      " FOR UPDATE SKIP LOCKED", (limit,)).fetchall()
    out = []
    for rid, dev, mtype, body in rows:
        tx.execute("DELETE FROM host_outbox WHERE id=?", (rid,))
        out.append((dev, mtype, bytes(body) if dev is FLEET else cbor2.loads(bytes(body))))
    return out


def to_json(obj):
    """JSON of a row or body for command-line output: bytes as lowercase hex."""
    return json.dumps(obj, sort_keys=True, default=lambda v: v.hex() if isinstance(
        v, (bytes, bytearray, memoryview)) else str(v))
