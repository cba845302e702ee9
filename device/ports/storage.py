# Storage port: atomic small files and an append-only record log, on both runtimes.
#
# Everything durable goes through an FS object so the power-loss harness can swap in a flash
# model. PosixFS is the real one: CPython fsyncs with os.fsync; MicroPython has no os.fsync but
# file.flush() fsyncs on the unix port and commits on littlefs boards.
import binascii
import os
import struct

try:
    _fsync = os.fsync
except AttributeError:  # MicroPython
    _fsync = None


class StorageError(OSError):
    pass


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


class _Appender:
    def __init__(self, path):
        self._f = open(path, "ab")

    def write(self, data):
        self._f.write(data)

    def sync(self):
        self._f.flush()
        if _fsync is not None:
            _fsync(self._f.fileno())

    def close(self):
        self._f.close()


class PosixFS:
    """Real files. Paths are plain strings; directories are created on demand."""

    def read(self, path):
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError:
            return None

    def write_atomic(self, path, data):
        """data: bytes, or a list of bytes chunks written one after the other (no big join)."""
        # temp + flush/fsync + rename: a cut leaves the old or the new file, never a mix.
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            for chunk in (data if isinstance(data, list) else (data,)):
                f.write(chunk)
            f.flush()
            if _fsync is not None:
                _fsync(f.fileno())
        os.rename(tmp, path)
        self._sync_dir(path)

    def _sync_dir(self, path):
        if _fsync is None:
            return
        d = path.rsplit("/", 1)[0] if "/" in path else "."
        try:
            fd = os.open(d, os.O_RDONLY)
        except (OSError, AttributeError):
            return
        try:
            _fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def open_append(self, path):
        return _Appender(path)

    def exists(self, path):
        return _exists(path)

    def size(self, path):
        try:
            return os.stat(path)[6]
        except OSError:
            return 0

    def remove(self, path):
        try:
            os.remove(path)
        except OSError:
            pass

    def makedirs(self, path):
        cur = ""
        for part in path.split("/"):
            cur = cur + "/" + part if cur or path.startswith("/") else part
            if part and not _exists(cur):
                os.mkdir(cur)


# Record log framing: file header, then frames of
#   0xA5 | length u32 LE | crc32(length bytes + payload) u32 LE | payload
# The sync byte lets recovery tell a torn tail (nothing valid after the break) from a damaged
# record in the middle (a valid frame follows): the first is cut off, the second skipped.
LOG_MAGIC = b"RLG1"
_SYNC = 0xA5
_HDR = 9
MAX_RECORD = 65536


def frame(payload):
    if len(payload) > MAX_RECORD:
        # Recovery would take it for damage and skip it: refuse it before it reaches flash.
        raise StorageError("record of %d bytes over the %d limit" % (len(payload), MAX_RECORD))
    n = struct.pack("<I", len(payload))
    crc = binascii.crc32(n + payload) & 0xFFFFFFFF
    return bytes([_SYNC]) + n + struct.pack("<I", crc) + payload


def _frame_at(buf, i):
    """The payload of a valid frame starting at i and its end, or None."""
    if len(buf) - i < _HDR or buf[i] != _SYNC:
        return None
    n = struct.unpack_from("<I", buf, i + 1)[0]
    if n > MAX_RECORD or len(buf) - i - _HDR < n:
        return None
    payload = buf[i + _HDR:i + _HDR + n]
    crc = struct.unpack_from("<I", buf, i + 5)[0]
    if binascii.crc32(buf[i + 1:i + 5] + payload) & 0xFFFFFFFF != crc:
        return None
    return payload, i + _HDR + n


def scan(buf):
    """Parses a whole log image: (payloads, good_end, skipped_bytes).

    good_end is where the last valid frame ends: bytes after it are a torn tail.
    """
    if buf[:4] != LOG_MAGIC:
        raise StorageError("not a record log")
    out = []
    i = 4
    good_end = 4
    skipped = 0
    while i < len(buf):
        got = _frame_at(buf, i)
        if got is not None:
            out.append(got[0])
            i = good_end = got[1]
            continue
        # Damaged here: look for a later valid frame before calling it a torn tail.
        j = i + 1
        while j < len(buf):
            if buf[j] == _SYNC and _frame_at(buf, j) is not None:
                break
            j += 1
        if j >= len(buf):
            break
        skipped += j - i
        i = j
    return out, good_end, skipped


class RecordLog:
    """Append-only log of small records, each framed with length + CRC32.

    open() reads every valid record and repairs a torn tail by rewriting the good prefix
    atomically (MicroPython files cannot be truncated). append() is one write + one sync.
    """

    def __init__(self, fs, path):
        self.fs = fs
        self.path = path
        self._app = None
        self.torn_bytes = 0
        self.skipped_bytes = 0
        self.size = 0

    def open(self):
        buf = self.fs.read(self.path)
        if not buf or len(buf) < 4:
            # Missing, or cut before the header reached flash: start empty.
            self.fs.write_atomic(self.path, LOG_MAGIC)
            self.size = 4
            return []
        records, good_end, skipped = scan(buf)
        self.skipped_bytes = skipped
        if good_end < len(buf):
            self.torn_bytes = len(buf) - good_end
            self.fs.write_atomic(self.path, buf[:good_end])
        self.size = good_end
        return records

    def _appender(self):
        if self._app is None:
            self._app = self.fs.open_append(self.path)
        return self._app

    def append(self, payloads):
        """Appends the records (a list of bytes) with a single sync; durable on return."""
        data = b"".join(frame(p) for p in payloads)
        app = self._appender()
        try:
            app.write(data)
            app.sync()
        except OSError as e:
            # A half-written frame may be on flash now; the next open() cuts it off.
            self.close()
            raise StorageError("append failed: %s" % e)
        self.size += len(data)

    def replace(self, payloads):
        """Compaction: the log becomes exactly these records, atomically."""
        self.close()
        chunks = [LOG_MAGIC] + [frame(p) for p in payloads]
        self.fs.write_atomic(self.path, chunks)
        self.size = sum(len(c) for c in chunks)

    def close(self):
        if self._app is not None:
            try:
                self._app.close()
            except OSError:
                pass
            self._app = None
