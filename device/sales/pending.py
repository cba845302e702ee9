# The pending records in RAM (docs/formats.md, "Pending index"): one 16-byte entry per record
# not yet answered, in commit order, in pages of 800 bytes, and the first 4 bytes of each
# record's id in a 200-byte page beside it (MicroPython never compacts its heap: many small
# blocks fit where one large one may not, and nothing here grows in place). An answer (or a
# commit checking for a duplicate) finds its candidates with a search in C (bytearray.find)
# per page and confirms on flash; a bit per id prefix (a 4 KiB filter) skips that search for
# nearly every new id. The records themselves stay on flash; an entry says where (journal
# offset) and what the offline limits weigh (amount, time, kind).
#
#   entry = offset u32 | amount u32 | at u32 | kind u8 | live u8 | 2 spare
#
# Entries are numbered from 0 in commit order for the life of the index; answering one clears
# its `live` byte, and a page whose entries are all answered is dropped from the front.
import struct

ENTRY = 16
PER_PAGE = 50
PAGE = ENTRY * PER_PAGE
_FMT = "<IIIBB"
KIND = 12      # where an entry's kind byte lies
_LIVE = 13     # where an entry's live byte lies
SALE_CODE = 0  # kind code of sales (the queue registers the sale kind first)
FILTER_BITS = 32768


def _bit(b0, b1):
    return ((b0 << 8) | b1) & (FILTER_BITS - 1)


def id4(rid):
    """The first 4 bytes of an id (bytes, or text as UTF-8), zero-padded."""
    if type(rid) is bytes and len(rid) >= 4:
        return rid[:4]  # a cid: the common case first
    if not isinstance(rid, (bytes, bytearray)):
        rid = str(rid).encode()
    return bytes(rid[:4]) + b"\x00" * (4 - min(len(rid), 4))


class PendingIndex:
    def __init__(self):
        self.pages = []      # bytearray(PAGE) each
        self.ids = []        # beside each page: bytearray(PER_PAGE * 4), its entries' id4s
        self._filter = bytearray(FILTER_BITS // 8)  # a bit set for every id4 added
        self._added = 0      # entries added since the filter was last rebuilt
        self.live_in = []    # live entries per page
        self.first = 0       # number of the first entry of pages[0]
        self.end = 0         # number the next entry gets
        self.live = 0        # entries not answered
        self.sales = 0       # of them, sales
        self.amount = 0      # the sales' amount

    def __len__(self):
        return self.live

    def add(self, rid4, off, amt, at, kind):
        """Appends an entry; returns its number."""
        no = self.end
        slot = no - self.first - (len(self.pages) - 1) * PER_PAGE
        if not self.pages or slot >= PER_PAGE:
            self.pages.append(bytearray(PAGE))
            self.ids.append(bytearray(PER_PAGE * 4))
            self.live_in.append(0)
            slot = 0
        struct.pack_into(_FMT, self.pages[-1], slot * ENTRY, off, amt, at, kind, 1)
        self.ids[-1][slot * 4:slot * 4 + 4] = rid4
        self._mark(rid4[0], rid4[1])
        self.live_in[-1] += 1
        self.end = no + 1
        self.live += 1
        if kind == SALE_CODE:
            self.sales += 1
            self.amount += amt
        return no

    def _at(self, no):
        i = no - self.first
        return self.pages[i // PER_PAGE], (i % PER_PAGE) * ENTRY

    def get(self, no):
        """(offset, amount, at, kind, live) of entry `no`."""
        page, j = self._at(no)
        return struct.unpack_from(_FMT, page, j)

    def is_live(self, no):
        if no < self.first or no >= self.end:
            return False
        page, j = self._at(no)
        return page[j + _LIVE] == 1

    def offset(self, no):
        page, j = self._at(no)
        return struct.unpack_from("<I", page, j)[0]

    def set_offset(self, no, off):
        page, j = self._at(no)
        struct.pack_into("<I", page, j, off)

    def kind(self, no):
        page, j = self._at(no)
        return page[j + KIND]

    def remove(self, no):
        """Marks entry `no` answered; drops leading pages with nothing live."""
        page, j = self._at(no)
        if page[j + _LIVE] != 1:
            return
        page[j + _LIVE] = 0
        _, amt, _, kind, _ = struct.unpack_from(_FMT, page, j)
        self.live -= 1
        if kind == SALE_CODE:
            self.sales -= 1
            self.amount -= amt
        self.live_in[(no - self.first) // PER_PAGE] -= 1
        while self.pages and self.live_in[0] == 0 and \
                (len(self.pages) > 1 or self.end - self.first >= PER_PAGE):
            self.pages.pop(0)
            self.ids.pop(0)
            self.live_in.pop(0)
            self.first += PER_PAGE

    def each(self, start=None):
        """The live entry numbers in commit order, one at a time (no list: a long queue's
        would be a large block)."""
        no = self.first if start is None or start < self.first else start
        while no < self.end:
            p = (no - self.first) // PER_PAGE
            if not self.live_in[p]:
                no = self.first + (p + 1) * PER_PAGE
                continue
            page = self.pages[p]
            if page[((no - self.first) % PER_PAGE) * ENTRY + _LIVE] == 1:
                yield no
            no += 1

    def numbers(self, most=None, start=None):
        """The live entry numbers in commit order (the first `most` of them, from entry number
        `start` on)."""
        out = []
        no = self.first
        if start is not None and start > no:
            no = start
        end = self.end
        while no < end:
            i = no - self.first
            p = i // PER_PAGE
            if not self.live_in[p]:
                no = self.first + (p + 1) * PER_PAGE
                continue
            page = self.pages[p]
            k = i % PER_PAGE
            stop = min(PER_PAGE, end - self.first - p * PER_PAGE)
            while k < stop:
                if page[k * ENTRY + _LIVE] == 1:
                    out.append(no)
                    if most is not None and len(out) >= most:
                        return out
                k += 1
                no += 1
        return out

    def oldest_sale_at(self):
        """`at` of the first live sale in commit order, or None."""
        if not self.sales:
            return None
        no = self.first
        for page in self.pages:
            for k in range(min(PER_PAGE, self.end - no)):
                j = k * ENTRY
                if page[j + _LIVE] == 1 and page[j + KIND] == SALE_CODE:
                    return struct.unpack_from("<I", page, j + 8)[0]
            no += PER_PAGE
        return None

    def _mark(self, b0, b1):
        b = _bit(b0, b1)
        self._filter[b >> 3] |= 1 << (b & 7)
        self._added += 1
        if self._added > 4 * (self.live + 1024):
            self._rebuild_filter()  # answered ids still set their bits: start again

    def _rebuild_filter(self):
        f = self._filter
        for i in range(len(f)):
            f[i] = 0
        self._added = 0
        for p in range(len(self.pages)):
            page = self.pages[p]
            ids = self.ids[p]
            for k in range(PER_PAGE):
                if page[k * ENTRY + _LIVE] == 1:
                    b = _bit(ids[k * 4], ids[k * 4 + 1])
                    f[b >> 3] |= 1 << (b & 7)
                    self._added += 1

    def find(self, rid4, kind):
        """Numbers of the live entries of `kind` whose id starts with rid4 (candidates: the
        caller confirms on flash)."""
        out = []
        b = _bit(rid4[0], rid4[1])
        if not self._filter[b >> 3] & (1 << (b & 7)):
            return out
        no = self.first
        for p in range(len(self.pages)):
            ids = self.ids[p]
            i = ids.find(rid4)
            while i >= 0:
                if i % 4 == 0:
                    j = (i // 4) * ENTRY
                    page = self.pages[p]
                    if page[j + _LIVE] == 1 and page[j + KIND] == kind:
                        out.append(no + i // 4)
                i = ids.find(rid4, i + 1)
            no += PER_PAGE
        return out

    def chunks(self):
        """The live entries packed (checkpoints), regrouped into pages of PER_PAGE (the last
        one short): each page's entries, then their id4s."""
        out = bytearray()
        out_ids = bytearray()
        no = self.first
        for p in range(len(self.pages)):
            page = self.pages[p]
            ids = self.ids[p]
            n = min(PER_PAGE, self.end - no)
            if self.live_in[p]:
                for k in range(n):
                    if page[k * ENTRY + _LIVE] == 1:
                        out += page[k * ENTRY:(k + 1) * ENTRY]
                        out_ids += ids[k * 4:k * 4 + 4]
                        if len(out_ids) == PER_PAGE * 4:
                            yield bytes(out)
                            yield bytes(out_ids)
                            out = bytearray()
                            out_ids = bytearray()
            no += PER_PAGE
        if out_ids:
            yield bytes(out)
            yield bytes(out_ids)

    def load_page(self, data, ids, n):
        """Appends n packed live entries (a checkpoint's) read into `data` and `ids`
        (bytearrays of PAGE and PER_PAGE * 4 bytes, n <= PER_PAGE); the index must end on a
        page boundary or be empty."""
        self.pages.append(data)
        self.ids.append(ids)
        self.live_in.append(n)
        for k in range(n):
            _, amt, _, kind, _ = struct.unpack_from(_FMT, data, k * ENTRY)
            if kind == SALE_CODE:
                self.sales += 1
                self.amount += amt
            self._mark(ids[k * 4], ids[k * 4 + 1])
        self.live += n
        self.end = self.first + (len(self.pages) - 1) * PER_PAGE + n
