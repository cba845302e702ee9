"""The serial driver on real pseudo-terminals, on both runtimes.

tests/integration/mp_serial_probe.py opens the pty slave with device/drivers/serial.py and frames
what it reads; the test writes to the master in odd chunkings (CRLF split across writes, a
1201-character line, binary garbage) and waits until the probe has read each chunk before
writing the next, so every split really reaches the driver as written.
"""
import json
import os
import select
import subprocess
import sys
import termios
import time

import pytest

from device.drivers.serial import LINUX_BAUD, SerialError, open_serial

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROBE = os.path.join(ROOT, "tests", "integration", "mp_serial_probe.py")
MP = os.path.join(os.path.dirname(sys.executable), "micropython")
RUNTIMES = ("micropython", "cpython")
WAIT_S = 10

# (bytes written, events the probe must report for them)
SCAN_CHUNKS = [
    (b"PC1:AB\r", [["scan", "PC1:AB"]]),  # CR alone ends the scan at once
    (b"\nPC1:CD\r", [["scan", "PC1:CD"]]),  # its LF arrives later: not an empty line
    (b"\n", []),
    (b"PC1:E", []),
    (b"F\n", [["scan", "PC1:EF"]]),
    (b"X" * 700, []),
    (b"X" * 501 + b"\r\n", [["bad_scan", "too_long"]]),  # 1201 characters
    (b"Y" * 1200 + b"\r", [["scan", "Y" * 1200]]),  # 1200 is still a scan
    (b"\n", []),
    (b"\x00\xff\x1b[2J\x80garbage\r\n", [["bad_scan", "non_printable"]]),
    (b"\tTAB\n\n\r\n", [["bad_scan", "non_printable"]]),
    (b"PC1:LAST\rEND\n", [["scan", "PC1:LAST"], ["scan", "END"]]),
]

KEY_CHUNKS = [
    (b"1\r", [["key", "1"]]),
    (b"\n2", []),
    (b"\r\nENTER\n", [["key", "2"], ["key", "ENTER"]]),
    (b"enter\n", [["bad_key", "enter"]]),
    (b"K" * 70 + b"\n", [["bad_key", "K" * 32]]),
    (b"CANCEL\r\nF4\r\n", [["key", "CANCEL"], ["key", "F4"]]),
]


def runtime_cmd(runtime):
    if runtime == "micropython":
        if not os.path.exists(MP):
            pytest.fail("MicroPython unix port missing: run make setup")
        return [MP], dict(os.environ, MICROPYPATH=ROOT + ":.frozen")
    return [sys.executable, "-u"], dict(os.environ, PYTHONPATH=ROOT)


class Probe:
    def __init__(self, runtime, port, baud, mode):
        cmd, env = runtime_cmd(runtime)
        self.proc = subprocess.Popen(cmd + [PROBE, port, str(baud), mode], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._buf = b""

    def line(self):
        end = time.monotonic() + WAIT_S
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = end - time.monotonic()
            if left <= 0:
                self.proc.kill()
                raise AssertionError("probe silent; stderr: %s" % self.proc.stderr.read())
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError("probe exited; stderr: %s" % self.proc.stderr.read())
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def pty():
    master, slave = os.openpty()  # left cooked: the driver must make it raw itself
    yield master, slave, os.ttyname(slave)
    for fd in (master, slave):
        try:
            os.close(fd)
        except OSError:
            pass


def read_master(master, want):
    got = b""
    end = time.monotonic() + WAIT_S
    while len(got) < len(want) and time.monotonic() < end:
        if select.select([master], [], [], 0.2)[0]:
            got += os.read(master, 4096)
    return got


def assert_raw(slave, speed):
    iflag, oflag, cflag, lflag, ispeed, ospeed, cc = termios.tcgetattr(slave)
    assert lflag & (termios.ICANON | termios.ECHO | termios.ISIG) == 0
    assert iflag & (termios.ICRNL | termios.IXON) == 0  # CR stays CR, ^S/^Q stay data
    assert oflag & termios.OPOST == 0
    assert cflag & termios.CLOCAL  # modem lines ignored: no hang-up without DCD
    assert ispeed == ospeed == speed


def run_chunks(probe, master, chunks):
    written = 0
    per_chunk = []
    for data, _ in chunks:
        os.write(master, data)
        written += len(data)
        events = []
        while True:  # every read the probe made of this chunk (the kernel may split it)
            msg = probe.line()
            assert "rx" in msg, msg
            events += msg["events"]
            if msg["rx"] >= written:
                break
        per_chunk.append(events)
    return per_chunk


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_scanner_over_pty(runtime, pty):
    master, slave, path = pty
    probe = Probe(runtime, path, 19200, "scan")
    try:
        ready = probe.line()["ready"]
        assert ready["impl"] == ("tty" if runtime == "micropython" else "pyserial")
        assert ready["port"] == path and ready["baud"] == 19200 and ready["open"]
        assert_raw(slave, termios.B19200)  # 19200: from LINUX_BAUD on MicroPython
        # write() reaches the master byte for byte (no CR/LF translation)
        assert read_master(master, b"HELLO PROBE\r\n") == b"HELLO PROBE\r\n"
        got = run_chunks(probe, master, SCAN_CHUNKS)
        assert got == [events for _, events in SCAN_CHUNKS]
        done = probe.line()["done"]
        total = sum(len(d) for d, _ in SCAN_CHUNKS)
        assert done["rx"] == total and done["tx"] == 13 and done["errors"] == 0
    finally:
        probe.close()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_keypad_over_pty(runtime, pty):
    master, slave, path = pty
    probe = Probe(runtime, path, 9600, "key")
    try:
        assert probe.line()["ready"]["baud"] == 9600
        assert_raw(slave, termios.B9600)
        read_master(master, b"HELLO PROBE\r\n")
        got = run_chunks(probe, master, KEY_CHUNKS)
        assert got == [events for _, events in KEY_CHUNKS]
        assert probe.line()["done"]["errors"] == 0
    finally:
        probe.close()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_hangup_is_a_serial_error(runtime, pty):
    master, slave, path = pty
    probe = Probe(runtime, path, 9600, "scan")
    try:
        probe.line()
        read_master(master, b"HELLO PROBE\r\n")
        os.write(master, b"PC1:A\n")
        assert probe.line()["events"] == [["scan", "PC1:A"]]
        os.close(master)  # the scanner's cable is pulled
        msg = probe.line()
        assert "error" in msg and path in msg["error"], msg
        assert probe.proc.wait(WAIT_S) == 0
    finally:
        probe.close()


def test_pyserial_driver_in_process(pty):
    master, slave, path = pty
    port = open_serial({"driver": "serial", "port": path})  # baud defaults to 9600
    try:
        assert port.read_available() == b""  # nothing there: returns at once
        os.write(master, b"PC1:Q\r\n")
        end = time.monotonic() + WAIT_S
        got = b""
        while got != b"PC1:Q\r\n" and time.monotonic() < end:
            select.select([port.fileno()], [], [], 0.2)
            got += port.read_available()
        assert got == b"PC1:Q\r\n"
        port.write(b"\x1b@receipt\n")
        port.write("text\n")
        assert read_master(master, b"\x1b@receipt\ntext\n") == b"\x1b@receipt\ntext\n"
        assert port.state() == {"driver": "serial", "impl": "pyserial", "port": path,
                                "baud": 9600, "open": True, "rx": 7, "tx": 15, "errors": 0}
    finally:
        port.close()
    assert port.state()["open"] is False
    e = pytest.raises(SerialError, port.read_available)
    assert path in str(e.value)


def test_not_a_terminal_is_a_serial_error(tmp_path):
    plain = tmp_path / "not-a-tty"
    plain.write_bytes(b"")
    with pytest.raises(SerialError) as e:
        open_serial({"driver": "serial", "port": str(plain), "baud": 9600})
    assert str(plain) in str(e.value)


def test_mp_not_a_terminal_and_bad_baud(tmp_path, pty):
    plain = tmp_path / "not-a-tty"
    plain.write_bytes(b"")
    code = ("from device.drivers.serial import open_serial, SerialError\n"
            "for port, baud in ((%r, 9600), (%r, 12345)):\n"
            "    try:\n"
            "        open_serial({'driver': 'serial', 'port': port, 'baud': baud})\n"
            "        print('opened')\n"
            "    except SerialError as e:\n"
            "        print(e)\n") % (str(plain), pty[2])
    cmd, env = runtime_cmd("micropython")
    p = subprocess.run(cmd + ["-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=WAIT_S)
    lines = p.stdout.splitlines()
    assert p.returncode == 0 and len(lines) == 2, p.stdout + p.stderr
    assert str(plain) in lines[0] and "not a terminal" in lines[0]
    assert pty[2] in lines[1] and "baud 12345" in lines[1]


def test_linux_baud_table_matches_termios():
    for baud, code in LINUX_BAUD.items():
        assert getattr(termios, "B%d" % baud) == code, baud
