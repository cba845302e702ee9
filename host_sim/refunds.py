# Refunds on the host (SPEC 8.3): a store service (host_sim/service.py) that answers `refund`
# with `refund_result`, keeps every request with its reason, clerk and review, and decides each
# once, keyed by (device, rid).
#
# Rules, checked in this order under a lock on the charge's row (SELECT ... FOR UPDATE: two
# terminals refunding one sale at once are decided one after the other, on PostgreSQL too; a
# SQLite write transaction is exclusive anyway):
#   - the charge is found by its cid alone (a refund may be asked at any terminal); none, or
#     two charges with that cid (ambiguous): rejected unknown_charge (SPEC 8.3: refunds only of
#     known charges; a sale still offline at another till is refunded once it has reached the
#     host, with a new request);
#   - charge_declined, wrong_currency, not_refundable (top-ups and VIP fees are undone by their
#     own services, never here), window_expired (the refund's `at`, never later than the host's
#     clock, more than window_s after the charge's `at`), exceeds_refundable (what is asked plus
#     what is approved or in review for that charge would pass its amt);
#   - above auto_max: `review` until a supervisor approves or rejects it (the review CLI,
#     host_sim/refunds_cli.py); the amount stays reserved meanwhile;
#   - granted: the fee (fee_pct of amt, rounded down; none when the shop is at fault: defective,
#     wrong item, not delivered) and the net are shown; a payment from a member's balance goes
#     back to that balance (members.credit_refund: st `refunded` with `bal`), anything else is
#     `approved` (the shop pays the net back at the till); a credit the members service refuses
#     is `failed` with its code and frees the amount.
# A repeated refund gets the refund as it stands; another body under a known rid is refused
# (`rid_reused`, a drop count) and changes nothing. Settings live in the database
# (refund_settings), so the serving host and the review command line read the same.
import cbor2

from host_sim import members, service
from host_sim.members import MemberError
from host_sim.registry import Registry
from host_sim.service import Out

REVIEW = "review"
APPROVED = "approved"
REFUNDED = "refunded"
REJECTED = "rejected"
FAILED = "failed"
RESERVED = (REVIEW, APPROVED, REFUNDED)  # what holds part of a charge's refundable amount

UNKNOWN_CHARGE = "unknown_charge"
WINDOW_EXPIRED = "window_expired"
EXCEEDS_REFUNDABLE = "exceeds_refundable"
CHARGE_DECLINED = "charge_declined"
WRONG_CURRENCY = "wrong_currency"
NOT_REFUNDABLE = "not_refundable"
REVIEW_REJECTED = "review_rejected"
RID_REUSED = "rid_reused"

REFUNDABLE_KINDS = ("sale", "member")
NO_FEE_REASONS = ("defective", "wrong_item", "not_delivered")  # the shop's fault
DEFAULTS = {"window_s": 30 * 86400, "auto_max": 10000, "fee_pct": 0}
SPEC_NAME = {"window_s": "refund_window_s", "auto_max": "refund_auto_max",
             "fee_pct": "refund_fee_pct"}  # as SPEC 8.3 and the command line name them
MAX_INT = (1 << 63) - 1
MAX_NOTE = 64

FRESH, REPEAT, REUSED = "fresh", "repeat", "reused"

SCHEMA = members.SCHEMA + """
CREATE TABLE IF NOT EXISTS refunds (
    device_id   TEXT NOT NULL,
    rid         BLOB NOT NULL,
    body        BLOB NOT NULL,
    cid         BLOB NOT NULL,
    charge_dev  TEXT,
    amt         INTEGER NOT NULL,
    cur         TEXT NOT NULL,
    reason      TEXT NOT NULL,
    clerk       TEXT NOT NULL,
    at          INTEGER NOT NULL,
    off         INTEGER NOT NULL,
    st          TEXT NOT NULL,
    code        TEXT,
    fee         INTEGER,
    net         INTEGER,
    bal         INTEGER,
    note        TEXT,
    received_at INTEGER NOT NULL,
    decided_at  INTEGER,
    decided_by  TEXT,
    PRIMARY KEY (device_id, rid)
);
CREATE INDEX IF NOT EXISTS refunds_cid ON refunds (cid);
CREATE TABLE IF NOT EXISTS refund_settings (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""
_COLUMNS = ("device_id", "rid", "body", "cid", "charge_dev", "amt", "cur", "reason", "clerk",
            "at", "off", "st", "code", "fee", "net", "bal", "note", "received_at", "decided_at",
            "decided_by")
_SQL = ", ".join(_COLUMNS)
_UPDATED = ("charge_dev", "st", "code", "fee", "net", "bal", "note", "decided_at", "decided_by")


class RefundError(ValueError):
    def __init__(self, code, message):
        super().__init__(code + ": " + message)
        self.code = code
        self.message = message


# ---------------------------------------------------------------- settings and the fee

def settings(tx):
    """{"window_s", "auto_max", "fee_pct"}: the stored values over DEFAULTS."""
    out = dict(DEFAULTS)
    for name, value in tx.execute("SELECT name, value FROM refund_settings").fetchall():
        if name in out:
            out[name] = int(value)
    return out


def set_settings(tx, **values):
    """Stores the given settings (None: left as it is); returns them all."""
    for name, value in values.items():
        if value is None:
            continue
        if name not in DEFAULTS:
            raise RefundError("bad_setting", "no refund setting %r" % (name,))
        top = 100 if name == "fee_pct" else MAX_INT
        if type(value) is not int or not 0 <= value <= top:
            raise RefundError("bad_setting", "%s must be an int within 0..%d"
                              % (SPEC_NAME[name], top))
        tx.execute("INSERT INTO refund_settings (name, value) VALUES (?, ?) ON CONFLICT (name)"
                   " DO UPDATE SET value = excluded.value", (name, value))
    return settings(tx)


def fee_for(amt, reason, pct):
    """The fee kept on a refund of amt: pct percent rounded down, none when the shop is at
    fault (defective, wrong item, not delivered: this terminal's codes or SPEC 8.3's words)."""
    if reason.strip().lower().replace(" ", "_") in NO_FEE_REASONS:  # SPEC's words too
        return 0
    return amt * pct // 100


# ---------------------------------------------------------------- rows and answers

def _row(tx, device_id, rid, lock=False):
    sql = "SELECT %s FROM refunds WHERE device_id=? AND rid=?" % _SQL
    row = tx.execute(sql + (" FOR UPDATE" if lock else ""), (device_id, bytes(rid))).fetchone()
    return _dict(row) if row is not None else None


def _dict(row):
    r = dict(zip(_COLUMNS, row, strict=True))
    for k in ("rid", "body", "cid"):
        r[k] = bytes(r[k])
    r["off"] = bool(r["off"])
    return r


def answer(r):
    """The refund_result body for a refund row as it stands."""
    out = {"rid": r["rid"], "st": r["st"]}
    for k in ("code", "fee", "net", "bal", "note"):
        if r[k] is not None:
            out[k] = r[k]
    return out


def public(r):
    """A refund row for the command line and the report (ids in hex)."""
    out = {k: r[k] for k in _COLUMNS if k != "body"}
    for k in ("rid", "cid"):
        out[k] = r[k].hex()
    return out


def _save(tx, r):
    tx.execute("UPDATE refunds SET %s WHERE device_id=? AND rid=?"
               % ", ".join("%s=?" % k for k in _UPDATED),
               [r[k] for k in _UPDATED] + [r["device_id"], r["rid"]])


def _set(tx, r, st, code=None, now=None, by=None, fee=None, net=None, bal=None, note=None):
    r.update(st=st, code=code, fee=fee, net=net, bal=bal, note=note,
             decided_at=None if st == REVIEW else now, decided_by=by)
    _save(tx, r)
    return r


# ---------------------------------------------------------------- deciding

def _charges(tx, cid):
    """The charges with this cid, locked until the transaction ends."""
    return tx.execute("SELECT device_id, status, amt, cur, body FROM charges WHERE cid=?"
                      " ORDER BY device_id FOR UPDATE", (bytes(cid),)).fetchall()


def _reserved(tx, r):
    """What other refunds hold of the same charge (approved, refunded or in review)."""
    row = tx.execute("SELECT COALESCE(SUM(amt), 0) FROM refunds WHERE cid=? AND charge_dev=?"
                     " AND st IN (?, ?, ?) AND NOT (device_id=? AND rid=?)",
                     (r["cid"], r["charge_dev"]) + RESERVED + (r["device_id"], r["rid"])
                     ).fetchone()
    return int(row[0])


def decide(tx, r, now, review=True, by=None):
    """Decides refund row r (locked) by the rules; review=False is a supervisor's approval
    (no amount limit). Returns r as stored."""
    charges = _charges(tx, r["cid"])
    if not charges:
        return _set(tx, r, REJECTED, UNKNOWN_CHARGE, now, by)
    if len(charges) > 1:
        return _set(tx, r, REJECTED, UNKNOWN_CHARGE, now, by,
                    note="%d charges have this id" % len(charges))
    dev, status, camt, ccur, cbody = charges[0]
    cbody = cbor2.loads(bytes(cbody))
    r["charge_dev"] = dev
    s = settings(tx)
    code = None
    if status != APPROVED:
        code = CHARGE_DECLINED
    elif ccur != r["cur"]:
        code = WRONG_CURRENCY
    elif cbody["kind"] not in REFUNDABLE_KINDS:
        code = NOT_REFUNDABLE
    elif min(r["at"], now) - cbody["at"] > s["window_s"]:
        code = WINDOW_EXPIRED
    elif r["amt"] > camt - _reserved(tx, r):
        code = EXCEEDS_REFUNDABLE
    if code is not None:
        return _set(tx, r, REJECTED, code, now, by)
    fee = fee_for(r["amt"], r["reason"], s["fee_pct"])
    net = r["amt"] - fee
    if review and r["amt"] > s["auto_max"]:
        return _set(tx, r, REVIEW, fee=fee, net=net)
    if cbody["kind"] != "member":
        return _set(tx, r, APPROVED, None, now, by, fee, net)
    if net == 0:
        return _set(tx, r, REFUNDED, None, now, by, fee, net)
    try:
        with tx.savepoint():
            bal = members.credit_refund(tx, cbody["mem"], net, r["rid"], now)
    except MemberError as e:
        return _set(tx, r, FAILED, e.code, now, by, fee, net)
    return _set(tx, r, REFUNDED, None, now, by, fee, net, bal)


def request(tx, device_id, body, now):
    """The refund_result for a `refund` body (schema-checked) from device_id, and what it was:
    FRESH (decided now), REPEAT (the refund as it stands) or REUSED (another body under a known
    rid: refused, nothing changed)."""
    canonical = cbor2.dumps(body, canonical=True)
    rid = body["rid"]
    claimed = tx.execute(
        "INSERT INTO refunds (%s) VALUES (%s) ON CONFLICT (device_id, rid) DO NOTHING"
        " RETURNING rid" % (_SQL, ", ".join("?" * len(_COLUMNS))),
        (device_id, rid, canonical, body["cid"], None, body["amt"], body["cur"],
         body["reason"], body["clerk"], min(body["at"], MAX_INT), int(body["off"]), REVIEW,
         None,  # st and code until decide() below, in this transaction
         None, None, None, None, now, None, None)).fetchone()
    r = _row(tx, device_id, rid, lock=True)
    if claimed is None:
        if r["body"] != canonical:
            return {"rid": rid, "st": REJECTED, "code": RID_REUSED}, REUSED
        return answer(r), REPEAT
    return answer(decide(tx, r, now)), FRESH


# ---------------------------------------------------------------- review

def waiting(tx):
    """The refunds waiting for a decision (in review), oldest first."""
    return [_dict(row) for row in tx.execute(
        "SELECT %s FROM refunds WHERE st=? ORDER BY received_at, device_id, rid"
        % _SQL, (REVIEW,)).fetchall()]


def every(tx):
    return [_dict(row) for row in tx.execute(
        "SELECT %s FROM refunds ORDER BY received_at, device_id, rid" % _SQL).fetchall()]


def find_waiting(tx, rid_hex, device_id=None):
    """The waiting refund whose rid is (or starts with) rid_hex, locked; RefundError when none
    or several match."""
    rid_hex = rid_hex.lower()
    hits = [r for r in waiting(tx) if r["rid"].hex().startswith(rid_hex)
            and device_id in (None, r["device_id"])]
    if not rid_hex or not hits:
        raise RefundError("not_waiting", "no refund waiting for review with id %s" % rid_hex)
    if len(hits) > 1:
        raise RefundError("ambiguous", "%d waiting refunds match %s: give more of the id or "
                          "--device" % (len(hits), rid_hex))
    return _row(tx, hits[0]["device_id"], hits[0]["rid"], lock=True)


def approve(tx, r, by, now):
    """A supervisor grants a waiting refund: decided by the rules without the amount limit
    (it may still be rejected, e.g. when the charge was refunded meanwhile). The terminal that
    asked is told through the host outbox."""
    if r["st"] != REVIEW:
        raise RefundError("not_waiting", "refund %s is %s" % (r["rid"].hex(), r["st"]))
    decide(tx, r, now, review=False, by=by)
    service.push(tx, r["device_id"], "refund_result", answer(r), now)
    return r


def reject(tx, r, note, by, now):
    """A supervisor refuses a waiting refund (code review_rejected, note = the reason, cut to
    64 characters); the terminal that asked is told through the host outbox."""
    if r["st"] != REVIEW:
        raise RefundError("not_waiting", "refund %s is %s" % (r["rid"].hex(), r["st"]))
    note = (note or "").strip()[:MAX_NOTE] or None
    _set(tx, r, REJECTED, REVIEW_REJECTED, now, by, note=note)
    service.push(tx, r["device_id"], "refund_result", answer(r), now)
    return r


# ---------------------------------------------------------------- report

def report(tx):
    """Totals: per state count and amounts (per currency), fees and nets paid back, codes."""
    out = {"count": 0, "states": {}, "codes": {}, "paid": {}, "fees": {}}
    for st, code, cur, n, amt, fee, net in tx.execute(
            "SELECT st, code, cur, COUNT(*), SUM(amt), SUM(fee), SUM(net) FROM refunds"
            " GROUP BY st, code, cur ORDER BY st, code, cur").fetchall():
        out["count"] += n
        part = out["states"].setdefault(st, {"count": 0, "amount": {}})
        part["count"] += n
        part["amount"][cur] = part["amount"].get(cur, 0) + int(amt)
        if code is not None:
            out["codes"][code] = out["codes"].get(code, 0) + n
        if st in (APPROVED, REFUNDED):
            out["paid"][cur] = out["paid"].get(cur, 0) + int(net or 0)
            out["fees"][cur] = out["fees"].get(cur, 0) + int(fee or 0)
    return out


# ---------------------------------------------------------------- the service

class Refunds:
    """The refunds service: `refund` up, answered `refund_result`."""

    name = "refunds"
    SCHEMA = SCHEMA

    def __init__(self, ctx):
        self.ctx = ctx
        self.registry = Registry(ctx.store, ctx.clock)
        self.up = {"refund": self.refund}

    def refund(self, tx, msg):
        result, outcome = request(tx, msg.device_id, msg.body, msg.now)
        if outcome == REUSED:
            self.registry.count_drop(msg.device_id, RID_REUSED, tx)
        note = "refund %s rid=%s cid=%s amt=%d -> %s%s%s" % (
            msg.device_id, msg.body["rid"].hex(), msg.body["cid"].hex(), msg.body["amt"],
            result["st"], " code=" + result["code"] if "code" in result else "",
            "" if outcome == FRESH else " (%s)" % outcome)
        return [Out(msg.device_id, "refund_result", result, note)]
