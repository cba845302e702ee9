# The PNG pictures the host side prints (coupon sheets, terminal labels): 8-bit greyscale, with
# one 5x7 dot font for their text. No imaging library: a PNG is three zlib'd chunks.
import struct
import zlib

# 5x7 glyphs, one byte per column, bit 0 at the top (the classic HD44780 LCD shapes): capitals,
# digits, some punctuation and lowercase a-f (hex prints lowercase, SPEC 1).
FONT = {
    " ": "0000000000", "!": "00005f0000", "#": "147f147f14", "$": "242a7f2a12",
    "%": "2313086462", "&": "3649552250", "'": "0005030000", "(": "001c224100",
    ")": "0041221c00", "*": "14083e0814", "+": "08083e0808", ",": "0050300000",
    "-": "0808080808", ".": "0060600000", "/": "2010080402", ":": "0036360000",
    "?": "0201510906", "_": "4040404040", "=": "1414141414",
    "0": "3e5149453e", "1": "00427f4000", "2": "4261514946", "3": "2141454b31",
    "4": "1814127f10", "5": "2745454539", "6": "3c4a494930", "7": "0171090503",
    "8": "3649494936", "9": "064949291e",
    "A": "7e1111117e", "B": "7f49494936", "C": "3e41414122", "D": "7f4141221c",
    "E": "7f49494941", "F": "7f09090901", "G": "3e4149497a", "H": "7f0808087f",
    "I": "00417f4100", "J": "2040413f01", "K": "7f08142241", "L": "7f40404040",
    "M": "7f020c027f", "N": "7f0408107f", "O": "3e4141413e", "P": "7f09090906",
    "Q": "3e4151215e", "R": "7f09192946", "S": "4649494931", "T": "01017f0101",
    "U": "3f4040403f", "V": "1f2040201f", "W": "3f4038403f", "X": "6314081463",
    "Y": "0708700807", "Z": "6151494543",
    "a": "2054545478", "b": "7f48444438", "c": "3844444420", "d": "384444487f",
    "e": "3854545418", "f": "087e090102",
}
GLYPH_COLS = 5
GLYPH_ROWS = 7


def glyph(ch):
    """The 5 column bytes of ch (a character the font lacks prints as "?")."""
    return bytes.fromhex(FONT.get(ch) or FONT["?"])


def grey(width, height, pixels, level=6):
    """PNG bytes of an 8-bit greyscale picture; pixels: width*height bytes, row by row
    (0 black .. 255 white)."""
    if len(pixels) != width * height:
        raise ValueError("%d pixels for %dx%d" % (len(pixels), width, height))
    view = memoryview(pixels)
    raw = b"".join(b"\x00" + bytes(view[r * width:(r + 1) * width]) for r in range(height))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(raw, level)) + chunk(b"IEND", b""))
