# Printable QR sheets of issued coupons (SPEC 2.1: each token is a QR code in alphanumeric mode):
# A4 pages at 300 dpi as PNG (written here, greyscale, with a small dot font for the labels) and
# the same layout as SVG, PER_PAGE codes a page, each labelled with its campaign name and cti.
import os
import struct
import zlib
from xml.sax.saxutils import escape

import segno

from host_sim.issuance import IssuanceError, token_claims


class SheetError(IssuanceError):
    """A token that cannot be printed as a legible alphanumeric QR code."""


def qr_code(token):
    """The token as a QR code in alphanumeric mode (base45 is the QR alphanumeric alphabet)."""
    qr = segno.make_qr(token, error="m")
    if qr.mode != "alphanumeric":
        raise SheetError("token", "QR encoder chose %s mode, not alphanumeric" % qr.mode)
    return qr


# A4 portrait at 300 dpi; the SVG uses the same grid with a viewBox and mm page size.
PAGE_W = 2480
PAGE_H = 3508
PAGE_MM = (210, 297)
MARGIN = 120
COLS = 3
ROWS = 4
PER_PAGE = COLS * ROWS
QR_BORDER = 4
TEXT_SCALE = 3  # pixels per font dot
GLYPH_W = 6  # 5 dots and a space
LINE_H = 10 * TEXT_SCALE
LABEL_LINES = 2
MIN_MODULE_PX = 4

# 5x7 dot font, one byte per column, bit 0 at the top (the classic HD44780-style shapes).
_FONT = {
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
    "Q": "3e4151215e", "R": "7f09192946", "S": "2649494932", "T": "01017f0101",
    "U": "3f4040403f", "V": "1f2040201f", "W": "3f4038403f", "X": "6314081463",
    "Y": "0708700807", "Z": "6151494543",
    "a": "2054545478", "b": "7f48444438", "c": "3844444420", "d": "384444487f",
    "e": "3854545418", "f": "087e090102",
}


def _glyph(ch):
    # Capitals, plus lowercase a-f so the cti prints as lowercase hex (SPEC 1).
    g = _FONT.get(ch) or _FONT["?"]
    return bytes.fromhex(g)


def _fit(text, width_px):
    return text[:max(1, width_px // (GLYPH_W * TEXT_SCALE))]


def _cells(n):
    """Top-left corners of the first n cells of a page, row by row."""
    cw = (PAGE_W - 2 * MARGIN) // COLS
    ch = (PAGE_H - 2 * MARGIN) // ROWS
    return [(MARGIN + (i % COLS) * cw, MARGIN + (i // COLS) * ch) for i in range(n)], cw, ch


def sheet_layout(tokens):
    """Pages of placements: [[(qr, x, y, module_px, label lines, cell_w), ...], ...]."""
    pages = []
    for start in range(0, len(tokens), PER_PAGE):
        chunk = tokens[start:start + PER_PAGE]
        spots, cw, ch = _cells(len(chunk))
        page = []
        for tok, (x, y) in zip(chunk, spots, strict=True):
            qr = qr_code(tok)
            side = qr.symbol_size(scale=1, border=QR_BORDER)[0]
            px = min(cw // side, (ch - LABEL_LINES * LINE_H - LINE_H) // side)
            if px < MIN_MODULE_PX:
                raise SheetError("token", "QR version %d too large to print legibly"
                                    % qr.version)
            c = token_claims(tok)
            lines = [_fit(c.get("nm") or c["cmp"], cw), _fit(c[7].hex(), cw)]
            page.append((qr, x, y, px, lines, cw))
        pages.append(page)
    return pages


def _page_paths(path, n):
    stem, ext = os.path.splitext(path)
    return [path if i == 0 else "%s-%d%s" % (stem, i + 1, ext) for i in range(n)]


def _label_origin(qr, y, px):
    side = qr.symbol_size(scale=1, border=QR_BORDER)[0]
    return y + side * px + LINE_H // 3


def _png_page(page):
    img = bytearray(b"\xff" * (PAGE_W * PAGE_H))
    for qr, x, y, px, lines, _cw in page:
        row_y = y + QR_BORDER * px
        for row in qr.matrix:
            line = bytearray(b"\xff" * (len(row) * px))
            for i, dark in enumerate(row):
                if dark:
                    line[i * px:(i + 1) * px] = b"\x00" * px
            x0 = x + QR_BORDER * px
            for _ in range(px):
                img[row_y * PAGE_W + x0:row_y * PAGE_W + x0 + len(line)] = line
                row_y += 1
        ty = _label_origin(qr, y, px)
        for i, text in enumerate(lines):
            _draw_text(img, x, ty, text if i else text.upper())  # the font has capitals only
            ty += LINE_H
    raw = b"".join(b"\x00" + bytes(img[r * PAGE_W:(r + 1) * PAGE_W]) for r in range(PAGE_H))
    return _png(PAGE_W, PAGE_H, raw)


def _draw_text(img, x, y, text):
    s = TEXT_SCALE
    for ch in text:
        for col, bits in enumerate(_glyph(ch)):
            for dot in range(7):
                if bits >> dot & 1:
                    for dy in range(s):
                        i = (y + dot * s + dy) * PAGE_W + x + col * s
                        img[i:i + s] = b"\x00" * s
        x += GLYPH_W * s


def _png(w, h, raw):
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6))
            + chunk(b"IEND", b""))


def _svg_page(page):
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%dmm" height="%dmm" '
           'viewBox="0 0 %d %d">' % (PAGE_MM[0], PAGE_MM[1], PAGE_W, PAGE_H),
           '<rect width="%d" height="%d" fill="#fff"/>' % (PAGE_W, PAGE_H)]
    for qr, x, y, px, lines, _cw in page:
        d = []
        for r, row in enumerate(qr.matrix):
            c = 0
            while c < len(row):
                if row[c]:
                    start = c
                    while c < len(row) and row[c]:
                        c += 1
                    d.append("M%d %dh%dv%dh-%dz" % (x + (QR_BORDER + start) * px,
                                                    y + (QR_BORDER + r) * px,
                                                    (c - start) * px, px, (c - start) * px))
                else:
                    c += 1
        out.append('<g class="coupon"><path fill="#000" d="%s"/>' % "".join(d))
        ty = _label_origin(qr, y, px)
        for text in lines:
            out.append('<text x="%d" y="%d" font-family="monospace" font-size="%d">%s</text>'
                       % (x, ty + 7 * TEXT_SCALE, 8 * TEXT_SCALE, escape(text)))
            ty += LINE_H
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out).encode()


def write_png_sheets(path, tokens):
    """Printable A4 pages (300 dpi PNG), PER_PAGE codes each with the campaign name and the
    cti under each; page 1 is `path`, later pages `stem-2.png`, ... Returns the paths."""
    pages = sheet_layout(tokens)
    paths = _page_paths(path, len(pages))
    for p, page in zip(paths, pages, strict=True):
        with open(p, "wb") as f:
            f.write(_png_page(page))
    return paths


def write_svg_sheets(path, tokens):
    """The same pages as SVG (A4 in mm, vector QR modules, text labels)."""
    pages = sheet_layout(tokens)
    paths = _page_paths(path, len(pages))
    for p, page in zip(paths, pages, strict=True):
        with open(p, "wb") as f:
            f.write(_svg_page(page))
    return paths
