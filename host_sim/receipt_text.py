# ESC/POS bytes (what a terminal's printer receives, device/sales/escpos.py) read back as text, so
# the simulator can show the receipts beside the screen and tests can read them. Reads the
# commands the terminal writes (ESC @, ESC E, ESC a, GS !, GS ( k QR, ESC d, GS V) and skips any
# other control byte; a cut ends a receipt.
ESC = 0x1B
GS = 0x1D


def receipts(data):
    """All the receipts in a printer stream: [[line, ...], ...]; the last one may be unfinished
    (no cut yet)."""
    out = []
    lines = []
    line = bytearray()
    align = 0
    width = 42
    i = 0
    n = len(data)

    def end_line():
        text = line.decode("ascii", "replace")
        if align == 1:
            text = text.center(width).rstrip()
        elif align == 2:
            text = text.rjust(width)
        lines.append(text)
        line.clear()

    while i < n:
        b = data[i]
        if b == 0x0A:
            end_line()
            i += 1
        elif b == ESC and i + 1 < n:
            op = data[i + 1]
            if op == 0x40:  # ESC @: a new job
                i += 2
            elif op in (0x45, 0x64, 0x61) and i + 2 < n:
                if op == 0x61:
                    align = data[i + 2] if data[i + 2] < 3 else 0
                elif op == 0x64:
                    lines.extend([""] * data[i + 2])
                i += 3
            else:
                i += 2
        elif b == GS and i + 1 < n:
            op = data[i + 1]
            if op == 0x21:  # GS ! n: size
                i += 3
            elif op == 0x56:  # GS V m [n]: cut
                if line:
                    end_line()
                while lines and lines[-1] == "":
                    lines.pop()
                out.append(lines)
                lines = []
                i += 4 if i + 2 < n and data[i + 2] in (65, 66) else 3
            elif op == 0x28 and i + 4 < n and data[i + 2] == 0x6B:  # GS ( k pL pH cn fn ...
                size = data[i + 3] | data[i + 4] << 8
                body = data[i + 5:i + 5 + size]
                if len(body) >= 3 and body[1] == 0x50:  # fn 80: the QR's data
                    lines.append("[QR %s]" % bytes(body[3:]).decode("ascii", "replace"))
                i += 5 + size
            else:
                i += 2
        elif b < 0x20:
            i += 1
        else:
            line.append(b)
            i += 1
    if line:
        end_line()
    if lines:
        out.append(lines)
    return out


def last_receipt(data):
    """The newest receipt of a printer stream, as lines ([] when there is none)."""
    all_ = receipts(data)
    return all_[-1] if all_ else []
