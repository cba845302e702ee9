# The pending records in RAM (docs/formats.md, "Pending index"): one 20-byte entry per record
# not yet answered, in commit order, in pages of 1 000 bytes (MicroPython never compacts its
# heap: many small blocks fit where one large one may not). The records themselves stay on
# flash; an entry says where (journal offset) and what the offline limits weigh (amount, time,
# kind), plus the first 4 bytes of the record's id, so an answer can find its record with a
# search in C (bytearray.find) and one read from flash to confirm.
#
#   entry = id4 (4 bytes) | offset u32 | amount u32 | at u32 | kind u8 | live u8 | 2 spare
#
# Entries are numbered from 0 in commit order for the life of the index; answering one clears
# its `live` byte, and a page whose entries are all answered is dropped from the front.
import struct

ENTRY = 20
PER_PAGE = 50
PAGE = ENTRY * PER_PAGE
_FMT = "<4sIIIBB"
_OFF = 4       # where an entry's offset lies
_LIVE = 17     # where an entry's live byte lies
SALE_CODE = 0  # kind code of sales (the queue registers the sale kind first)


def id4(rid):
    """The first 4 bytes of an id (bytes, or text as UTF-8), zero-padded."""
    if not isinstance(rid, (bytes, bytearray)):
        rid = str(rid).encode()
    return bytes(rid[:4]) + b"\x00" * (4 - min(len(rid), 4))


class PendingIndex:
    def __init__(self):
        self.pages = []      # bytearray(PAGE) each
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
            self.live_in.append(0)
            slot = 0
        struct.pack_into(_FMT, self.pages[-1], slot * ENTRY, rid4, off, amt, at, kind, 1)
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
        """(id4, offset, amount, at, kind, live) of entry `no`."""
        page, j = self._at(no)
        return struct.unpack_from(_FMT, page, j)

    def is_live(self, no):
        if no < self.first or no >= self.end:
            return False
        page, j = self._at(no)
        return page[j + _LIVE] == 1

    def offset(self, no):
        page, j = self._at(no)
        return struct.unpack_from("<I", page, j + _OFF)[0]

    def set_offset(self, no, off):
        page, j = self._at(no)
        struct.pack_into("<I", page, j + _OFF, off)

    def remove(self, no):
        """Marks entry `no` answered; drops leading pages with nothing live."""
        page, j = self._at(no)
        if page[j + _LIVE] != 1:
            return
        page[j + _LIVE] = 0
        _, _, amt, _, kind, _ = struct.unpack_from(_FMT, page, j)
        self.live -= 1
        if kind == SALE_CODE:
            self.sales -= 1
            self.amount -= amt
        self.live_in[(no - self.first) // PER_PAGE] -= 1
        while self.pages and self.live_in[0] == 0 and \
                (len(self.pages) > 1 or self.end - self.first >= PER_PAGE):
            self.pages.pop(0)
            self.live_in.pop(0)
            self.first += PER_PAGE

    def numbers(self, most=None):
        """The live entry numbers in commit order (the first `most` of them)."""
        out = []
        no = self.first
        p = 0
        for page in self.pages:
            if self.live_in[p]:
                for k in range(min(PER_PAGE, self.end - no)):
                    if page[k * ENTRY + _LIVE] == 1:
                        out.append(no + k)
                        if most is not None and len(out) >= most:
                            return out
            no += PER_PAGE
            p += 1
        return out

    def oldest_sale_at(self):
        """`at` of the first live sale in commit order, or None."""
        if not self.sales:
            return None
        no = self.first
        for page in self.pages:
            for k in range(min(PER_PAGE, self.end - no)):
                j = k * ENTRY
                if page[j + _LIVE] == 1 and page[j + 16] == SALE_CODE:
                    return struct.unpack_from("<I", page, j + 12)[0]
            no += PER_PAGE
        return None

    def find(self, rid4, kind):
        """Numbers of the live entries of `kind` whose id starts with rid4 (candidates: the
        caller confirms on flash)."""
        out = []
        no = self.first
        for page in self.pages:
            i = page.find(rid4)
            while i >= 0:
                if i % ENTRY == 0 and page[i + _LIVE] == 1 and page[i + 16] == kind \
                        and no + i // ENTRY < self.end:
                    out.append(no + i // ENTRY)
                i = page.find(rid4, i + 1)
            no += PER_PAGE
        return out

    def chunks(self):
        """The live entries packed (checkpoints): bytes chunks, commit order."""
        no = self.first
        for p in range(len(self.pages)):
            page = self.pages[p]
            n = min(PER_PAGE, self.end - no)
            if self.live_in[p] == n:
                yield bytes(page[:n * ENTRY])
            elif self.live_in[p]:
                out = bytearray()
                for k in range(n):
                    if page[k * ENTRY + _LIVE] == 1:
                        out += page[k * ENTRY:(k + 1) * ENTRY]
                yield bytes(out)
            no += PER_PAGE

    def load_page(self, data, n):
        """Appends n packed live entries (a checkpoint's) read into `data` (a bytearray of
        PAGE bytes, n <= PER_PAGE); the index must end on a page boundary or be empty."""
        self.pages.append(data)
        self.live_in.append(n)
        for k in range(n):
            _, _, amt, _, kind, _ = struct.unpack_from(_FMT, data, k * ENTRY)
            if kind == SALE_CODE:
                self.sales += 1
                self.amount += amt
        self.live += n
        self.end = self.first + (len(self.pages) - 1) * PER_PAGE + n
