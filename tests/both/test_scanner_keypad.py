# Scanner and keypad line framing (SPEC 5), plus the display, printer and serial-config drivers
# that need no device (the serial port itself is tested on real ptys in tests/integration).
import json

from device.drivers.display import DisplayError, JsonlDisplay, NullDisplay, open_display
from device.drivers.keypad import KEYS, KeyFramer
from device.drivers.printer import FilePrinter, PrinterError, open_printer
from device.drivers.scanner import LineFramer, ScanFramer
from device.drivers.serial import SerialError, open_serial
from tests.both.util import raises, tmpdir


def feed_all(framer, chunks):
    out = []
    for c in chunks:
        out.extend(framer.feed(c))
    return out


def each_split(data):
    """data fed as two chunks, at every split point (CR and LF land in separate feeds too)."""
    for i in range(len(data) + 1):
        yield [data[:i], data[i:]]


# -- scanner ---------------------------------------------------------------------------------
def test_scan_lines_end_with_cr_lf_or_crlf():
    got = ScanFramer().feed(b"PC1:AAA\rPC1:BBB\nPC1:CCC\r\nPC1:DDD\n\rPC1:EEE\r\r\n\n")
    assert got == [("scan", "PC1:AAA"), ("scan", "PC1:BBB"), ("scan", "PC1:CCC"),
                   ("scan", "PC1:DDD"), ("scan", "PC1:EEE")]


def test_crlf_is_one_terminator_whatever_the_chunking():
    data = b"AB\r\nCD\r\n\r\nEF\n"
    want = [("scan", "AB"), ("scan", "CD"), ("scan", "EF")]
    for chunks in each_split(data):
        assert feed_all(ScanFramer(), chunks) == want, chunks
    assert feed_all(ScanFramer(), [bytes([b]) for b in data]) == want
    f = ScanFramer()
    assert f.feed(b"X\r") == [("scan", "X")]  # CR alone ends the line at once
    assert f.feed(b"\n") == []  # its LF, arriving later, is not a second (empty) line
    assert f.feed(b"\nY\n") == [("scan", "Y")]


def test_no_line_until_its_terminator():
    f = ScanFramer()
    assert f.feed(b"PC1:12") == []
    assert f.feed(b"34") == []
    assert f.state()["pending"] == 8
    assert f.feed(b"\n") == [("scan", "PC1:1234")]


def test_too_long_line_is_one_bad_scan_and_bounded():
    f = ScanFramer()
    ok = b"A" * 1200
    assert f.feed(ok + b"\n") == [("scan", "A" * 1200)]
    assert f.feed(b"B" * 1201 + b"\r\n") == [("bad_scan", "too_long")]
    # a stuck scanner: 100 kB without a terminator keeps at most 1200 bytes
    for _ in range(100):
        assert f.feed(b"C" * 1000) == []
    assert f.state()["pending"] <= 1200
    assert f.feed(b"\nPC1:OK\n") == [("bad_scan", "too_long"), ("scan", "PC1:OK")]
    assert f.state() == {"scans": 2, "bad_scans": 2, "pending": 0}


def test_too_long_across_chunks_at_every_split():
    data = b"x" * 1201 + b"\nPC1:Z\n"
    for i in (0, 1, 600, 1199, 1200, 1201, 1202):
        got = feed_all(ScanFramer(), [data[:i], data[i:]])
        assert got == [("bad_scan", "too_long"), ("scan", "PC1:Z")], i
    got = feed_all(ScanFramer(), [b"x" * 600, b"x" * 600, b"\n"])
    assert got == [("scan", "x" * 1200)]


def test_non_printable_is_a_bad_scan():
    for bad in (b"PC1:\tAB", b"\x00", b"PC1:\x7f", b"\xff\xfe", b"caf\xc3\xa9", b"\x1b[2J"):
        assert ScanFramer().feed(bad + b"\n") == [("bad_scan", "non_printable")], bad
    assert ScanFramer().feed(b" ~\n") == [("scan", " ~")]  # 0x20 and 0x7e are printable


def test_binary_garbage_never_crashes():
    f = ScanFramer()
    junk = bytes(range(256)) * 20
    got = f.feed(junk)
    assert got and all(e[0] == "bad_scan" for e in got)
    assert f.feed(b"\nPC1:AFTER\n")[-1] == ("scan", "PC1:AFTER")
    assert f.feed(bytearray(b"PC1:BA\n")) == [("scan", "PC1:BA")]
    assert f.feed(memoryview(b"PC1:MV\n")) == [("scan", "PC1:MV")]


def test_line_framer_keeps_a_bounded_prefix():
    lf = LineFramer(4)
    assert lf.feed(b"abcdefgh\n") == [(b"abcd", True)]
    assert lf.feed(b"abcd\n") == [(b"abcd", False)]


# -- keypad ----------------------------------------------------------------------------------
def test_every_key_name():
    data = b"".join(k.encode() + b"\r\n" for k in KEYS)
    assert KeyFramer().feed(data) == [("key", k) for k in KEYS]
    assert len(KEYS) == 20
    assert KeyFramer().feed(b"  ENTER \n F4\r") == [("key", "ENTER"), ("key", "F4")]


def test_bad_keys():
    got = KeyFramer().feed(b"enter\nF5\n12\nENTER\tX\n\x00\xff\n")
    assert got == [("bad_key", "enter"), ("bad_key", "F5"), ("bad_key", "12"),
                   ("bad_key", "ENTER?X"), ("bad_key", "??")]
    assert KeyFramer().feed(b"   \n\n\r\n") == []  # empty lines


def test_keypad_line_bound():
    f = KeyFramer()
    assert f.feed(b"K" * 64 + b"\n") == [("bad_key", "K" * 32)]
    assert f.feed(b"ENTER" + b" " * 60 + b"\n") == [("bad_key", "ENTER")]  # 65 > 64
    for _ in range(50):
        assert f.feed(b"Z" * 100) == []
    assert f.state()["pending"] <= 64
    assert f.feed(b"\rCANCEL\r\n") == [("bad_key", "Z" * 32), ("key", "CANCEL")]
    assert f.state() == {"keys": 1, "bad_keys": 3, "pending": 0}


def test_keys_split_across_feeds():
    data = b"1\r\n2\r\nENTER\r\n"
    want = [("key", "1"), ("key", "2"), ("key", "ENTER")]
    for chunks in each_split(data):
        assert feed_all(KeyFramer(), chunks) == want, chunks


# -- display ---------------------------------------------------------------------------------
class FakeClock:
    def __init__(self):
        self.t = 1700000000.25

    def __call__(self):
        self.t += 1
        return self.t


def read_frames(path):
    with open(path) as f:
        return [json.loads(line) for line in f.read().split("\n") if line]


def test_jsonl_display_frames():
    path = tmpdir("display") + "/screen.jsonl"
    d = open_display({"driver": "jsonl", "path": path}, FakeClock())
    assert d.show("idle", ["S-001 T-0001", "online"]) is True
    assert d.show("idle", ["S-001 T-0001", "online"]) is False  # unchanged: skipped
    assert d.show("idle", ("S-001 T-0001", "online"), force=True) is True
    assert d.show("amount", ["Amount 0.12 CNY", "caf\u00e9 \"q\""]) is True
    frames = read_frames(path)
    assert frames == [
        {"at": 1700000001.25, "screen": "idle", "lines": ["S-001 T-0001", "online"]},
        {"at": 1700000002.25, "screen": "idle", "lines": ["S-001 T-0001", "online"]},
        {"at": 1700000003.25, "screen": "amount", "lines": ["Amount 0.12 CNY", "caf\u00e9 \"q\""]},
    ]
    with open(path) as f:
        first = f.readline()
    assert first.startswith('{"at": 1700000001.25, "screen": "idle", "lines": [')
    assert d.state() == {"driver": "jsonl", "path": path, "frames": 3, "skipped": 1,
                         "errors": 0, "last_error": None, "screen": "amount"}
    d.close()


def test_display_int_clock_still_writes_a_float():
    path = tmpdir("display") + "/screen.jsonl"
    d = JsonlDisplay(path, lambda: 1700000000)
    d.show("idle", [])
    assert read_frames(path) == [{"at": 1700000000.0, "screen": "idle", "lines": []}]
    with open(path) as f:
        assert '"at": 1700000000.0' in f.read()
    d.close()


def test_display_bad_frames_and_paths():
    path = tmpdir("display") + "/screen.jsonl"
    d = JsonlDisplay(path, FakeClock())
    raises(DisplayError, d.show, "idle", "not a list")
    raises(DisplayError, d.show, "idle", ["ok", 5])
    raises(DisplayError, d.show, None, [])
    raises(DisplayError, JsonlDisplay, path + "/no/such/dir.jsonl", FakeClock())
    n = NullDisplay()
    assert n.show("sale", ["Total 1.00"]) is True
    raises(DisplayError, n.show, "sale", [b"bytes"])
    assert n.state() == {"driver": "null", "frames": 1, "screen": "sale"}
    assert open_display({"driver": "null"}, FakeClock()).state()["frames"] == 0
    e = raises(ValueError, open_display, {"driver": "ssd1306"}, FakeClock())
    assert "ssd1306" in str(e)
    raises(ValueError, open_display, {"driver": "jsonl"}, FakeClock())


# -- printer ---------------------------------------------------------------------------------
def test_file_printer_appends_jobs():
    path = tmpdir("printer") + "/printer.bin"
    p = open_printer({"driver": "file", "path": path})
    p.print(b"\x1b@one\n")
    p.print(bytearray(b"\x1b@two\n\x1dVB\x00"))
    with open(path, "rb") as f:
        assert f.read() == b"\x1b@one\n\x1b@two\n\x1dVB\x00"
    assert p.state() == {"driver": "file", "path": path, "jobs": 2, "bytes": 16, "errors": 0,
                         "last_error": None}
    raises(PrinterError, p.print, "text is not a job")
    p.close()


def test_printer_disk_full_is_a_printer_error():
    p = FilePrinter("/dev/full")  # every write fails with ENOSPC, as on a full flash
    raises(PrinterError, p.print, b"\x1b@receipt\n")
    raises(PrinterError, p.print, b"\x1b@again\n")
    st = p.state()
    assert st["errors"] == 2 and st["jobs"] == 0 and st["last_error"]
    p.close()


def test_printer_factory_errors():
    e = raises(ValueError, open_printer, {"driver": "escpos-usb"})
    assert "escpos-usb" in str(e)
    raises(ValueError, open_printer, {"driver": "file"})
    raises(ValueError, open_printer, None)
    raises(PrinterError, FilePrinter, tmpdir("printer") + "/missing/dir/p.bin")


# -- serial config (the port itself: tests/integration/test_serial_pty.py) ------------------
def test_serial_bad_config_and_missing_port():
    raises(ValueError, open_serial, {"driver": "usb", "port": "/dev/ttyS0"})
    raises(ValueError, open_serial, {"driver": "serial"})
    raises(ValueError, open_serial, {"driver": "serial", "port": "/dev/x", "baud": "9600"})
    raises(ValueError, open_serial, {"driver": "serial", "port": "/dev/x", "baud": True})
    raises(ValueError, open_serial, "serial")
    e = raises(SerialError, open_serial, {"driver": "serial", "port": "/dev/no-such-tty-here"})
    assert "/dev/no-such-tty-here" in str(e) and e.port == "/dev/no-such-tty-here"
    e = raises(SerialError, open_serial, {"driver": "serial", "port": "uart:x"})
    assert "uart:x" in str(e)
