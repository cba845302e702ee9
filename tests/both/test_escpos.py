# ESC/POS builder: exact command bytes (Epson ESC/POS reference) and integer money formatting.
from device.sales.escpos import EscPosError, Receipt, ascii_text, format_amount
from tests.both.util import raises

INIT = b"\x1b\x40"


def after_init(r):
    out = r.bytes()
    assert out[:2] == INIT
    return out[2:]


def test_init_starts_every_job():
    assert Receipt().bytes() == INIT
    assert after_init(Receipt().init()) == INIT


def test_text_is_ascii_with_question_marks():
    assert after_init(Receipt().text("Total 12.34")) == b"Total 12.34\n"
    assert after_init(Receipt().text("Caf\u00e9 \u4e2d")) == b"Caf? ?\n"
    assert after_init(Receipt().text()) == b"\n"


def test_control_characters_cannot_reach_the_printer():
    # a coupon name carrying ESC i (cut) or GS V must print as text, not act
    assert ascii_text("A\x1biB\x1dV\tC\x7f") == b"A?iB?V?C?"
    assert after_init(Receipt().text("\x1b@")) == b"?@\n"


def test_bold_align_size():
    assert after_init(Receipt().bold()) == b"\x1b\x45\x01"
    assert after_init(Receipt().bold(False)) == b"\x1b\x45\x00"
    assert after_init(Receipt().align("left")) == b"\x1b\x61\x00"
    assert after_init(Receipt().align("center")) == b"\x1b\x61\x01"
    assert after_init(Receipt().align("right")) == b"\x1b\x61\x02"
    assert after_init(Receipt().double()) == b"\x1d\x21\x11"
    assert after_init(Receipt().double(False)) == b"\x1d\x21\x00"
    assert after_init(Receipt().size(3, 1)) == b"\x1d\x21\x20"
    assert after_init(Receipt().size(8, 8)) == b"\x1d\x21\x77"


def test_bad_arguments_raise_escpos_error():
    raises(EscPosError, Receipt().align, "middle")
    raises(EscPosError, Receipt().size, 0, 1)
    raises(EscPosError, Receipt().size, 1, 9)
    raises(EscPosError, Receipt().feed, 256)
    raises(EscPosError, Receipt().feed, -1)
    raises(EscPosError, Receipt().qr, "")
    raises(EscPosError, Receipt().qr, "x" * 7090)
    raises(EscPosError, Receipt().qr, "x", 17)
    raises(EscPosError, Receipt().qr, "x", 6, "X")
    raises(EscPosError, Receipt, 40)
    raises(EscPosError, format_amount, 1.5, "CNY")
    raises(EscPosError, format_amount, True, "CNY")


def test_feed_and_partial_cut():
    assert after_init(Receipt().feed(3)) == b"\x1b\x64\x03"
    assert after_init(Receipt().feed(0)) == b"\x1b\x64\x00"
    assert after_init(Receipt().cut()) == b"\x1d\x56\x42\x00"


def test_columns_42_and_32():
    line = after_init(Receipt().columns("Total", "12.34 CNY"))
    assert line == b"Total" + b" " * 28 + b"12.34 CNY\n"
    assert len(line) == 43
    line = after_init(Receipt(32).columns("Coupon SPRING", "-2.00"))
    assert line == b"Coupon SPRING" + b" " * 14 + b"-2.00\n"
    assert len(line) == 33


def test_columns_cut_the_label_never_the_amount():
    line = after_init(Receipt(32).columns("L" * 40, "1234567.89 CNY"))
    assert line == b"L" * 17 + b" 1234567.89 CNY\n"
    assert after_init(Receipt(32).columns("x", "9" * 40)) == b"9" * 40 + b"\n"


def test_qr_small_exact_bytes():
    got = after_init(Receipt().qr("PC1:AB", 4, "L"))
    assert got == (b"\x1d(k\x04\x00\x31\x41\x32\x00"  # model 2
                   b"\x1d(k\x03\x00\x31\x43\x04"  # module 4 dots
                   b"\x1d(k\x03\x00\x31\x45\x30"  # error correction L
                   b"\x1d(k\x09\x00\x31\x50\x30PC1:AB"  # store 6 bytes: pL = 6 + 3
                   b"\x1d(k\x03\x00\x31\x51\x30")  # print
    got = after_init(Receipt().qr(b"\x00\xff"))
    assert b"\x1d(k\x03\x00\x31\x43\x06" in got  # default module 6
    assert b"\x1d(k\x03\x00\x31\x45\x31" in got  # default level M
    assert b"\x1d(k\x05\x00\x31\x50\x30\x00\xff\x1d" in got


def test_qr_store_length_for_300_bytes():
    data = "A" * 300
    got = after_init(Receipt().qr(data, 6, "H"))
    # 300 + 3 = 303 = 0x012f: pL = 0x2f, pH = 0x01
    store = b"\x1d(k\x2f\x01\x31\x50\x30" + data.encode()
    i = got.index(b"\x1d(k\x2f\x01")
    assert got[i:i + len(store)] == store
    assert got[i + len(store):] == b"\x1d(k\x03\x00\x31\x51\x30"
    assert b"\x1d(k\x03\x00\x31\x45\x33" in got  # level H
    big = after_init(Receipt().qr("B" * 7089))
    assert b"\x1d(k\xb4\x1b\x31\x50\x30" in big  # 7092 = 0x1bb4


def test_a_whole_receipt_chains():
    r = (Receipt(32).align("center").bold().double().text("ACME").double(False).bold(False)
         .align("left").columns("Total", format_amount(1234, "CNY")).feed(2).cut())
    assert r.bytes() == (INIT + b"\x1ba\x01\x1bE\x01\x1d!\x11ACME\n\x1d!\x00\x1bE\x00\x1ba\x00"
                         + b"Total" + b" " * 18 + b"12.34 CNY\n\x1bd\x02\x1dVB\x00")


def test_format_amount():
    assert format_amount(0, "CNY") == "0.00 CNY"
    assert format_amount(5, "CNY") == "0.05 CNY"
    assert format_amount(100, "CNY") == "1.00 CNY"
    assert format_amount(123456, "CNY") == "1234.56 CNY"
    assert format_amount(-5, "CNY") == "-0.05 CNY"
    assert format_amount(-123456, "EUR") == "-1234.56 EUR"
    assert format_amount(999999999) == "9999999.99"
    # beyond float precision: integers only, so still exact
    assert format_amount(12345678901234567, "CNY") == "123456789012345.67 CNY"
