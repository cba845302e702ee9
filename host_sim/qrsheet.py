# Printable QR sheets of issued coupons (SPEC 2.1: each token is a QR code in alphanumeric mode):
# A4 pages at 300 dpi as PNG (host_sim/png.py: greyscale, its dot font for the labels) and
# the same layout as SVG, PER_PAGE codes a page, each labelled with its campaign name and cti.
import os
from xml.sax.saxutils import escape

import segno

from host_sim import png
from host_sim.files import write_atomic
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
    return png.grey(PAGE_W, PAGE_H, img)


def _draw_text(img, x, y, text):
    s = TEXT_SCALE
    for ch in text:
        for col, bits in enumerate(png.glyph(ch)):
            for dot in range(7):
                if bits >> dot & 1:
                    for dy in range(s):
                        i = (y + dot * s + dy) * PAGE_W + x + col * s
                        img[i:i + s] = b"\x00" * s
        x += GLYPH_W * s


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
        write_atomic(p, _png_page(page), 0o644)
    return paths


def write_svg_sheets(path, tokens):
    """The same pages as SVG (A4 in mm, vector QR modules, text labels)."""
    pages = sheet_layout(tokens)
    paths = _page_paths(path, len(pages))
    for p, page in zip(paths, pages, strict=True):
        write_atomic(p, _svg_page(page), 0o644)
    return paths
