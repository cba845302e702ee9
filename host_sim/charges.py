# The host's charge processor (SPEC 3.2 charge/charge_result, SPEC 4): decides each charge once,
# keyed by (device, cid), and records its coupon redemptions and the store services' effects
# (on_charge, host_sim/service.py) in the same transaction as the decision. A repeat of a cid by
# the same device with the same body (retransmission, host restart, outage) gets the stored
# result back byte for byte and changes nothing; the same cid with another body is refused
# (`cid_reused`, counted as a drop) and changes nothing either; another device's cid is that
# device's own charge. Coupons were accepted offline in good faith: a coupon used beyond its max
# uses is reported as a "conflict" on an otherwise approved charge, never a reason to decline it.
import hashlib
import os

import cbor2

OVER_LIMIT = "over_limit"
RANDOM_DECLINE = "random_decline"
MEMBER_BLOCKED = "member_blocked"
CID_REUSED = "cid_reused"
# What decide() made of a charge.
FRESH = "fresh"  # decided now
REPEAT = "repeat"  # the same device sent the same body before: the stored result
REUSED = "reused"  # the same device sent this cid with another body: refused, nothing changed
# Keys of a charge_result that only the charge processor writes (a service's extra cannot).
_CORE_KEYS = ("cid", "st", "code", "auth", "cpn")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS charges (
    device_id   TEXT NOT NULL,
    cid         BLOB NOT NULL,
    store_id    TEXT NOT NULL,
    body        BLOB NOT NULL,
    result      BLOB NOT NULL,
    status      TEXT NOT NULL,
    code        TEXT,
    auth        TEXT,
    amt         INTEGER NOT NULL,
    cur         TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    applied_at  INTEGER NOT NULL,
    PRIMARY KEY (device_id, cid)
);
CREATE INDEX IF NOT EXISTS charges_applied ON charges (applied_at);
CREATE INDEX IF NOT EXISTS charges_cid ON charges (cid);
CREATE TABLE IF NOT EXISTS redemptions (
    device_id TEXT NOT NULL,
    cid       BLOB NOT NULL,
    idx       INTEGER NOT NULL,
    cti       BLOB NOT NULL,
    store_id  TEXT NOT NULL,
    at        INTEGER NOT NULL,
    conflict  INTEGER NOT NULL,
    PRIMARY KEY (device_id, cid, idx)
);
CREATE INDEX IF NOT EXISTS redemptions_cti ON redemptions (cti);
CREATE TABLE IF NOT EXISTS coupons (
    cti      BLOB PRIMARY KEY,
    max_uses INTEGER NOT NULL
);
"""
_CHARGE_COLUMNS = ("device_id, cid, store_id, body, result, status, code, auth, amt, cur,"
                   " received_at, applied_at")
_REDEMPTION_COLUMNS = "device_id, cid, idx, cti, store_id, at, conflict"


class ChargeError(ValueError):
    def __init__(self, code, message):
        super().__init__(code + ": " + message)
        self.code = code
        self.message = message


class Rules:
    """Decline rules, checked in this order: member blocklist, amount limit, random rate.

    decline_over: an "amt" strictly above it is declined "over_limit" (None: no limit).
    decline_rate: fraction 0..1 of charges declined "random_decline", drawn from SHA-256 of the
    seed and the cid, so a given seed declines the same cids on every run.
    blocked_members: "mem" values declined "member_blocked".
    """

    def __init__(self, decline_over=None, decline_rate=0.0, seed=0, blocked_members=()):
        if decline_over is not None and (type(decline_over) is not int or decline_over < 0):
            raise ChargeError("bad_rules", "decline_over must be a non-negative int or None")
        if not isinstance(decline_rate, (int, float)) or not 0.0 <= decline_rate <= 1.0:
            raise ChargeError("bad_rules", "decline_rate must be within 0..1")
        self.decline_over = decline_over
        self.decline_rate = float(decline_rate)
        self.seed = seed
        self.blocked_members = set(blocked_members)

    def decline_code(self, body):
        """The decline code for a charge body, or None to approve it."""
        mem = body.get("mem")
        if mem is not None and mem in self.blocked_members:
            return MEMBER_BLOCKED
        if self.decline_over is not None and body["amt"] > self.decline_over:
            return OVER_LIMIT
        if self.decline_rate > 0.0 and self.draw(body["cid"]) < self.decline_rate:
            return RANDOM_DECLINE
        return None

    def draw(self, cid):
        """A number in [0, 1) fixed by (seed, cid)."""
        h = hashlib.sha256(b"decline|%s|" % str(self.seed).encode() + bytes(cid)).digest()
        return int.from_bytes(h[:8], "big") / float(1 << 64)


class Charges:
    """Charge processing over the registry's database. services: objects with an
    on_charge(tx, charge) -> (code, extra) (host_sim/service.py), asked in this order."""

    def __init__(self, registry, rules=None, coupon_max_uses=None, services=()):
        self.registry = registry
        self.store = registry.store
        self.rules = rules or Rules()
        # Hook: cti -> max uses (or None); the coupons table from issuance is the fallback.
        self.coupon_max_uses_hook = coupon_max_uses
        self.services = [s for s in services if getattr(s, "on_charge", None) is not None]
        _migrate_cid_key(self.store)
        self.store.schema(_SCHEMA)

    def set_coupon_max_uses(self, cti, max_uses):
        """Records a coupon's "mu" at issuance (default 1 when a cti is unknown)."""
        if type(max_uses) is not int or max_uses < 1:
            raise ChargeError("bad_coupon", "max_uses must be an int >= 1")
        with self.store.transaction() as c:
            c.execute("INSERT INTO coupons (cti, max_uses) VALUES (?, ?) ON CONFLICT (cti)"
                      " DO UPDATE SET max_uses=excluded.max_uses", (bytes(cti), max_uses))

    def coupon_max_uses(self, cti, tx=None):
        if self.coupon_max_uses_hook is not None:
            mu = self.coupon_max_uses_hook(cti)
            if mu is not None:
                return mu
        with self.registry._read(tx) as c:
            row = c.execute("SELECT max_uses FROM coupons WHERE cti=?",
                            (bytes(cti),)).fetchone()
        return row[0] if row else 1

    def process(self, device_id, body, received_at=None):
        """The charge_result body for a charge (checked by protocol.messages beforehand)."""
        return self.apply(device_id, body, received_at)[0]

    def apply(self, device_id, body, received_at=None):
        """Like process(); returns (result, fresh): fresh is False for a repeat or a reuse."""
        _check_cid(body)
        with self.store.transaction() as tx:
            dev = tx.execute("SELECT store_id FROM devices WHERE device_id=?",
                             (device_id,)).fetchone()
            if dev is None:
                raise ChargeError("unknown_device", "no device %r" % (device_id,))
            now = self.registry.now()
            charge = {"device_id": device_id, "store_id": dev[0], "cid": body["cid"],
                      "body": body, "now": now}
            result, outcome = self.decide(tx, charge, received_at)
        return result, outcome == FRESH

    def decide(self, tx, charge, received_at=None):
        """Decides charge (a dict: device_id, store_id, cid, body, now) inside tx, the
        transaction of the message that brought it: (result, FRESH|REPEAT|REUSED)."""
        body = charge["body"]
        _check_cid(body)
        dev, cid, now = charge["device_id"], body["cid"], charge["now"]
        canonical = cbor2.dumps(body, canonical=True)
        row = tx.execute("SELECT body, result FROM charges WHERE device_id=? AND cid=?",
                         (dev, cid)).fetchone()
        if row is not None:
            if bytes(row[0]) == canonical:
                return cbor2.loads(bytes(row[1])), REPEAT
            # Never the stored result for another body: that would confirm a sale that
            # differs from the one recorded. Nothing is written but the count.
            self.registry.count_drop(dev, CID_REUSED, tx)
            return {"cid": cid, "st": "declined", "code": CID_REUSED, "cpn": []}, REUSED
        code = self.rules.decline_code(body)
        extra = {}
        if code is None and self.services:
            code, extra = self._ask_services(tx, charge)
        result = {"cid": cid, "st": "declined" if code else "approved"}
        cpn = []
        if code is None:
            result["auth"] = os.urandom(3).hex().upper()
            # A declined sale redeems nothing, so only approved charges record coupons.
            for idx, coupon in enumerate(body["cpn"]):
                cti = coupon["cti"]
                used = tx.execute("SELECT COUNT(*) FROM redemptions WHERE cti=?",
                                  (cti,)).fetchone()[0]
                conflict = used >= self.coupon_max_uses(cti, tx)
                tx.execute("INSERT INTO redemptions (%s) VALUES (?, ?, ?, ?, ?, ?, ?)"
                           % _REDEMPTION_COLUMNS,
                           (dev, cid, idx, cti, charge["store_id"], now, int(conflict)))
                cpn.append({"cti": cti, "st": "conflict" if conflict else "ok"})
        else:
            result["code"] = code
        result["cpn"] = cpn
        for k, v in extra.items():
            if k not in _CORE_KEYS:
                result[k] = v
        encoded = cbor2.dumps(result)
        tx.execute("INSERT INTO charges (%s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                   % _CHARGE_COLUMNS,
                   (dev, cid, charge["store_id"], canonical, encoded, result["st"], code,
                    result.get("auth"), body["amt"], body["cur"],
                    now if received_at is None else int(received_at), now))
        return cbor2.loads(encoded), FRESH

    def _ask_services(self, tx, charge):
        """Every service's on_charge under one savepoint: the first code declines and undoes
        what the services wrote for this charge. (code, extra): on a decline only the
        decliner's extra (the others' effects are gone), else all of them merged."""
        extra = {}
        with tx.savepoint() as sp:
            for svc in self.services:
                code, more = svc.on_charge(tx, charge)
                if code:
                    sp.rollback()
                    return code, dict(more or {})
                extra.update(more or {})
        return None, extra

    def result(self, cid, device_id=None):
        """The stored result for a cid (of that device; without one, the oldest), or None."""
        with self.store.read() as c:
            if device_id is None:
                row = c.execute("SELECT result FROM charges WHERE cid=?"
                                " ORDER BY applied_at, device_id", (bytes(cid),)).fetchone()
            else:
                row = c.execute("SELECT result FROM charges WHERE device_id=? AND cid=?",
                                (device_id, bytes(cid))).fetchone()
        return cbor2.loads(bytes(row[0])) if row else None

    def report(self):
        """Totals for a charges report: counts and amounts (per currency), decline codes,
        coupon redemptions and the list of conflicts."""
        with self.store.read() as c:
            rows = c.execute("SELECT status, code, cur, COUNT(*), SUM(amt) FROM charges"
                             " GROUP BY status, code, cur ORDER BY status, code, cur"
                             ).fetchall()
            redeemed = c.execute("SELECT COUNT(*) FROM redemptions").fetchone()[0]
            conflicts = c.execute(
                "SELECT cti, cid, device_id, store_id, at FROM redemptions"
                " WHERE conflict=1 ORDER BY at, device_id, cid, idx").fetchall()
        out = {"approved": {"count": 0, "amount": {}},
               "declined": {"count": 0, "amount": {}, "codes": {}},
               "coupons_redeemed": redeemed, "conflicts": []}
        for status, code, cur, count, total in rows:
            part = out[status]
            part["count"] += count
            part["amount"][cur] = part["amount"].get(cur, 0) + int(total)
            if status == "declined":
                part["codes"][code] = part["codes"].get(code, 0) + count
        for cti, cid, dev, store, at in conflicts:
            out["conflicts"].append({"cti": bytes(cti).hex(), "cid": bytes(cid).hex(),
                                     "device_id": dev, "store_id": store, "at": at})
        return out

    def lines(self):
        """One dict per charge, oldest first (report --charges): device_id, cid (hex), kind,
        amt, cur, status, code or auth, at (when the host decided it), conflicts (coupons)."""
        with self.store.read() as c:
            rows = c.execute(
                "SELECT device_id, cid, body, amt, cur, status, code, auth, applied_at"
                " FROM charges ORDER BY applied_at, received_at, device_id, cid").fetchall()
            counts = {(d, bytes(cid)): n for d, cid, n in c.execute(
                "SELECT device_id, cid, COUNT(*) FROM redemptions WHERE conflict=1"
                " GROUP BY device_id, cid").fetchall()}
        for dev, cid, body, amt, cur, status, code, auth, at in rows:
            cid = bytes(cid)
            line = {"device_id": dev, "cid": cid.hex(), "kind": cbor2.loads(bytes(body))["kind"],
                    "amt": amt, "cur": cur, "status": status, "at": at,
                    "conflicts": counts.get((dev, cid), 0)}
            if code is not None:
                line["code"] = code
            else:
                line["auth"] = auth
            yield line


def _check_cid(body):
    cid = body.get("cid") if isinstance(body, dict) else None
    if type(cid) is not bytes or len(cid) != 16:
        raise ChargeError("bad_body", "charge cid must be 16 bytes")


def _migrate_cid_key(store):
    """Databases from before 2026-12-04 (SQLite only then) keyed charges and redemptions by cid
    alone: rebuilt once with the (device_id, cid) keys, rows kept."""
    if store.kind != "sqlite":
        return
    with store.transaction() as tx:
        pk = sorted((r[5], r[1]) for r in tx.execute("PRAGMA table_info(charges)").fetchall()
                    if r[5])
        if [name for _, name in pk] != ["cid"]:
            return
        tx.execute("ALTER TABLE charges RENAME TO charges_v1")
        tx.execute("ALTER TABLE redemptions RENAME TO redemptions_v1")
        tx.execute("DROP INDEX IF EXISTS redemptions_cti")
        for stmt in _SCHEMA.split(";"):
            if stmt.strip():
                tx.execute(stmt)
        tx.execute("INSERT INTO charges (%s) SELECT %s FROM charges_v1 ORDER BY rowid"
                   % (_CHARGE_COLUMNS, _CHARGE_COLUMNS))
        tx.execute("INSERT INTO redemptions (%s) SELECT %s FROM redemptions_v1"
                   % (_REDEMPTION_COLUMNS, _REDEMPTION_COLUMNS))
        tx.execute("DROP TABLE charges_v1")
        tx.execute("DROP TABLE redemptions_v1")
