# A bounded ring of the agent's recent log lines in RAM, for the console's `log tail N`.
# Boards have no log files to read back; a fixed number of short lines keeps memory bounded.
from device.ports.clock import gmtime

SIZE = 200
MAX_TEXT = 160


def stamp(t):
    y, mo, d, h, mi, s = gmtime(t)[:6]
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (y, mo, d, h, mi, s)


class EventLog:
    def __init__(self, size=SIZE, max_text=MAX_TEXT):
        if size < 1:
            raise ValueError("an event log holds at least one line")
        self.size = size
        self.max_text = max_text
        self._lines = [None] * size
        self._next = 0
        self.total = 0  # lines ever added; total - len(self) were pushed out

    def add(self, at, text):
        if type(text) is not str:
            text = str(text)
        if len(text) > self.max_text:
            text = text[:self.max_text - 3] + "..."
        self._lines[self._next] = "%s %s" % (stamp(at), text)
        self._next = (self._next + 1) % self.size
        self.total += 1

    def __len__(self):
        return self.total if self.total < self.size else self.size

    def tail(self, n):
        """The last n lines, oldest first."""
        count = len(self)
        if n > count:
            n = count
        if n <= 0:
            return []
        start = (self._next - n) % self.size
        return [self._lines[(start + i) % self.size] for i in range(n)]
