# Coupon ledger: how many times each coupon serial (cti) has been used, here and store-wide.
#
# In memory only: it is rebuilt at boot from the charge queue's journal (sale records carry their
# redemptions; host-reported redemptions and compaction snapshots are journal records too), or
# read back from the queue's checkpoint, so a redemption is durable exactly when its sale is.
# Entries are pruned when the coupon expires, so the size follows live coupons, not history.
#
# Compact (docs/formats.md, "Ledger rows"): one 16-byte row per coupon, sorted, in pages of up
# to 2 KiB (MicroPython's heap is never compacted: small blocks fit where one large one may not):
#   row = key (first 8 bytes of SHA-256 of the cti) | local uses u16 | host uses u16 | exp u32
# exp 0 = unknown (kept). Two serials whose keys collide (2^-64 for a pair) would share their
# count: a coupon refused as already used, never a coupon used twice. Counts stop at 65 535.
import hashlib
import struct

# Host-reported redemptions carry no expiry; keep them this long (longer than any campaign we
# expect) unless a local scan tells us the real expiry.
UNKNOWN_EXP_KEEP_S = 400 * 86400
ROW = 16
SPLIT = 128          # rows in a page before it is split in two
_FMT = "<8sHHI"
_MAX = 0xFFFF


def key_of(cti):
    return hashlib.sha256(bytes(cti)).digest()[:8]


RECENT_MAX = 64      # uses noted but not yet merged into the rows


class Ledger:
    def __init__(self):
        self._pages = []   # bytearrays of sorted rows
        self._firsts = []  # first key of each page
        self._n = 0
        # key -> [local, host, exp]: what a sale adds is noted here (a dict insert: the clerk's
        # commit does not wait for the sorted insert) and merged into the rows by merge(),
        # which the agent's maintenance calls, or when RECENT_MAX are waiting
        self._recent = {}

    def __len__(self):
        self.merge()
        return self._n

    def merge(self):
        """Moves the uses noted lately into the sorted rows."""
        if self._recent:
            recent = self._recent
            self._recent = {}
            for key, (local, host, exp) in recent.items():
                self._put(key, local, host, exp)

    def _locate(self, key):
        """(page index, row index, found); an insert goes before that row."""
        pages = self._pages
        if not pages:
            return 0, 0, False
        lo, hi = 0, len(pages) - 1
        firsts = self._firsts
        while lo < hi:  # the last page whose first key <= key
            mid = (lo + hi + 1) // 2
            if firsts[mid] <= key:
                lo = mid
            else:
                hi = mid - 1
        page = pages[lo]
        a, b = 0, len(page) // ROW
        while a < b:
            m = (a + b) // 2
            k = bytes(page[m * ROW:m * ROW + 8])
            if k == key:
                return lo, m, True
            if k < key:
                a = m + 1
            else:
                b = m
        return lo, a, False

    def _get(self, key):
        p, i, found = self._locate(key)
        if not found:
            return None
        return struct.unpack_from(_FMT, self._pages[p], i * ROW)

    def uses(self, cti):
        key = key_of(cti)
        row = self._get(key)
        n = 0 if row is None else row[1] + row[2]
        more = self._recent.get(key)
        return n if more is None else n + more[0] + more[1]

    def _put(self, key, local, host, exp):
        """Adds local and host uses to a row (made when missing); exp raised, never lowered
        (0 = unknown)."""
        p, i, found = self._locate(key)
        if found:
            _, l0, h0, e0 = struct.unpack_from(_FMT, self._pages[p], i * ROW)
            if exp and (not e0 or exp > e0):
                e0 = exp
            struct.pack_into(_FMT, self._pages[p], i * ROW, key, min(l0 + local, _MAX),
                             min(h0 + host, _MAX), e0)
            return
        row = struct.pack(_FMT, key, min(local, _MAX), min(host, _MAX), exp or 0)
        if not self._pages:
            self._pages.append(bytearray(row))
            self._firsts.append(key)
        else:
            page = self._pages[p]
            page[i * ROW:i * ROW] = row
            if i == 0:
                self._firsts[p] = key
            if len(page) >= SPLIT * ROW:
                half = (len(page) // ROW // 2) * ROW
                tail = page[half:]
                self._pages[p] = page[:half]
                self._pages.insert(p + 1, tail)
                self._firsts.insert(p + 1, bytes(tail[:8]))
        self._n += 1

    def add_local(self, cti, exp, n=1):
        key = key_of(cti)
        e = self._recent.get(key)
        if e is None:
            if len(self._recent) >= RECENT_MAX:
                self.merge()
            self._recent[key] = [n, 0, exp or 0]
        else:
            e[0] += n
            if exp and exp > e[2]:
                e[2] = exp

    def add_host(self, cti, now):
        """A redemption the host saw at another terminal of the store."""
        self.merge()
        key = key_of(cti)
        row = self._get(key)
        self._put(key, 0, 1, now + UNKNOWN_EXP_KEEP_S if row is None or not row[3] else 0)

    def prune(self, now):
        """Forgets coupons that have expired (exp is exclusive): they can never verify again."""
        self.merge()
        dead = 0
        pages = []
        for page in self._pages:
            kept = bytearray()
            for i in range(len(page) // ROW):
                exp = struct.unpack_from("<I", page, i * ROW + 12)[0]
                if exp and exp <= now:
                    dead += 1
                else:
                    kept += page[i * ROW:(i + 1) * ROW]
            if kept:
                pages.append(kept)
        self._pages = pages
        self._firsts = [bytes(p[:8]) for p in pages]
        self._n -= dead
        return dead

    def chunks(self):
        """The rows, sorted, as bytes chunks (snapshots and checkpoints)."""
        self.merge()
        for page in self._pages:
            yield bytes(page)

    def restore(self, rows):
        """Replaces the whole ledger with (the first part of) a snapshot."""
        self._pages = []
        self._firsts = []
        self._n = 0
        self._recent = {}
        self.add_rows(rows)

    def add_rows(self, rows):
        """Adds a snapshot's rows: packed bytes (16 per row) or, from format version 1
        journals, [[cti, local, host, exp], ...]."""
        self.merge()
        if isinstance(rows, (bytes, bytearray)):
            if not self._pages or (rows and bytes(rows[:8]) > self._last_key()):
                # sorted rows above all held (a snapshot's parts, in order): pages as they are
                for i in range(0, len(rows), SPLIT // 2 * ROW):
                    self.load_page(rows[i:i + SPLIT // 2 * ROW])
                return
            for i in range(len(rows) // ROW):
                key, local, host, exp = struct.unpack_from(_FMT, rows, i * ROW)
                self._put(key, local, host, exp)
            return
        for cti, local, host, exp in rows:
            self._put(key_of(cti), local, host, exp or 0)

    def _last_key(self):
        page = self._pages[-1]
        return bytes(page[len(page) - ROW:len(page) - ROW + 8])

    def load_page(self, data):
        """Appends sorted packed rows (a checkpoint's, in order, above every row held); a
        bytearray is kept as it is."""
        self.merge()
        if data:
            self._pages.append(data if type(data) is bytearray else bytearray(data))
            self._firsts.append(bytes(data[:8]))
            self._n += len(data) // ROW
