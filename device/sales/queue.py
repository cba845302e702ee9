# The pending queue (SPEC 4, SPEC 8): a journal on flash of everything the terminal must forward
# to the host exactly once in effect: sales (charges) and, registered by the services, refunds
# and booking updates. Records are forwarded in commit order, a window of them in flight, and
# each stays until its answer is durably recorded.
#
# Sans-I/O apart from the RecordLog it appends to: the agent asks `due()` what to send, reports
# `sent()`, and hands answers over with `on_answer()` (several at once between begin_group()
# and end_group(): one append, one sync). Each forwarded record kind is a `Kind` (the sale kind
# is built in; services add theirs before open()). Journal records (CBOR maps, key "r", format
# in docs/formats.md):
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
#
# What stays in RAM (the heap of a board is small): the pending index (20 bytes per record,
# device/sales/pending.py), the records of the window in flight, the waiting records, the
# notices as (id, offsets), the last `retention` answers as offsets, the ledger (16 bytes per
# coupon). Every other record is read from flash when it is needed. A checkpoint of that state
# (device/sales/checkpoint.py) lets a boot replay only the journal's tail.
import struct

from device.coupons.ledger import Ledger
from device.ports.storage import LOG_MAGIC, StorageError, frame
from device.sales import checkpoint, pending
from device.sales.pending import PendingIndex, id4
from device.sales.sale import RECORD_VERSION, charge_body, record_bytes
from protocol import cbor

# Ledger rows per snapshot record: 960 bytes of packed rows, a record small enough to be made
# and read back in a fragmented heap (MicroPython).
SNAP_ROWS = 60
SNAP_VERSION = 2       # snap records with packed rows; version 1 (rows as lists) still read
RETRY_BASE_MS = 5000
RETRY_CAP_MS = 120000
RECENT_REDEEMED = 256
# A checkpoint is due once CHECKPOINT_EVERY records were appended since the last one (a boot
# replays at most that tail, plus what came since), at most one per CHECKPOINT_GAP_MS unless
# CHECKPOINT_MAX records wait: a drain answering thousands of records a minute does not
# rewrite the index every few of them.
CHECKPOINT_EVERY = 64
CHECKPOINT_GAP_MS = 2000
CHECKPOINT_MAX = 1024
_NOTICE = 24           # id 16 | rec_off u32 | ans_off u32
_HDR = 9               # frame header bytes (device/ports/storage.py)


class QueueError(Exception):
    pass


class Kind:
    """A kind of forwarded record: its journal name, the up message that carries it, the down
    message that answers it, the id field both share, and how to read an answer."""

    def __init__(self, record, up, answer, key, body, final=None, bad=None, encode=None):
        self.record = record    # journal "r"
        self.up = up            # message type sent
        self.answer = answer    # message type of the answer
        self.key = key          # id field in the record, the up body and the answer
        self.body = body        # fn(rec) -> the up body
        self._final = final     # fn(answer) -> False while the host has not decided (review)
        self._bad = bad         # fn(answer) -> True when a supervisor must see it
        self.encode = encode or cbor.dumps  # fn(rec) -> its journal bytes

    def final(self, answer):
        return self._final is None or self._final(answer)

    def bad(self, answer):
        return self._bad is not None and self._bad(answer)


SALE = Kind("sale", "charge", "charge_result", "cid", charge_body,
            bad=lambda a: a.get("st") == "declined", encode=record_bytes)
_RESULT_KEYS = ("code", "auth", "bal", "pts", "vip")


class Refusal:
    """Why a sale may not be committed: which offline limit and by how much."""

    def __init__(self, limit, detail):
        self.limit = limit
        self.detail = detail

    def __repr__(self):
        return "Refusal(%s, %s)" % (self.limit, self.detail)


class PendingView:
    """The pending records as a read-only sequence in commit order, read from flash on use
    (the window's from RAM): len() is free, iterating reads every one."""

    def __init__(self, q):
        self._q = q

    def __len__(self):
        return self._q.index.live

    def __bool__(self):
        return self._q.index.live > 0

    def __iter__(self):
        q = self._q
        for _, rec in q._records(q.index.each()):
            yield rec

    def __getitem__(self, i):
        if isinstance(i, slice):
            return list(self)[i]
        nos = self._q.index.numbers()
        return self._q._record(nos[i])

    def __eq__(self, other):
        if isinstance(other, PendingView):
            other = list(other)
        return isinstance(other, (list, tuple)) and list(self) == list(other)

    def __ne__(self, other):
        return not self.__eq__(other)


class ChargeQueue:
    def __init__(self, log, window=4, retention=50):
        self.log = log
        self.window = window
        self.retention = retention
        self.ledger = Ledger()
        self.kinds = {}            # journal record name -> Kind
        self._codes = []           # kind code -> Kind (the pending index's kind byte)
        self._code = {}            # journal record name -> kind code
        self._by_answer = {}       # answer message type -> Kind
        self.index = PendingIndex()
        self.waiting = []          # [rec, answer]: answered, not final (a refund in review)
        self._waiting_at = {}      # id -> [rec_off, ans_off] of a waiting record
        self._notices = bytearray()  # (id, rec_off, ans_off) of unacknowledged bad answers
        self._history = []         # [rec_off, ans_off, id, bad] of the last `retention` answers
        self.next_n = 1
        self.bad_records = 0
        self.dup_results = 0
        self.host_seq = 0          # highest "hs" found in the journal
        self.booted_from = None    # "checkpoint" or "journal": how open() found its state
        self._win = {}             # entry no -> record, for the first `window` pending
        self._win_ids = {}         # id -> entry no of those
        self._win_rid = {}         # entry no -> id of those
        self._order = []           # their entry numbers in commit order
        self._retry = {}           # id -> [attempts, due_ms]; not persisted: resend after boot
        self._resolved_since_compact = 0
        self._since_checkpoint = 0
        self._checkpoint_ms = None
        self._redeemed_ids = []    # ids of recent host redemptions (a replay adds nothing)
        self._listeners = []       # [on_commit, on_resolve, kinds, replay]
        self._opening = False
        self._group = None         # staged [payload, apply] between begin_group/end_group
        self._group_ids = None
        self._notice_cache = {}
        p = log.path
        self.checkpoint_path = (p[:-4] if p.endswith(".log") else p) + ".ckp"
        self.add_kind(SALE)

    def add_kind(self, kind):
        self.kinds[kind.record] = kind
        self._by_answer[kind.answer] = kind
        if kind.record not in self._code:
            self._code[kind.record] = len(self._codes)  # its kind byte in the pending index
            self._codes.append(kind)

    def listen(self, on_commit=None, on_resolve=None, kinds=None, replay=True):
        """on_commit(kind, rec) after a record is committed, on_resolve(kind, rec, answer)
        after its final answer is on flash. At open() the journal is told again, read from
        flash: first the answered records it still holds (the last `retention` answers and the
        unacknowledged notices), each as on_commit then on_resolve, then every record still
        pending or waiting to on_commit, in commit order. `kinds`, a list of record names,
        limits that to the ones the listener needs; replay=False skips it. So services derive
        what they keep (offline totals, refunded amounts, bookings answered) from the
        journal."""
        self._listeners.append([on_commit, on_resolve, kinds, replay])

    def id_of(self, rec):
        return rec[self.kinds[rec["r"]].key]

    @property
    def pending(self):
        return PendingView(self)

    @property
    def unacked(self):
        """Ids of the bad answers no supervisor has acknowledged, oldest first."""
        n = self._notices
        return [bytes(n[i:i + 16]) for i in range(0, len(n), _NOTICE)]

    # -- boot ---------------------------------------------------------------------------------
    def open(self):
        self._opening = True
        try:
            if not self._from_checkpoint():
                self._reset()
                self.booted_from = "journal"
                self.log.scan_from(None, self._replay)
            self._take_remap()
            self._since_checkpoint = 0
        finally:
            self._opening = False
        self._replay_listeners()
        return self

    def _reset(self):
        self.ledger = Ledger()
        self.index = PendingIndex()
        self.waiting = []
        self._waiting_at = {}
        self._notices = bytearray()
        self._history = []
        self.next_n = 1
        self.host_seq = 0
        self._win = {}
        self._win_ids = {}
        self._win_rid = {}
        self._order = []
        self._resolved_since_compact = 0
        self._redeemed_ids = []

    def _replay(self, off, raw):
        try:
            self._apply(cbor.loads(raw), off)
        except (ValueError, KeyError, TypeError, IndexError):
            # Unreadable or of a newer format: keep going, count it for the technician.
            self.bad_records += 1

    def _apply(self, rec, off):
        if not isinstance(rec, dict):
            raise ValueError("unknown record")
        r = rec["r"]
        v = rec.get("v")
        if v != RECORD_VERSION and not (r == "snap" and v == SNAP_VERSION):
            raise ValueError("unknown record")
        if "hs" in rec and rec["hs"] > self.host_seq:
            self.host_seq = rec["hs"]
        kind = self.kinds.get(r)
        if kind is not None:
            rid = rec[kind.key]
            if self._pending_no(rid, kind) is not None or self._waiting_pair(rid) is not None:
                raise ValueError("duplicate record")
            self._add_pending(kind, rec, off)
        elif r == "result":
            self._answered(SALE, rec["cid"], rec, off)
        elif r == "answer":
            kind = self.kinds[rec["k"]]
            answer = dict(rec["a"])
            answer["at"] = rec["at"]
            self._answered(kind, rec["id"], answer, off)
        elif r == "ack":
            self._drop_notice(rec.get("id", rec.get("cid")))
        elif r == "redeemed":
            self._redeemed(rec["cti"], rec["at"], rec.get("rid"))
        elif r == "snap":
            rows = rec["rows"] if v == SNAP_VERSION else rec["ledger"]
            if rec.get("part", 0) == 0:
                self.ledger.restore(rows)
            else:
                self.ledger.add_rows(rows)
            if rec["next_n"] > self.next_n:
                self.next_n = rec["next_n"]
        else:
            raise ValueError("unknown record")

    def _add_pending(self, kind, rec, off, rid4=None):
        if rid4 is None:
            rid4 = id4(rec[kind.key])
        self.index.add(rid4, off, rec.get("amt", 0) if kind is SALE else 0,
                       rec.get("at", 0), self._code[kind.record])
        for c in rec.get("cpn", ()):
            self.ledger.add_local(c["cti"], c["exp"])
        if "mcti" in rec:
            self.ledger.add_local(rec["mcti"], rec.get("mexp"))
        n = rec.get("n")
        if n is not None and n >= self.next_n:
            self.next_n = n + 1
        if not self._opening:
            for fn, _, _, _ in self._listeners:
                if fn is not None:
                    fn(kind, rec)

    def _pending_no(self, rid, kind, rid4=None):
        """The entry number of the pending record of `kind` with id rid, or None."""
        no = self._win_ids.get(rid)
        if no is not None and self.index.is_live(no):
            return no
        needle = None
        for no in self.index.find(rid4 or id4(rid), self._code[kind.record]):
            rec = self._win.get(no)
            if rec is not None:
                if rec[kind.key] == rid:
                    return no
                continue
            raw = self.log.read_at(self.index.offset(no))
            if needle is None:
                needle = cbor.dumps(rid)
            if raw is not None and needle in raw and cbor.loads(raw).get(kind.key) == rid:
                return no
        return None

    def _answered(self, kind, rid, answer, ans_off):
        """Applies an answer (on flash at ans_off) to the pending (or waiting) record with
        that id; returns the record (None while opening, unless it goes on waiting)."""
        no = self._pending_no(rid, kind)
        rec = None
        if no is not None:
            rec_off = self.index.offset(no)
            rec = self._win.pop(no, None)
            self._win_ids.pop(rid, None)
            self._win_rid.pop(no, None)
            self.index.remove(no)
            if rec is None and (not self._opening or not kind.final(answer)):
                rec = self._read(rec_off)
        else:
            pair = self._waiting_pair(rid)
            if pair is None:
                raise KeyError("no record waits for this answer")
            self.waiting.remove(pair)
            rec = pair[0]
            rec_off = self._waiting_at.pop(rid)[0]
        self._retry.pop(rid, None)
        if not kind.final(answer):
            self.waiting.append([rec, answer])
            self._waiting_at[rid] = [rec_off, ans_off]
            return rec
        bad = kind.bad(answer)
        self._history.append([rec_off, ans_off, rid, bad])
        if len(self._history) > self.retention:
            self._history.pop(0)
        if bad:
            self._notices += _notice(rid, rec_off, ans_off)
        self._resolved_since_compact += 1
        if not self._opening:
            for _, fn, _, _ in self._listeners:
                if fn is not None:
                    fn(kind, rec, answer)
        return rec

    def _waiting_pair(self, rid):
        for pair in self.waiting:
            if self.id_of(pair[0]) == rid:
                return pair
        return None

    def _replay_listeners(self):
        self._replay_answered()
        wanted = [x for x in self._listeners if x[0] is not None and x[3]]
        if not wanted:
            return
        names = []
        for x in wanted:
            if x[2] is None:
                names = None
                break
            names.extend(x[2])
        idx = self.index
        nos = (no for no in idx.each()
               if names is None or self._codes[idx.kind(no)].record in names)
        # waiting and pending records in commit (journal) order
        waiting = sorted((at[0], pair) for pair, at in
                         [(p, self._waiting_at[self.id_of(p[0])]) for p in self.waiting])

        def tell(rec):
            kind = self.kinds[rec["r"]]
            for fn, _, kinds, _ in wanted:
                if kinds is None or kind.record in kinds:
                    fn(kind, rec)

        for no, rec in self._records(nos):
            off = self.index.offset(no)
            while waiting and waiting[0][0] < off:
                tell(waiting.pop(0)[1][0])
            tell(rec)
        for _, pair in waiting:
            tell(pair[0])

    def _replay_answered(self):
        """The answered records the journal still holds, to the listeners that replay."""
        wanted = [x for x in self._listeners if x[3] and (x[0] is not None or x[1] is not None)]
        if not wanted:
            return
        told = set()
        for kind, rec, answer in self.history() + self.notices():
            rid = rec[kind.key]
            if rid in told:
                continue
            told.add(rid)
            for on_commit, on_resolve, kinds, _ in wanted:
                if kinds is not None and kind.record not in kinds:
                    continue
                if on_commit is not None:
                    on_commit(kind, rec)
                if on_resolve is not None:
                    on_resolve(kind, rec, answer)

    # -- checkpoint ---------------------------------------------------------------------------
    def _from_checkpoint(self):
        f = self.log.fs.open_read(self.checkpoint_path)
        if f is None:
            return False
        try:
            rd = checkpoint.Reader(f)
            meta = rd.meta()
            codes = []
            for name in meta["kinds"]:
                kind = self.kinds.get(name)
                if kind is None:
                    raise checkpoint.CheckpointError("a kind this firmware lacks")
                codes.append(self._code[name])
            if self.log.prefix_crc(meta["size"]) != meta["crc"]:
                raise checkpoint.CheckpointError("the journal is not the one checkpointed")
            self._reset()
            # Every page is allocated first, back to back, then filled: on MicroPython,
            # long-lived blocks made between short-lived ones would leave the heap in holes.
            idx = self.index
            n_all = meta["n"]
            per = pending.PER_PAGE
            pages = [(bytearray(pending.PAGE), bytearray(per * 4))
                     for _ in range((n_all + per - 1) // per)]
            rows = meta["m"] * 16
            lpages = [bytearray(min(1024, rows - i)) for i in range(0, rows, 1024)]
            for i in range(len(pages)):  # pages of entries, each followed by its id4s
                n = min(n_all - i * per, per)
                page, ids = pages[i]
                rd.take_into(page, n * pending.ENTRY)
                for k in range(n):
                    j = k * pending.ENTRY + pending.KIND
                    page[j] = codes[page[j]]
                rd.take_into(ids, n * 4)
                idx.load_page(page, ids, n)
            del pages
            for lp in lpages:
                rd.take_into(lp, len(lp))
                self.ledger.load_page(lp)
            del lpages
            self._notices = bytearray(rd.take(meta["k"] * _NOTICE))
            rd.finish()
            self.next_n = meta["next_n"]
            self.host_seq = meta["hs"]
            self._resolved_since_compact = meta["since"]
            rids = meta["rids"]
            self._redeemed_ids = [rids[i:i + 16] for i in range(0, len(rids), 16)]
            self._history = [list(h) for h in meta["hist"]]
            for rec_off, ans_off in meta["waiting"]:
                rec = self._read(rec_off)
                answer = self._answer_of(cbor.loads(self.log.read_at(ans_off)))
                self.waiting.append([rec, answer])
                self._waiting_at[self.id_of(rec)] = [rec_off, ans_off]
        except (checkpoint.CheckpointError, ValueError, KeyError, TypeError, IndexError,
                StorageError):
            self._reset()
            return False
        finally:
            f.close()
        self.booted_from = "checkpoint"
        self.log.scan_from(meta["size"], self._replay, meta["crc"])
        return True

    def _answer_of(self, rec):
        if rec["r"] == "result":
            return rec
        answer = dict(rec["a"])
        answer["at"] = rec["at"]
        return answer

    def tidy(self):
        """What the agent's maintenance does between records, cheap when there is nothing:
        the ledger's latest uses merged into its sorted rows (a commit only notes them)."""
        self.ledger.merge()

    def needs_checkpoint(self, now_ms):
        """True when the agent's maintenance should write a checkpoint now (never inside a
        commit: the clerk does not wait for it)."""
        n = self._since_checkpoint
        if n < CHECKPOINT_EVERY or self.log.needs_repair():
            return False
        last = self._checkpoint_ms
        return n >= CHECKPOINT_MAX or last is None or now_ms - last >= CHECKPOINT_GAP_MS

    def checkpoint(self, now_ms=0):
        """Writes the checkpoint of the state as it is now (the journal's whole length)."""
        if self.log.needs_repair() or self._group:
            return False
        names = [k.record for k in self._codes]
        meta = {"v": checkpoint.VERSION, "size": self.log.size,
                "crc": self.log.crc & 0xFFFFFFFF, "kinds": names, "n": self.index.live,
                "m": len(self.ledger), "k": len(self._notices) // _NOTICE,
                "next_n": self.next_n, "hs": self.host_seq,
                "since": self._resolved_since_compact, "rids": b"".join(self._redeemed_ids),
                "waiting": list(self._waiting_at.values()), "hist": self._history}
        self.log.fs.write_atomic(self.checkpoint_path, checkpoint.chunks(
            meta, (self.index.chunks(), self.ledger.chunks(), (bytes(self._notices),))))
        self._since_checkpoint = 0
        self._checkpoint_ms = now_ms
        return True

    def _wrote(self, n):
        self._since_checkpoint += n

    def _take_remap(self):
        """After the log was rewritten without damage, the offsets kept move with it."""
        remap = self.log.remap
        if remap is None:
            return
        self.log.remap = None
        new = remap.new_offset
        idx = self.index
        for no in idx.each():
            idx.set_offset(no, new(idx.offset(no)))
        for h in self._history:
            h[0], h[1] = new(h[0]), new(h[1])
        for at in self._waiting_at.values():
            at[0], at[1] = new(at[0]), new(at[1])
        n = self._notices
        for i in range(0, len(n), _NOTICE):
            r, a = struct.unpack_from("<II", n, i + 16)
            struct.pack_into("<II", n, i + 16, new(r), new(a))
        self._notice_cache = {}

    # -- reading records back -----------------------------------------------------------------
    def _read(self, off):
        raw = self.log.read_at(off)
        if raw is None:
            raise StorageError("no record at %d" % off)
        return cbor.loads(raw)

    def _record(self, no):
        rec = self._win.get(no)
        return rec if rec is not None else self._read(self.index.offset(no))

    def _records(self, nos):
        """(no, record) for entry numbers in journal order, read in one forward pass."""
        reader = None
        try:
            for no in nos:
                rec = self._win.get(no)
                if rec is None:
                    if reader is None:
                        reader = self.log.reader()
                    rec = cbor.loads(reader.payload(self.index.offset(no)))
                yield no, rec
        finally:
            if reader is not None:
                reader.close()

    # -- what the clerk and the console see ----------------------------------------------------
    def count(self):
        """Records not yet answered, every kind (what `queue` in hello and status counts)."""
        return self.index.live

    def totals(self):
        """(count, amount, oldest_at) of the unresolved charges: what offline limits weigh."""
        idx = self.index
        return idx.sales, idx.amount, idx.oldest_sale_at()

    def find(self, rid):
        """(record, answer or None) for an id pending, waiting or in the journal's history
        (read from flash)."""
        no = self._win_ids.get(rid)
        if no is not None and no in self._win:
            return self._win[no], None
        pair = self._waiting_pair(rid)
        if pair is not None:
            return pair[0], pair[1]
        needle = cbor.dumps(rid)
        found = [None, None]

        def look(off, raw):
            if needle not in raw:
                return
            try:
                rec = cbor.loads(raw)
            except ValueError:
                return
            r = rec.get("r")
            kind = self.kinds.get(r)
            if kind is not None and rec.get(kind.key) == rid:
                found[0] = rec
                found[1] = None
            elif found[0] is not None and r == "result" and rec.get("cid") == rid:
                found[1] = rec
            elif found[0] is not None and r == "answer" and rec.get("id") == rid:
                found[1] = self._answer_of(rec)

        self.log.each(look)
        if found[0] is None:
            return None
        return found[0], found[1]

    @property
    def resolved(self):
        """[rec, final answer] of every answered record the journal still holds, in the order
        they were answered (read from flash: tests and tools; the agent keeps only offsets)."""
        recs = {}
        out = []
        pend = self.index.each()  # the pending records' frames are skipped, not decoded
        nxt = [self._next_offset(pend)]

        def look(off, raw):
            while nxt[0] is not None and nxt[0] < off:
                nxt[0] = self._next_offset(pend)
            if nxt[0] == off:
                nxt[0] = self._next_offset(pend)
                return
            try:
                rec = cbor.loads(raw)
            except ValueError:
                return
            if not isinstance(rec, dict):
                return
            r = rec.get("r")
            kind = self.kinds.get(r)
            if kind is not None:
                recs[rec.get(kind.key)] = rec
                return
            if r == "result":
                kind, rid, answer = SALE, rec.get("cid"), rec
            elif r == "answer" and rec.get("k") in self.kinds:
                kind, rid, answer = self.kinds[rec["k"]], rec.get("id"), self._answer_of(rec)
            else:
                return
            if rid in recs and kind.final(answer):
                out.append([recs.pop(rid), answer])

        self.log.each(look)
        return out

    def _next_offset(self, nos):
        for no in nos:
            return self.index.offset(no)
        return None

    def history(self):
        """[(kind, rec, answer)] of the last `retention` answered records, oldest first."""
        out = []
        for rec_off, ans_off, _, _ in self._history:
            rec = self._read(rec_off)
            out.append((self.kinds[rec["r"]], rec, self._answer_of(self._read(ans_off))))
        return out

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

    def _append(self, payloads):
        off = self.log.append(payloads)
        self._take_remap()
        return off

    def commit(self, rec):
        """Makes a record durable (one append, one sync), then counts what it carries."""
        kind = self.kinds.get(rec.get("r"))
        if kind is None:
            raise QueueError("no kind %r" % (rec.get("r"),))
        rid = rec[kind.key]
        rid4 = id4(rid)  # once: the duplicate check and the index entry both need it
        if self._pending_no(rid, kind, rid4) is not None or self._waiting_pair(rid) is not None:
            raise QueueError("id already committed")
        off = self._append([kind.encode(rec)])
        self._add_pending(kind, rec, off, rid4)
        self._wrote(1)

    # -- forwarding ---------------------------------------------------------------------------
    def due(self, now_ms):
        """Records to (re)send now: the oldest `window` unanswered whose timer has run out."""
        win = self._win
        order = self._order
        if len(order) != len(win):
            order = self._order = [no for no in order if no in win]  # drop answered ones
        if len(order) < self.window:
            # the window moved on: read the records that entered it
            start = order[-1] + 1 if order else None
            new = self.index.numbers(self.window - len(order), start)
            for no, rec in self._records(new):
                rid = self.id_of(rec)
                win[no] = rec
                self._win_ids[rid] = no
                self._win_rid[no] = rid
                order.append(no)
        retry = self._retry
        ids = self._win_rid
        out = []
        for no in order:
            r = retry.get(ids[no])
            if r is None or now_ms - r[1] >= 0:
                out.append(win[no])
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

    def unsent(self, rid):
        """A send that did not leave (the link refused it): due again at once."""
        r = self._retry.get(rid)
        if r is not None:
            if r[0] <= 1:
                del self._retry[rid]
            else:
                r[0] -= 1
                r[1] = 0

    def link_up(self):
        """After a reconnect every unanswered record in the window goes out again at once, and
        the waiting ones once more (the host answers a repeat with where it stands)."""
        self._retry = {}

    def waiting_due(self):
        return [pair[0] for pair in self.waiting]

    def begin_group(self):
        """Answers and host redemptions from here to end_group() are written together."""
        if self._group is None:
            self._group = []
            self._group_ids = {}

    def end_group(self):
        """One append and one sync for the group, then its effects; nothing of it is applied
        when the write fails (StorageError): the host answers again when asked again."""
        group = self._group
        self._group = None
        self._group_ids = None
        if not group:
            return 0
        off = self._append([g[0] for g in group])
        for payload, apply in group:
            apply(off)
            off += _HDR + len(payload)
        self._wrote(len(group))
        return len(group)

    def _durable(self, payload, apply, rid=None):
        """Writes one record now, or stages it in the open group."""
        if self._group is not None:
            self._group.append([payload, apply])
            if rid is not None:
                self._group_ids[rid] = True
            return
        apply(self._append([payload]))
        self._wrote(1)

    def on_answer(self, mtype, body, now, hs=0):
        """Records an answer durably and applies it; returns the record or None (a repeat, or a
        stranger: counted in dup_results). In a group the answer takes effect at end_group()."""
        kind = self._by_answer.get(mtype)
        if kind is None:
            raise QueueError("no kind answered by %s" % mtype)
        rid = body[kind.key]
        if self._group is not None and rid in self._group_ids:
            self.dup_results += 1
            return None
        waiting = self._waiting_pair(rid)
        no = None if waiting is not None else self._pending_no(rid, kind)
        if no is None and waiting is None:
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
        out = [None]

        def apply(off):
            if hs > self.host_seq:
                self.host_seq = hs
            out[0] = self._answered(kind, rid, answer, off)

        self._durable(cbor.dumps(rec), apply, rid)
        if self._group is not None:
            return waiting[0] if waiting is not None else self._record(no)
        return out[0]

    def on_result(self, body, now, hs=0):
        return self.on_answer("charge_result", body, now, hs)

    # -- store-wide redemptions and notices ---------------------------------------------------
    def add_redeemed(self, ctis, now, hs=0, rid=None):
        """Coupons another terminal redeemed; rid (the host's id of that redemption) makes a
        repeat harmless. Returns False for a repeat."""
        if rid is not None and (rid in self._redeemed_ids or
                                (self._group is not None and rid in self._group_ids)):
            self.dup_results += 1
            return False
        rec = {"r": "redeemed", "v": RECORD_VERSION, "cti": ctis, "at": now, "hs": hs}
        if rid is not None:
            rec["rid"] = rid

        def apply(off):
            if hs > self.host_seq:
                self.host_seq = hs
            self._redeemed(ctis, now, rid)

        self._durable(cbor.dumps(rec), apply, rid)
        return True

    def _redeemed(self, ctis, now, rid):
        for cti in ctis:
            self.ledger.add_host(cti, now)
        if rid is not None:
            self._redeemed_ids.append(rid)
            if len(self._redeemed_ids) > RECENT_REDEEMED:
                self._redeemed_ids.pop(0)

    def notices(self):
        """Bad answers not yet acknowledged, oldest first: [(kind, rec, answer)] (read from
        flash; the first few are kept)."""
        out = []
        n = self._notices
        for i in range(0, len(n), _NOTICE):
            rec_off, ans_off = struct.unpack_from("<II", n, i + 16)
            got = self._notice_cache.get(rec_off)
            if got is None:
                rec = self._read(rec_off)
                got = (self.kinds[rec["r"]], rec, self._answer_of(self._read(ans_off)))
                if len(self._notice_cache) < 8:
                    self._notice_cache[rec_off] = got
            out.append(got)
        return out

    def declined(self):
        """Declined charges not yet acknowledged: [(sale, result)]."""
        return [(p[1], p[2]) for p in self.notices() if p[0] is SALE]

    def _notice_at(self, rid):
        n = self._notices
        for i in range(0, len(n), _NOTICE):
            if n[i:i + 16] == rid:
                return i
        return -1

    def _drop_notice(self, rid):
        i = self._notice_at(rid)
        if i >= 0:
            self._notice_cache.pop(struct.unpack_from("<I", self._notices, i + 16)[0], None)
            self._notices[i:i + _NOTICE] = b""

    def acknowledge(self, rid, who, now):
        if self._notice_at(rid) < 0:
            raise QueueError("no unacknowledged notice with that id")
        self._append([cbor.dumps({"r": "ack", "v": RECORD_VERSION, "id": rid, "by": who,
                                  "at": now})])
        self._drop_notice(rid)
        self._wrote(1)

    # -- compaction ---------------------------------------------------------------------------
    def needs_compaction(self):
        # Compaction rewrites every pending record: wait until the history it drops outweighs
        # them, so a long offline backlog is not rewritten again and again while it drains.
        n = self._resolved_since_compact
        return n > self.retention and n > self.index.live

    def compact(self, now):
        """Rewrites the journal as: retained history, unacked notices, acks for the notices
        kept, the waiting records, the pending records in commit order, then the snapshot;
        records are copied from the old journal as they are (streamed, never all in RAM).

        The snapshot comes last and replaces the ledger on replay, so the records kept before
        it are not counted twice and the dropped ones are not forgotten.
        """
        if self._group:
            raise QueueError("compaction inside an answer group")
        self.ledger.prune(now)
        hist = self._history[-self.retention:] if self.retention else []
        kept = [h[0] for h in hist]
        older = []
        n = self._notices
        for i in range(0, len(n), _NOTICE):
            rec_off, ans_off = struct.unpack_from("<II", n, i + 16)
            if rec_off not in kept:
                older.append([rec_off, ans_off, bytes(n[i:i + 16]), True])
        keep = older + hist
        unacked = self.unacked
        moved = {}        # old offset -> new offset (history, notices, waiting)
        region = [0, 0]   # where the pending records start in the new journal, how many
        log = self.log

        def image():
            at = [len(LOG_MAGIC)]
            yield LOG_MAGIC

            def copy(off):
                raw = log.read_at(off)
                if raw is None:
                    raise StorageError("no record at %d" % off)
                moved[off] = at[0]
                at[0] += _HDR + len(raw)
                return frame(raw)

            for h in keep:
                yield copy(h[0])
                yield copy(h[1])
            for h in keep:
                if h[3] and h[2] not in unacked:
                    c = frame(cbor.dumps({"r": "ack", "v": RECORD_VERSION, "id": h[2],
                                          "by": "", "at": now}))
                    at[0] += len(c)
                    yield c
            for w in self._waiting_at.values():
                yield copy(w[0])
                yield copy(w[1])
            region[0] = at[0]
            for _, rec in self._records_raw(self.index.each()):
                region[1] += 1
                at[0] += len(rec)
                yield rec
            part = 0
            rows = b""
            for chunk in self.ledger.chunks():
                rows += chunk
                while len(rows) >= SNAP_ROWS * 16:
                    c = self._snap(part, rows[:SNAP_ROWS * 16], now)
                    at[0] += len(c)
                    yield c
                    part += 1
                    rows = rows[SNAP_ROWS * 16:]
            if rows or part == 0:
                yield self._snap(part, rows, now)

        log.replace_chunks(image())
        for h in keep:
            h[0], h[1] = moved[h[0]], moved[h[1]]
        for w in self._waiting_at.values():
            w[0], w[1] = moved[w[0]], moved[w[1]]
        for i in range(0, len(n), _NOTICE):
            rec_off, ans_off = struct.unpack_from("<II", n, i + 16)
            struct.pack_into("<II", n, i + 16, moved[rec_off], moved[ans_off])
        # the pending records lie back to back from region[0] on, in index order: their new
        # offsets come from reading the frame headers there (no list of them in RAM)
        reader = log.reader()
        try:
            off = region[0]
            for no in self.index.each():
                self.index.set_offset(no, off)
                off += len(reader.frame(off))
        finally:
            reader.close()
        self._history = hist
        self._notice_cache = {}
        self._resolved_since_compact = 0
        # A boot replays the new journal whole until a checkpoint follows: one is due when
        # that replay would be long (a backlog), not after every compaction of a few records.
        self._since_checkpoint = 2 * len(keep) + 2 * len(self._waiting_at) + region[1]
        self._checkpoint_ms = None

    def _snap(self, part, rows, now):
        snap = {"r": "snap", "v": SNAP_VERSION, "part": part, "rows": bytes(rows),
                "next_n": self.next_n, "at": now}
        if part == 0:
            snap["hs"] = self.host_seq
        return frame(cbor.dumps(snap))

    def _records_raw(self, nos):
        """(no, frame bytes) of pending entries in journal order, one forward pass."""
        reader = self.log.reader()
        try:
            for no in nos:
                yield no, reader.frame(self.index.offset(no))
        finally:
            reader.close()


def _notice(rid, rec_off, ans_off):
    return bytes(rid[:16]) + b"\x00" * (16 - min(len(rid), 16)) + \
        struct.pack("<II", rec_off, ans_off)
