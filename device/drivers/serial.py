# Serial port driver (SPEC 5): scanner, keypad and console lines. One small object per port with
# a non-blocking read_available(); the implementation is chosen once, by runtime and port name:
#   CPython             pyserial with timeout=0 (reads only what is there)
#   MicroPython unix    the tty device file in termios raw mode, VMIN=0/VTIME=0 (see _TtyPort)
#   MicroPython boards  machine.UART when the port is "uart:N"
# and the technician console on a desktop's stdin/stdout ({"driver": "stdio"}): StdioPort.
import sys

from device.ports import runtime as rt

DEFAULT_BAUD = 9600
READ_CHUNK = 256
READ_MAX = 4096  # per read_available() call: keeps one poll of the agent's loop short

# Linux <asm-generic/termbits.h> speed codes for the standard rates the MicroPython termios
# module does not export (it has B9600 and B57600 upwards only). Linux only: elsewhere the codes
# differ, and an unknown rate is refused rather than silently left as it was.
LINUX_BAUD = {1200: 9, 1800: 10, 2400: 11, 4800: 12, 9600: 13, 19200: 14, 38400: 15}

# termios cc indexes and c_cflag bits on Linux (the MicroPython module does not export them)
_VTIME = 5
_VMIN = 6
_CREAD = 0o200
_CLOCAL = 0o4000  # ignore modem lines, as pyserial does: no hang-up on a missing DCD


class SerialError(Exception):
    """A port that cannot be opened, read or written; names the port."""

    def __init__(self, port, reason):
        super().__init__("serial port %s: %s" % (port, reason))
        self.port = port
        self.reason = reason


def _settings(cfg):
    if not isinstance(cfg, dict):
        raise ValueError("serial config must be a dict")
    if cfg.get("driver") != "serial":
        raise ValueError("not a serial driver: %r" % (cfg.get("driver"),))
    port = cfg.get("port")
    if type(port) is not str or not port:
        raise ValueError("serial config needs a port path")
    baud = cfg.get("baud", DEFAULT_BAUD)
    if type(baud) is not int or baud <= 0:
        raise ValueError("serial baud must be a positive int, got %r" % (baud,))
    return port, baud


def open_serial(cfg):
    """Opens the port of a SPEC 5 {"driver": "serial", "port": ..., "baud": ...} config.

    Bad config -> ValueError; a port that cannot be opened -> SerialError naming it."""
    if isinstance(cfg, dict) and cfg.get("driver") == "stdio":
        return StdioPort()
    port, baud = _settings(cfg)
    if port.startswith("uart:"):
        return _UartPort(port, baud)
    if rt.MICROPYTHON:
        return _TtyPort(port, baud)
    return _PyserialPort(port, baud)


def _as_bytes(data):
    if isinstance(data, str):
        return data.encode()
    return bytes(data)


class _Port:
    IMPL = ""

    def __init__(self, port, baud):
        self.port = port
        self.baud = baud
        self.rx = 0
        self.tx = 0
        self.errors = 0
        self.is_open = False

    def state(self):
        return {"driver": "serial", "impl": self.IMPL, "port": self.port, "baud": self.baud,
                "open": self.is_open, "rx": self.rx, "tx": self.tx, "errors": self.errors}

    def _fail(self, what, e):
        self.errors += 1
        return SerialError(self.port, "%s failed: %s" % (what, e))

    def _check_open(self):
        if not self.is_open:
            raise SerialError(self.port, "closed")

    def write(self, data):
        self._check_open()
        data = _as_bytes(data)
        try:
            self._write(data)
        except self._WRITE_ERRORS as e:
            raise self._fail("write", e) from None
        self.tx += len(data)

    _WRITE_ERRORS = (OSError,)


class _PyserialPort(_Port):
    IMPL = "pyserial"

    def __init__(self, port, baud):
        _Port.__init__(self, port, baud)
        import serial as pyserial  # the pyserial package (absolute import), CPython only
        self._exc = pyserial.SerialException
        self._WRITE_ERRORS = (OSError, self._exc)
        try:
            self._s = pyserial.Serial(port, baud, timeout=0, write_timeout=2)
        except (OSError, ValueError, self._exc) as e:
            raise SerialError(port, "cannot open: %s" % e) from None
        self.is_open = True

    def fileno(self):
        return self._s.fileno()

    def read_available(self):
        self._check_open()
        try:
            data = self._s.read(READ_MAX)  # timeout=0: returns at once with what is buffered
        except (OSError, self._exc) as e:
            raise self._fail("read", e) from None
        self.rx += len(data)
        return data

    def _write(self, data):
        self._s.write(data)
        self._s.flush()

    def close(self):
        if self.is_open:
            self.is_open = False
            self._s.close()


class _TtyPort(_Port):
    """MicroPython unix port: the tty file in raw mode.

    The port has no os.read, and a file's read(n)/readinto() loop until n bytes arrive (a pty read
    with f.read(64) blocks for 64 bytes). With VMIN=0 and VTIME=0 the kernel's read returns at
    once with what is queued, or 0 when nothing is, and the stream loop stops at that 0: one
    readinto() then returns exactly what is available, without blocking. A poll(0) first keeps
    an idle port to one syscall and tells a hang-up (POLLHUP, then reads of 0) from silence."""

    IMPL = "tty"

    def __init__(self, port, baud):
        _Port.__init__(self, port, baud)
        try:
            import select
            import termios
        except ImportError:
            raise SerialError(port, "no termios on this board: use uart:N") from None
        speed = getattr(termios, "B%d" % baud, None)
        if speed is None and sys.platform == "linux":
            speed = LINUX_BAUD.get(baud)
        if speed is None:
            raise SerialError(port, "baud %d not supported here" % baud)
        try:
            self._f = open(port, "r+b")
        except OSError as e:
            raise SerialError(port, "cannot open: %s" % e) from None
        try:
            fd = self._f.fileno()
            termios.setraw(fd)
            attrs = termios.tcgetattr(fd)
            attrs[4] = attrs[5] = speed
            if sys.platform == "linux":
                attrs[2] |= _CREAD | _CLOCAL
            attrs[6][_VMIN] = 0
            attrs[6][_VTIME] = 0
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
        except OSError as e:
            self._f.close()
            raise SerialError(port, "not a terminal: %s" % e) from None
        self._buf = bytearray(READ_CHUNK)
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self._gone = select.POLLHUP | select.POLLERR
        self.is_open = True

    def fileno(self):
        return self._f.fileno()

    def read_available(self):
        self._check_open()
        ready = self._poll.poll(0)
        if not ready:
            return b""
        out = bytearray()
        while len(out) < READ_MAX:
            try:
                n = self._f.readinto(self._buf)
            except OSError as e:  # EIO once the other end hangs up
                raise self._fail("read", e) from None
            if not n:
                break
            out += self._buf[:n]
            if n < READ_CHUNK:
                break
        if not out and ready[0][1] & self._gone:
            raise self._fail("read", "hung up")
        self.rx += len(out)
        return bytes(out)

    def _write(self, data):
        self._f.write(data)

    def close(self):
        if self.is_open:
            self.is_open = False
            self._f.close()


class _UartPort(_Port):
    """Boards: "uart:N" is machine.UART(N). No fileno: the agent polls read_available()."""

    IMPL = "uart"

    def __init__(self, port, baud):
        _Port.__init__(self, port, baud)
        try:
            uart_id = int(port[5:])
        except ValueError:
            raise SerialError(port, "expected uart:N") from None
        try:
            from machine import UART
            self._u = UART(uart_id, baud)
        except (ImportError, OSError, ValueError) as e:
            raise SerialError(port, "cannot open: %r" % (e,)) from None
        self.is_open = True

    def read_available(self):
        self._check_open()
        n = self._u.any()
        if not n:
            return b""
        data = self._u.read(min(n, READ_MAX)) or b""  # read() gives None on a timeout
        self.rx += len(data)
        return data

    def _write(self, data):
        self._u.write(data)

    def close(self):
        if self.is_open:
            self.is_open = False
            deinit = getattr(self._u, "deinit", None)
            if deinit:
                deinit()


class StdioPort(_Port):
    """The console on stdin/stdout (`python -m device console`, or `run` with no console port):
    bytes in, never text, so input that is not UTF-8 reaches the console's `bad_encoding` instead
    of breaking a decoder. Non-blocking: select.poll, then what is there (os.read on CPython;
    MicroPython's stdin buffer reads what poll promised). End of input closes the port."""

    IMPL = "stdio"

    def __init__(self, inp=None, out=None):
        import os
        import select

        _Port.__init__(self, "stdio", 0)
        self._in = inp or sys.stdin
        self._out = out or sys.stdout
        self._fd = self._in.fileno()
        self._os_read = getattr(os, "read", None)
        self._poll = select.poll()
        self._poll.register(self._in, select.POLLIN)
        self._pollin = select.POLLIN
        self.eof = False
        self.is_open = True

    def read_available(self):
        if self.eof:
            return b""
        out = bytearray()
        while len(out) < READ_MAX:
            ready = self._poll.poll(0)
            if not ready or not ready[0][1] & self._pollin:
                if ready and not out:
                    self.eof = True  # hung up with nothing left to read
                break
            if self._os_read is not None:
                chunk = self._os_read(self._fd, READ_MAX - len(out))
            else:
                chunk = self._in.buffer.read(1)
            if not chunk:
                self.eof = True
                break
            out += chunk
        self.rx += len(out)
        return bytes(out)

    def _write(self, data):
        buf = getattr(self._out, "buffer", None)
        if buf is not None:
            buf.write(data)
        else:
            self._out.write(data.decode())
        if hasattr(self._out, "flush"):
            self._out.flush()

    def close(self):
        self.is_open = False

