# The ESC/POS a terminal prints, read back as text (host_sim/receipt_text.py) as make sim shows.
from device.sales.escpos import Receipt
from device.sales.receipt import build_receipt
from device.sales.sale import make_sale
from host_sim.receipt_text import last_receipt, receipts

SHOP = {"merchant_id": "M-ACME", "store_id": "S-001", "device_id": "T-0001", "currency": "CNY"}


def test_a_sale_receipt_reads_back():
    rec = make_sale(b"\x01" * 16, 7, 12345, [{"cti": b"x", "cmp": "SPRING", "disc": 200,
                                              "exp": 9}], "CNY", 1795000000, True, "clerk")
    lines = last_receipt(build_receipt(rec, SHOP, [{"name": "Spring sale"}]))
    assert lines[0].strip() == "M-ACME"
    assert "Receipt" in lines[4] and lines[4].endswith("000007")
    assert any(ln.startswith("  Spring sale") and ln.endswith("-2.00 CNY") for ln in lines)
    assert any(ln.startswith("TOTAL") and ln.endswith("121.45 CNY") for ln in lines)
    assert "Approved offline - sent when online" in lines
    assert "[QR T-0001/000007/" + "01" * 16 + "]" in lines


def test_several_jobs_and_an_unfinished_one():
    a = Receipt(32).text("first").cut().bytes()
    b = Receipt(32).align("right").text("second").bytes()
    got = receipts(a + b)
    assert got[0] == ["first"] and got[1] == ["second".rjust(42)]
    assert last_receipt(b"") == []
    # Garbage never raises: unknown control bytes are skipped.
    assert receipts(b"\x1b\x1d\x00\x01ab\n\x1d(k")[0][0] == "ab"
