# Keypad framing (SPEC 5): one key name per line, same CR/LF/CRLF framing as the scanner.
from device.drivers.scanner import LineFramer

KEYS = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "ENTER", "CANCEL", "CLEAR", "MENU",
        "UP", "DOWN", "F1", "F2", "F3", "F4")
MAX_LINE = 64  # far above any key name: a longer line is noise, not a key
BAD_TEXT = 32  # how much of a bad line is kept for the log and metrics


def _text(line):
    # Non-printable bytes become "?" so a bad line can be logged as plain text on both runtimes.
    return "".join(chr(b) if 0x20 <= b <= 0x7E else "?" for b in line)


class KeyFramer:
    """Keypad bytes -> [("key", NAME) | ("bad_key", text[:32]), ...].

    Names are matched exactly (case included) after stripping spaces; a line of spaces only is an
    empty line and is skipped; a line over 64 bytes is always bad."""

    def __init__(self):
        self._lines = LineFramer(MAX_LINE)
        self.keys = 0
        self.bad = 0

    def feed(self, data):
        events = []
        for line, too_long in self._lines.feed(data):
            text = _text(line).strip(" ")
            if not text and not too_long:
                continue
            if not too_long and text in KEYS:
                events.append(("key", text))
                self.keys += 1
            else:
                events.append(("bad_key", text[:BAD_TEXT]))
                self.bad += 1
        return events

    def state(self):
        return {"keys": self.keys, "bad_keys": self.bad, "pending": self._lines.pending()}
