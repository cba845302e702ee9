# The pending queue (SPEC 4, SPEC 8): a journal on flash of everything the terminal must forward
# to the host exactly once in effect: sales (charges) and, registered by the services, refunds
# and booking updates. Records are forwarded in commit order, a window of them in flight, and
# each stays until its answer is durably recorded.
#
# Sans-I/O apart from the RecordLog it appends to: the agent asks `due()` what to send, reports
# `sent()`, and hands answers over with `on_answer()`. Each forwarded record kind is a `Kind`
# (the sale kind is built in; services add theirs before open()). Journal records (CBOR maps, key
# "r", format in docs/formats.md):
#   sale      the charge and its redemptions (device/sales/sale.py)       -> pending
#   <kind>    a service's record (refund, bkup), id under kind.key          -> pending
#   result    the host's charge_result for a cid                            -> resolved
#   answer    the host's answer to another kind: {"k", "id", "a"}           -> resolved / waiting
#   ack       a supervisor acknowledged a bad answer (declined, rejected)
#   redeemed  coupons the host saw redeemed at other terminals              -> ledger
#   snap      written by compaction: ledger image + receipt counter, in parts of at most
#             SNAP_ROWS coupons; part 0 replaces the ledger on replay, later parts add to it
# Answers and host redemptions carry "hs", the host seq they came with: at boot the downlink's
# seq guard is raised to the highest, so a replayed answer is refused like any stale message.
from device.coupons.ledger import Ledger
from device.sales.sale import RECORD_VERSION, charge_body
from protocol import cbor

# Ledger rows per snapshot record: keeps each record far below storage.MAX_RECORD
# (a row is a cti of up to 32 bytes and three ints: < 60 bytes of CBOR).
SNAP_ROWS = 500
RETRY_BASE_MS = 5000
RETRY_CAP_MS = 120000
RECENT_REDEEMED = 256


class QueueError(Exception):
    pass


class Kind:
    """A kind of forwarded record: its journal name, the up message that carries it, the down
    message that answers it, the id field both share, and how to read an answer."""

    def __init__(self, record, up, answer, key, body, final=None, bad=None):
        self.record = record    # journal "r"
        self.up = up            # message type sent
        self.answer = answer    # message type of the answer
        self.key = key          # id field in the record, the up body and the answer
        self.body = body        # fn(rec) -> the up body
        self._final = final     # fn(answer) -> False while the host has not decided (review)
        self._bad = bad         # fn(answer) -> True when a supervisor must see it

    def final(self, answer):
        return self._final is None or self._final(answer)

    def bad(self, answer):
        return self._bad is not None and self._bad(answer)


SALE = Kind("sale", "charge", "charge_result", "cid", charge_body,
            bad=lambda a: a.get("st") == "declined")
_RESULT_KEYS = ("code", "auth", "bal", "pts", "vip")


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
        self.kinds = {}            # journal record name -> Kind
        self._by_answer = {}       # answer message type -> Kind
        self.pending = []          # records to forward, commit order
        self._pending_by_id = {}
        self.waiting = []          # [rec, answer]: answered, not final (a refund in review)
        self.resolved = []         # [rec, answer] pairs, oldest first (retained history)
        self.unacked = []          # ids of bad answers no supervisor has acknowledged
        self.next_n = 1
        self.bad_records = 0
        self.dup_results = 0
        self.host_seq = 0          # highest "hs" found in the journal
        self._retry = {}           # id -> [attempts, due_ms]; not persisted: resend after boot
        self._resolved_since_compact = 0
        self._redeemed_ids = []    # ids of recent host redemptions (a replay adds nothing)
        self._on_commit = []
        self._on_resolve = []
        self.add_kind(SALE)

    def add_kind(self, kind):
        self.kinds[kind.record] = kind
        self._by_answer[kind.answer] = kind

    def listen(self, on_commit=None, on_resolve=None):
        """on_commit(kind, rec) and on_resolve(kind, rec, answer), also during the replay at
        open(): services keep what they derive from the journal (offline totals...) this way."""
        if on_commit is not None:
            self._on_commit.append(on_commit)
        if on_resolve is not None:
            self._on_resolve.append(on_resolve)

    def id_of(self, rec):
        return rec[self.kinds[rec["r"]].key]

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
        r = rec["r"]
        if "hs" in rec and rec["hs"] > self.host_seq:
            self.host_seq = rec["hs"]
        kind = self.kinds.get(r)
        if kind is not None:
            rid = rec[kind.key]
            if rid in self._pending_by_id or self._find(rid) is not None:
                raise ValueError("duplicate record")
            self._add_pending(kind, rec)
        elif r == "result":
            self._answered(SALE, rec["cid"], rec)
        elif r == "answer":
            kind = self.kinds[rec["k"]]
            answer = dict(rec["a"])
            answer["at"] = rec["at"]
            self._answered(kind, rec["id"], answer)
        elif r == "ack":
            rid = rec.get("id", rec.get("cid"))
            if rid in self.unacked:
                self.unacked.remove(rid)
        elif r == "redeemed":
            self._redeemed(rec["cti"], rec["at"], rec.get("rid"))
        elif r == "snap":
            if rec.get("part", 0) == 0:
                self.ledger.restore(rec["ledger"])
            else:
                self.ledger.add_rows(rec["ledger"])
            if rec["next_n"] > self.next_n:
                self.next_n = rec["next_n"]
        else:
            raise ValueError("unknown record")

    def _add_pending(self, kind, rec):
        self.pending.append(rec)
        self._pending_by_id[rec[kind.key]] = rec
        for c in rec.get("cpn", ()):
            self.ledger.add_local(c["cti"], c["exp"])
        if "mcti" in rec:
            self.ledger.add_local(rec["mcti"], rec.get("mexp"))
        n = rec.get("n")
        if n is not None and n >= self.next_n:
            self.next_n = n + 1
        for fn in self._on_commit:
            fn(kind, rec)

    def _answered(self, kind, rid, answer):
        """Applies an answer to the pending (or waiting) record with that id."""
        rec = self._pending_by_id.pop(rid, None)
        if rec is not None:
            self.pending.remove(rec)
        else:
            pair = self._waiting_pair(rid)
            if pair is None:
                raise KeyError("no record waits for this answer")
            self.waiting.remove(pair)
            rec = pair[0]
        self._retry.pop(rid, None)
        if not kind.final(answer):
            self.waiting.append([rec, answer])
            return rec
        self.resolved.append([rec, answer])
        if kind.bad(answer):
            self.unacked.append(rid)
        self._resolved_since_compact += 1
        for fn in self._on_resolve:
            fn(kind, rec, answer)
        return rec

    def _waiting_pair(self, rid):
        for pair in self.waiting:
            if self.id_of(pair[0]) == rid:
                return pair
        return None

    def _find(self, rid):
        for pair in self.resolved:
            if self.id_of(pair[0]) == rid:
                return pair
        return None

    # -- what the clerk and the console see ----------------------------------------------------
    def count(self):
        """Records not yet answered, every kind (what `queue` in hello and status counts)."""
        return len(self.pending)

    def totals(self):
        """(count, amount, oldest_at) of the unresolved charges: what offline limits weigh."""
        count = amount = 0
        oldest = None
        for r in self.pending:
            if r["r"] != "sale":
                continue
            count += 1
            amount += r["amt"]
            if oldest is None:
                oldest = r["at"]
        return count, amount, oldest

    def find(self, rid):
        """(record, answer or None) for an id pending, waiting or in the retained history."""
        rec = self._pending_by_id.get(rid)
        if rec is not None:
            return rec, None
        pair = self._waiting_pair(rid) or self._find(rid)
        return (pair[0], pair[1]) if pair is not None else None

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
        """Makes a record durable (one append, one sync), then counts what it carries."""
        kind = self.kinds.get(rec.get("r"))
        if kind is None:
            raise QueueError("no kind %r" % (rec.get("r"),))
        rid = rec[kind.key]
        if rid in self._pending_by_id or self._waiting_pair(rid) is not None:
            raise QueueError("id already committed")
        self.log.append([cbor.dumps(rec)])
        self._add_pending(kind, rec)

    # -- forwarding ---------------------------------------------------------------------------
    def due(self, now_ms):
        """Records to (re)send now: the oldest `window` unanswered whose timer has run out."""
        out = []
        for rec in self.pending[:self.window]:
            r = self._retry.get(self.id_of(rec))
            if r is None or now_ms - r[1] >= 0:
                out.append(rec)
        return out

    def message(self, rec):
        """(up message type, body) that forwards a record."""
        kind = self.kinds[rec["r"]]
        return kind.up, kind.body(rec)

    def sent(self, rid, now_ms, jitter):
        """Schedules the retry of a sent record; jitter in [0, 1) spreads a fleet's retries."""
        r = self._retry.get(rid)
        attempts = 0 if r is None else r[0]
        delay = RETRY_BASE_MS << min(attempts, 10)
        if delay > RETRY_CAP_MS:
            delay = RETRY_CAP_MS
        delay = delay * 3 // 4 + int(delay * jitter / 2)
        self._retry[rid] = [attempts + 1, now_ms + delay]

    def link_up(self):
        """After a reconnect every unanswered record in the window goes out again at once, and
        the waiting ones once more (the host answers a repeat with where it stands)."""
        self._retry = {}

    def waiting_due(self):
        return [pair[0] for pair in self.waiting]

    def on_answer(self, mtype, body, now, hs=0):
        """Records an answer durably and applies it; returns the record or None (a repeat, or a
        stranger: counted in dup_results)."""
        kind = self._by_answer.get(mtype)
        if kind is None:
            raise QueueError("no kind answered by %s" % mtype)
        rid = body[kind.key]
        waiting = self._waiting_pair(rid)
        if rid not in self._pending_by_id and waiting is None:
            self.dup_results += 1
            return None
        if waiting is not None and not kind.final(body) and body.get("st") == \
                waiting[1].get("st"):
            return None  # the same "still in review" again: nothing new to record
        if kind is SALE:
            rec = {"r": "result", "v": RECORD_VERSION, "cid": rid, "st": body["st"], "at": now,
                   "cpn": body.get("cpn", []), "hs": hs}
            for k in _RESULT_KEYS:
                if k in body:
                    rec[k] = body[k]
            answer = rec
        else:
            a = {}
            for k, v in body.items():
                if k != kind.key:
                    a[k] = v
            rec = {"r": "answer", "v": RECORD_VERSION, "k": kind.record, "id": rid, "a": a,
                   "at": now, "hs": hs}
            answer = dict(a)
            answer["at"] = now
        self.log.append([cbor.dumps(rec)])
        if hs > self.host_seq:
            self.host_seq = hs
        return self._answered(kind, rid, answer)

    def on_result(self, body, now, hs=0):
        return self.on_answer("charge_result", body, now, hs)

    # -- store-wide redemptions and notices ---------------------------------------------------
    def add_redeemed(self, ctis, now, hs=0, rid=None):
        """Coupons another terminal redeemed; rid (the host's id of that redemption) makes a
        repeat harmless. Returns False for a repeat."""
        if rid is not None and rid in self._redeemed_ids:
            self.dup_results += 1
            return False
        rec = {"r": "redeemed", "v": RECORD_VERSION, "cti": ctis, "at": now, "hs": hs}
        if rid is not None:
            rec["rid"] = rid
        self.log.append([cbor.dumps(rec)])
        if hs > self.host_seq:
            self.host_seq = hs
        self._redeemed(ctis, now, rid)
        return True

    def _redeemed(self, ctis, now, rid):
        for cti in ctis:
            self.ledger.add_host(cti, now)
        if rid is not None:
            self._redeemed_ids.append(rid)
            if len(self._redeemed_ids) > RECENT_REDEEMED:
                self._redeemed_ids.pop(0)

    def notices(self):
        """Bad answers not yet acknowledged, oldest first: [(kind, rec, answer)]."""
        out = []
        for rid in self.unacked:
            pair = self._find(rid)
            if pair is not None:
                out.append((self.kinds[pair[0]["r"]], pair[0], pair[1]))
        return out

    def declined(self):
        """Declined charges not yet acknowledged: [(sale, result)]."""
        return [(p[1], p[2]) for p in self.notices() if p[0] is SALE]

    def acknowledge(self, rid, who, now):
        if rid not in self.unacked:
            raise QueueError("no unacknowledged notice with that id")
        self.log.append([cbor.dumps({"r": "ack", "v": RECORD_VERSION, "id": rid, "by": who,
                                     "at": now})])
        self.unacked.remove(rid)

    # -- compaction ---------------------------------------------------------------------------
    def needs_compaction(self):
        # Compaction rewrites every pending record: wait until the history it drops outweighs
        # them, so a long offline backlog is not rewritten again and again while it drains.
        n = self._resolved_since_compact
        return n > self.retention and n > len(self.pending)

    def _answer_record(self, rec, answer):
        kind = self.kinds[rec["r"]]
        if kind is SALE:
            return answer
        a = {}
        for k, v in answer.items():
            if k != "at":
                a[k] = v
        return {"r": "answer", "v": RECORD_VERSION, "k": kind.record, "id": rec[kind.key],
                "a": a, "at": answer["at"], "hs": 0}

    def compact(self, now):
        """Rewrites the journal as: retained history, unacked notices, acks for the notices
        kept, the waiting records, the pending records in commit order, then the snapshot.

        The snapshot comes last and replaces the ledger on replay, so the records kept before
        it are not counted twice and the dropped ones are not forgotten.
        """
        self.ledger.prune(now)
        keep = self.resolved[-self.retention:] if self.retention else []
        for rid in self.unacked:
            pair = self._find(rid)
            if pair is not None and pair not in keep:
                keep.insert(0, pair)
        order = {}
        for i, pair in enumerate(self.resolved):
            order[id(pair)] = i
        keep.sort(key=lambda p: order[id(p)])
        recs = []
        for rec, answer in keep:
            recs.append(rec)
            recs.append(self._answer_record(rec, answer))
        for rec, answer in keep:
            rid = self.id_of(rec)
            if self.kinds[rec["r"]].bad(answer) and rid not in self.unacked:
                recs.append({"r": "ack", "v": RECORD_VERSION, "id": rid, "by": "", "at": now})
        for rec, answer in self.waiting:
            recs.append(rec)
            recs.append(self._answer_record(rec, answer))
        recs.extend(self.pending)
        rows = self.ledger.snapshot()
        for part, i in enumerate(range(0, max(len(rows), 1), SNAP_ROWS)):
            snap = {"r": "snap", "v": RECORD_VERSION, "part": part,
                    "ledger": rows[i:i + SNAP_ROWS], "next_n": self.next_n, "at": now}
            if part == 0:
                snap["hs"] = self.host_seq
            recs.append(snap)
        self.log.replace([cbor.dumps(r) for r in recs])
        self.resolved = keep
        self._resolved_since_compact = 0
