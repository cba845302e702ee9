# A small ESC/POS receipt builder (command bytes per the Epson ESC/POS reference) and the money
# formatting shared by receipts and screens. Pure: returns bytes, prints nothing.
ESC = 0x1B
GS = 0x1D
LF = b"\n"

ALIGN = {"left": 0, "center": 1, "right": 2}
# QR error correction levels, GS ( k fn 69: n = 48..51
QR_EC = {"L": 48, "M": 49, "Q": 50, "H": 51}
QR_MAX_DATA = 7089  # the symbol store (fn 80) holds at most this many bytes
WIDTHS = (32, 42)  # characters per line: 58 mm and 80 mm paper with font A


class EscPosError(ValueError):
    """An argument the printer has no command for (bad size, unknown alignment, ...)."""


def format_amount(minor, cur=""):
    """Minor units -> "12.34 CNY" with two decimals, in integers only (no float rounding)."""
    if type(minor) is not int:
        raise EscPosError("amount must be an int in minor units, got %r" % (minor,))
    sign = "-" if minor < 0 else ""
    units, cents = divmod(-minor if minor < 0 else minor, 100)
    text = "%s%d.%02d" % (sign, units, cents)
    return text + " " + cur if cur else text


def ascii_text(text):
    """Text -> printable ASCII bytes, "?" for anything else. Control characters are replaced too:
    a coupon name carrying ESC or GS would otherwise drive the printer (cut, reset, ...)."""
    return bytes(ord(c) if 0x20 <= ord(c) <= 0x7E else 0x3F for c in text)


class Receipt:
    """Builds one print job; every method appends commands and returns self, for chaining.

    A new Receipt starts with ESC @ (initialize), so each job begins from the printer's
    defaults whatever the previous job left set."""

    def __init__(self, width=42):
        if width not in WIDTHS:
            raise EscPosError("width must be 32 or 42 characters")
        self.width = width
        self._out = bytearray()
        self.init()

    def _cmd(self, *codes):
        self._out.extend(bytes(codes))
        return self

    def init(self):
        return self._cmd(ESC, 0x40)  # ESC @

    def text(self, line=""):
        """One line of text, ended by LF."""
        self._out.extend(ascii_text(line))
        self._out.extend(LF)
        return self

    def bold(self, on=True):
        return self._cmd(ESC, 0x45, 1 if on else 0)  # ESC E n

    def align(self, where):
        if where not in ALIGN:
            raise EscPosError("align is left, center or right, got %r" % (where,))
        return self._cmd(ESC, 0x61, ALIGN[where])  # ESC a n

    def size(self, width=1, height=1):
        """Character magnification 1..8 each way (GS ! n: width in the high nibble)."""
        if not (_byte_in(width, 1, 8) and _byte_in(height, 1, 8)):
            raise EscPosError("size is 1..8 in each direction")
        return self._cmd(GS, 0x21, (width - 1) << 4 | (height - 1))

    def double(self, on=True):
        return self.size(2, 2) if on else self.size(1, 1)

    def columns(self, left, right):
        """A label on the left and an amount on the right, on one line of `width` characters.
        The amount is never cut; a long label is."""
        room = self.width - len(right) - 1
        if room < 0:
            return self.text(right)
        left = left[:room]
        return self.text(left + " " * (self.width - len(left) - len(right)) + right)

    def qr(self, data, module=6, ec="M"):
        """A QR code (model 2) with GS ( k: select model, module size, error correction, store
        the data, print it. data is text (ASCII) or bytes."""
        if isinstance(data, str):
            data = ascii_text(data)
        if not data or len(data) > QR_MAX_DATA:
            raise EscPosError("QR data must be 1..%d bytes" % QR_MAX_DATA)
        if not _byte_in(module, 1, 16):
            raise EscPosError("QR module size is 1..16 dots")
        if ec not in QR_EC:
            raise EscPosError("QR error correction is L, M, Q or H")
        self._cmd(GS, 0x28, 0x6B, 4, 0, 0x31, 0x41, 0x32, 0)  # fn 65: model 2
        self._cmd(GS, 0x28, 0x6B, 3, 0, 0x31, 0x43, module)  # fn 67: module size
        self._cmd(GS, 0x28, 0x6B, 3, 0, 0x31, 0x45, QR_EC[ec])  # fn 69: error correction
        n = len(data) + 3  # pL pH count the bytes after themselves: cn fn m + data
        self._cmd(GS, 0x28, 0x6B, n & 0xFF, n >> 8, 0x31, 0x50, 0x30)  # fn 80: store
        self._out.extend(data)
        return self._cmd(GS, 0x28, 0x6B, 3, 0, 0x31, 0x51, 0x30)  # fn 81: print

    def feed(self, lines=1):
        if not _byte_in(lines, 0, 255):
            raise EscPosError("feed is 0..255 lines")
        return self._cmd(ESC, 0x64, lines)  # ESC d n

    def cut(self):
        """Feed to the cutter and cut leaving one point attached (GS V 66 0)."""
        return self._cmd(GS, 0x56, 66, 0)

    def bytes(self):
        return bytes(self._out)


def _byte_in(n, lo, hi):
    return type(n) is int and lo <= n <= hi
