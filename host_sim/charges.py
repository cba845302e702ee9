# The host's charge processor (SPEC 3.2 charge/charge_result, SPEC 4): decides each charge once,
# keyed by its cid, and records its coupon redemptions in the same transaction. A repeated cid
# (retransmission, host restart, outage) gets the stored result back byte for byte and changes
# nothing. Coupons were accepted offline in good faith: a coupon used beyond its max uses is
# reported as a "conflict" on an otherwise approved charge, never a reason to decline it.
import hashlib
import os

import cbor2

OVER_LIMIT = "over_limit"
RANDOM_DECLINE = "random_decline"
MEMBER_BLOCKED = "member_blocked"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS charges (
    cid         BLOB PRIMARY KEY,
    device_id   TEXT NOT NULL,
    store_id    TEXT NOT NULL,
    body        BLOB NOT NULL,
    result      BLOB NOT NULL,
    status      TEXT NOT NULL,
    code        TEXT,
    auth        TEXT,
    amt         INTEGER NOT NULL,
    cur         TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    applied_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS redemptions (
    cid       BLOB NOT NULL,
    idx       INTEGER NOT NULL,
    cti       BLOB NOT NULL,
    device_id TEXT NOT NULL,
    store_id  TEXT NOT NULL,
    at        INTEGER NOT NULL,
    conflict  INTEGER NOT NULL,
    PRIMARY KEY (cid, idx)
);
CREATE INDEX IF NOT EXISTS redemptions_cti ON redemptions(cti);
CREATE TABLE IF NOT EXISTS coupons (
    cti      BLOB PRIMARY KEY,
    max_uses INTEGER NOT NULL
);
"""


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
    """Charge processing over the registry's database (same file, same lock)."""

    def __init__(self, registry, rules=None, coupon_max_uses=None):
        self.registry = registry
        self.rules = rules or Rules()
        # Hook: cti -> max uses (or None); the coupons table from issuance is the fallback.
        self.coupon_max_uses_hook = coupon_max_uses
        with registry.lock:
            registry.conn.executescript(_SCHEMA)

    def set_coupon_max_uses(self, cti, max_uses):
        """Records a coupon's "mu" at issuance (default 1 when a cti is unknown)."""
        if type(max_uses) is not int or max_uses < 1:
            raise ChargeError("bad_coupon", "max_uses must be an int >= 1")
        with self.registry.transaction() as c:
            c.execute("INSERT INTO coupons (cti, max_uses) VALUES (?, ?) ON CONFLICT(cti)"
                      " DO UPDATE SET max_uses=excluded.max_uses", (bytes(cti), max_uses))

    def coupon_max_uses(self, cti, conn=None):
        if self.coupon_max_uses_hook is not None:
            mu = self.coupon_max_uses_hook(cti)
            if mu is not None:
                return mu
        conn = conn or self.registry.conn
        row = conn.execute("SELECT max_uses FROM coupons WHERE cti=?", (bytes(cti),)).fetchone()
        return row[0] if row else 1

    def process(self, device_id, body, received_at=None):
        """The charge_result body for a charge (checked by protocol.messages beforehand)."""
        return self.apply(device_id, body, received_at)[0]

    def apply(self, device_id, body, received_at=None):
        """Like process(); returns (result, fresh): fresh is False for a known cid."""
        cid = body.get("cid") if isinstance(body, dict) else None
        if type(cid) is not bytes or len(cid) != 16:
            raise ChargeError("bad_body", "charge cid must be 16 bytes")
        with self.registry.transaction() as c:
            row = c.execute("SELECT result FROM charges WHERE cid=?", (cid,)).fetchone()
            if row is not None:
                return cbor2.loads(row[0]), False
            dev = c.execute("SELECT store_id FROM devices WHERE device_id=?",
                            (device_id,)).fetchone()
            if dev is None:
                raise ChargeError("unknown_device", "no device %r" % (device_id,))
            store_id = dev[0]
            now = self.registry.now()
            code = self.rules.decline_code(body)
            result = {"cid": cid, "st": "declined" if code else "approved"}
            cpn = []
            if code is None:
                result["auth"] = os.urandom(3).hex().upper()
                # A declined sale redeems nothing, so only approved charges record coupons.
                for idx, coupon in enumerate(body["cpn"]):
                    cti = coupon["cti"]
                    used = c.execute("SELECT COUNT(*) FROM redemptions WHERE cti=?",
                                     (cti,)).fetchone()[0]
                    conflict = used >= self.coupon_max_uses(cti, c)
                    c.execute("INSERT INTO redemptions (cid, idx, cti, device_id, store_id, at,"
                              " conflict) VALUES (?, ?, ?, ?, ?, ?, ?)",
                              (cid, idx, cti, device_id, store_id, now, int(conflict)))
                    cpn.append({"cti": cti, "st": "conflict" if conflict else "ok"})
            else:
                result["code"] = code
            result["cpn"] = cpn
            encoded = cbor2.dumps(result)
            c.execute("INSERT INTO charges (cid, device_id, store_id, body, result, status, code,"
                      " auth, amt, cur, received_at, applied_at)"
                      " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (cid, device_id, store_id, cbor2.dumps(body, canonical=True), encoded,
                       result["st"], code, result.get("auth"), body["amt"], body["cur"],
                       now if received_at is None else int(received_at), now))
        return cbor2.loads(encoded), True

    def result(self, cid):
        """The stored result for a cid, or None."""
        with self.registry.lock:
            row = self.registry.conn.execute("SELECT result FROM charges WHERE cid=?",
                                             (bytes(cid),)).fetchone()
        return cbor2.loads(row[0]) if row else None

    def report(self):
        """Totals for a charges report: counts and amounts (per currency), decline codes,
        coupon redemptions and the list of conflicts."""
        with self.registry.lock:
            conn = self.registry.conn
            rows = conn.execute("SELECT status, code, cur, COUNT(*), SUM(amt) FROM charges"
                                " GROUP BY status, code, cur ORDER BY status, code, cur"
                                ).fetchall()
            redeemed = conn.execute("SELECT COUNT(*) FROM redemptions").fetchone()[0]
            conflicts = conn.execute(
                "SELECT r.cti, r.cid, r.device_id, r.store_id, r.at FROM redemptions r"
                " WHERE r.conflict=1 ORDER BY r.at, r.cid, r.idx").fetchall()
        out = {"approved": {"count": 0, "amount": {}},
               "declined": {"count": 0, "amount": {}, "codes": {}},
               "coupons_redeemed": redeemed, "conflicts": []}
        for status, code, cur, count, total in rows:
            part = out[status]
            part["count"] += count
            part["amount"][cur] = part["amount"].get(cur, 0) + total
            if status == "declined":
                part["codes"][code] = part["codes"].get(code, 0) + count
        for cti, cid, dev, store, at in conflicts:
            out["conflicts"].append({"cti": cti.hex(), "cid": cid.hex(), "device_id": dev,
                                     "store_id": store, "at": at})
        return out
