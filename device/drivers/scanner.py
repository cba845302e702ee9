# Barcode/QR scanner framing (SPEC 5): one scan per line, ended by CR, LF or CRLF. A line over
# 1200 characters or with a byte outside printable ASCII is a bad scan, never a crash. Sans-I/O:
# the agent feeds whatever bytes the serial port had, in whatever chunks they came.
MAX_SCAN = 1200  # the longest coupon text SPEC 2.3 accepts

CR = 13
LF = 10


def printable(line):
    """True when every byte is printable ASCII 0x20..0x7e (tab and DEL are not)."""
    for b in line:
        if b < 0x20 or b > 0x7E:
            return False
    return True


class LineFramer:
    """Splits a byte stream into lines with a bound on what it buffers.

    feed() returns a list of (line, too_long): line is the bytes without the terminator; for a
    line over max_len it is only the first max_len bytes (the rest is dropped as it arrives, so a
    scanner stuck sending without a terminator costs at most max_len bytes). Empty lines are
    skipped; CRLF is one terminator even when CR and LF come in separate feeds."""

    def __init__(self, max_len):
        self.max_len = max_len
        self._buf = bytearray()
        self._too_long = False
        self._after_cr = False

    def feed(self, data):
        if not isinstance(data, (bytes, bytearray)):
            data = bytes(data)
        out = []
        i = 0
        n = len(data)
        while i < n:
            if self._after_cr:
                self._after_cr = False
                if data[i] == LF:  # the LF of a CRLF split across feeds, or not
                    i += 1
                    continue
            j = _next_eol(data, i)
            if j < 0:
                self._take(data, i, n)
                break
            self._take(data, i, j)
            self._end(out)
            self._after_cr = data[j] == CR
            i = j + 1
        return out

    def pending(self):
        """Bytes of an unfinished line held now (at most max_len)."""
        return len(self._buf)

    def _take(self, data, start, end):
        if self._too_long or start == end:
            return
        room = self.max_len - len(self._buf)
        if end - start > room:
            self._buf.extend(data[start:start + room])  # keep a prefix, drop the rest
            self._too_long = True
        else:
            self._buf.extend(data[start:end])

    def _end(self, out):
        if self._too_long:
            out.append((bytes(self._buf), True))
        elif self._buf:
            out.append((bytes(self._buf), False))
        self._buf = bytearray()
        self._too_long = False


def _next_eol(data, start):
    cr = data.find(b"\r", start)
    lf = data.find(b"\n", start)
    if cr < 0:
        return lf
    if lf < 0:
        return cr
    return cr if cr < lf else lf


class ScanFramer:
    """Scanner bytes -> [("scan", text) | ("bad_scan", "too_long" | "non_printable"), ...]."""

    def __init__(self, max_len=MAX_SCAN):
        self._lines = LineFramer(max_len)
        self.scans = 0
        self.bad = 0

    def feed(self, data):
        events = []
        for line, too_long in self._lines.feed(data):
            if too_long:
                events.append(("bad_scan", "too_long"))
            elif not printable(line):
                events.append(("bad_scan", "non_printable"))
            else:
                events.append(("scan", line.decode()))
                self.scans += 1
                continue
            self.bad += 1
        return events

    def state(self):
        return {"scans": self.scans, "bad_scans": self.bad, "pending": self._lines.pending()}
