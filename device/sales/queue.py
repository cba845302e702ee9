# The pending charge queue (SPEC 4): a journal of sale records on flash, forwarded to the host
# in commit order, each kept until its charge_result is durably recorded.
#
# Sans-I/O apart from the RecordLog it appends to: the agent asks `due()` what to send, reports
# `sent()`, and hands over results with `on_result()`. Journal records (CBOR maps, key "r"):
#   sale     the charge and its redemptions (device/sales/sale.py)        -> pending
#   result   the host's charge_result for a cid                     -> resolved
#   ack      a supervisor acknowledged a declined charge
#   redeemed coupons the host saw redeemed at other terminals      -> ledger
#   snap     written by compaction: ledger image + receipt counter, in parts of at most
#            SNAP_ROWS coupons; part 0 replaces the ledger on replay, later parts add to it
from device.coupons.ledger import Ledger
from device.sales.sale import RECORD_VERSION
from protocol import cbor

# Ledger rows per snapshot record: keeps each record far below storage.MAX_RECORD
# (a row is a cti of up to 32 bytes and three ints: < 60 bytes of CBOR).
SNAP_ROWS = 500
RETRY_BASE_MS = 5000
RETRY_CAP_MS = 120000


class QueueError(Exception):
    pass


class Refusal:
    """Why a sale may not be committed: which offline limit and by how much."""

    def __init__(self, limit, detail):
        self.limit = limit
        self.detail = detail

    def __repr__(self):
        return "Refusal(%s, %s)" % (self.limit, self.detail)


class ChargeQueue:
    def __init__(self, log, window=4, retention=50):
        self.log = log
        self.window = window
        self.retention = retention
        self.ledger = Ledger()
        self.pending = []          # sale records, commit order
        self._pending_by_cid = {}
        self.resolved = []         # [sale, result] pairs, oldest first (retained history)
        self.unacked = []          # cids of declined charges no supervisor has acknowledged
        self.next_n = 1
        self.bad_records = 0
        self.dup_results = 0
        self._retry = {}           # cid -> [attempts, due_ms]; not persisted: resend after boot
        self._resolved_since_compact = 0

    # -- boot ---------------------------------------------------------------------------------
    def open(self):
        for raw in self.log.open():
            try:
                rec = cbor.loads(raw)
                self._apply(rec)
            except (ValueError, KeyError, TypeError, IndexError):
                # Unreadable or of a newer format: keep going, count it for the technician.
                self.bad_records += 1
        return self

    def _apply(self, rec):
        if not isinstance(rec, dict) or rec.get("v") != RECORD_VERSION:
            raise ValueError("unknown record")
        kind = rec["r"]
        if kind == "sale":
            cid = rec["cid"]
            if cid in self._pending_by_cid or self._find_resolved(cid) is not None:
                raise ValueError("duplicate sale")
            self.pending.append(rec)
            self._pending_by_cid[cid] = rec
            for c in rec["cpn"]:
                self.ledger.add_local(c["cti"], c["exp"])
            if rec["n"] >= self.next_n:
                self.next_n = rec["n"] + 1
        elif kind == "result":
            self._resolve(rec)
        elif kind == "ack":
            if rec["cid"] in self.unacked:
                self.unacked.remove(rec["cid"])
        elif kind == "redeemed":
            for cti in rec["cti"]:
                self.ledger.add_host(cti, rec["at"])
        elif kind == "snap":
            if rec.get("part", 0) == 0:
                self.ledger.restore(rec["ledger"])
            else:
                self.ledger.add_rows(rec["ledger"])
            if rec["next_n"] > self.next_n:
                self.next_n = rec["next_n"]
        else:
            raise ValueError("unknown record")

    def _resolve(self, result):
        sale = self._pending_by_cid.pop(result["cid"])
        self.pending.remove(sale)
        self._retry.pop(result["cid"], None)
        self.resolved.append([sale, result])
        if result["st"] == "declined":
            self.unacked.append(result["cid"])
        self._resolved_since_compact += 1

    def _find_resolved(self, cid):
        for pair in self.resolved:
            if pair[0]["cid"] == cid:
                return pair
        return None

    # -- the clerk's side ---------------------------------------------------------------------
    def totals(self):
        amount = 0
        for r in self.pending:
            amount += r["amt"]
        oldest = self.pending[0]["at"] if self.pending else None
        return len(self.pending), amount, oldest

    def refusal(self, amt, offline, now, limits):
        """None when a sale of `amt` may be committed now, else the Refusal naming the limit."""
        count, total, oldest = self.totals()
        if offline and amt > limits["offline_max_charge"]:
            return Refusal("offline_max_charge", amt - limits["offline_max_charge"])
        if count + 1 > limits["offline_max_count"]:
            return Refusal("offline_max_count", count + 1 - limits["offline_max_count"])
        if total + amt > limits["offline_max_total"]:
            return Refusal("offline_max_total", total + amt - limits["offline_max_total"])
        if oldest is not None and now - oldest > limits["offline_max_age_s"]:
            return Refusal("offline_max_age_s", now - oldest - limits["offline_max_age_s"])
        return None

    def take_receipt_no(self):
        n = self.next_n
        self.next_n += 1
        return n

    def commit(self, rec):
        """Makes a sale record durable (one append, one sync), then counts its redemptions."""
        if rec["cid"] in self._pending_by_cid:
            raise QueueError("cid already committed")
        self.log.append([cbor.dumps(rec)])
        self.pending.append(rec)
        self._pending_by_cid[rec["cid"]] = rec
        for c in rec["cpn"]:
            self.ledger.add_local(c["cti"], c["exp"])

    # -- forwarding ---------------------------------------------------------------------------
    def due(self, now_ms):
        """Sale records to (re)send now: the oldest `window` unresolved whose timer has run out."""
        out = []
        for rec in self.pending[:self.window]:
            r = self._retry.get(rec["cid"])
            if r is None or now_ms - r[1] >= 0:
                out.append(rec)
        return out

    def sent(self, cid, now_ms, jitter):
        """Schedules the retry of a sent charge; jitter in [0, 1) spreads a fleet's retries."""
        r = self._retry.get(cid)
        attempts = 0 if r is None else r[0]
        delay = RETRY_BASE_MS << min(attempts, 10)
        if delay > RETRY_CAP_MS:
            delay = RETRY_CAP_MS
        delay = delay * 3 // 4 + int(delay * jitter / 2)
        self._retry[cid] = [attempts + 1, now_ms + delay]

    def link_up(self):
        """After a reconnect every unresolved charge in the window goes out again at once."""
        self._retry = {}

    def on_result(self, body, now):
        """Records a charge_result durably and resolves its charge; returns the sale or None."""
        cid = body["cid"]
        sale = self._pending_by_cid.get(cid)
        if sale is None:
            # A repeat (we resent before the first result came) or a stranger: nothing to do.
            self.dup_results += 1
            return None
        rec = {"r": "result", "v": RECORD_VERSION, "cid": cid, "st": body["st"], "at": now,
               "cpn": body.get("cpn", [])}
        for k in ("code", "auth"):
            if k in body:
                rec[k] = body[k]
        self.log.append([cbor.dumps(rec)])
        self._resolve(rec)
        return sale

    # -- store-wide redemptions and declines --------------------------------------------------
    def add_redeemed(self, ctis, now):
        self.log.append([cbor.dumps({"r": "redeemed", "v": RECORD_VERSION, "cti": ctis,
                                     "at": now})])
        for cti in ctis:
            self.ledger.add_host(cti, now)

    def declined(self):
        """Declined charges not yet acknowledged: [(sale, result)]."""
        return [self._find_resolved(cid) for cid in self.unacked]

    def acknowledge(self, cid, who, now):
        if cid not in self.unacked:
            raise QueueError("no unacknowledged decline with that cid")
        self.log.append([cbor.dumps({"r": "ack", "v": RECORD_VERSION, "cid": cid, "by": who,
                                     "at": now})])
        self.unacked.remove(cid)

    # -- compaction ---------------------------------------------------------------------------
    def needs_compaction(self):
        # Compaction rewrites every pending sale: wait until the history it drops outweighs
        # them, so a long offline backlog is not rewritten again and again while it drains.
        n = self._resolved_since_compact
        return n > self.retention and n > len(self.pending)

    def compact(self, now):
        """Rewrites the journal as: pending sales, retained history, unacked declines, snapshot.

        The snapshot comes last and replaces the ledger on replay, so the sales kept before it
        are not counted twice and the dropped ones are not forgotten.
        """
        self.ledger.prune(now)
        keep = self.resolved[-self.retention:] if self.retention else []
        for cid in self.unacked:
            pair = self._find_resolved(cid)
            if pair not in keep:
                keep.insert(0, pair)
        keep.sort(key=lambda p: p[0]["n"])
        acked = [p for p in keep if p[1]["st"] == "declined" and p[0]["cid"] not in self.unacked]
        recs = []
        for sale, result in keep:
            recs.append(sale)
            recs.append(result)
        for sale, _ in acked:
            recs.append({"r": "ack", "v": RECORD_VERSION, "cid": sale["cid"], "by": "", "at": now})
        recs.extend(self.pending)
        rows = self.ledger.snapshot()
        for part, i in enumerate(range(0, max(len(rows), 1), SNAP_ROWS)):
            recs.append({"r": "snap", "v": RECORD_VERSION, "part": part,
                         "ledger": rows[i:i + SNAP_ROWS], "next_n": self.next_n, "at": now})
        self.log.replace([cbor.dumps(r) for r in recs])
        self.resolved = keep
        self._resolved_since_compact = 0
