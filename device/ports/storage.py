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

    def overwrite(self, path, offset, data):
        """Writes data over existing bytes of a file, in place, durable on return (no new
        block is needed on a POSIX filesystem: this works on a full disk)."""
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(data)
            f.flush()
            if _fsync is not None:
                _fsync(f.fileno())

    def open_append(self, path):
        return _Appender(path)

    def exists(self, path):
        return _exists(path)

    def size(self, path):
        try:
            return os.stat(path)[6]
        except OSError:
            return 0

    def free_bytes(self, path):
        """Bytes still free for us on the filesystem holding path; None when unknown."""
        try:
            st = os.statvfs(path)
        except (OSError, AttributeError):
            return None
        return (st[1] or st[0]) * st[4]

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

    good_end is where the last valid frame ends: bytes after it are a torn tail. A damaged
    header is damage like any other: the frames after it are still read, and the header's bytes
    count as skipped (good_end 0 when no frame is left).
    """
    out = []
    skipped = 0
    if buf[:4] == LOG_MAGIC:
        i = good_end = 4
    else:
        i = good_end = 0
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
    if good_end == 0 and buf:
        skipped = len(buf)  # no header and no frame: nothing here was ever a record
        good_end = 0
    return out, good_end, skipped


class RecordLog:
    """Append-only log of small records, each framed with length + CRC32.

    open() reads every valid record and repairs a torn tail by rewriting the good prefix
    atomically (MicroPython files cannot be truncated). Damage (bytes that are no frame, a broken
    header) never stops it: every valid frame is read, the damaged file is kept aside as
    PATH.damaged for a technician, and the log is rewritten with the frames it could read.
    append() is one write + one sync. A log that cannot be created (a full disk) opens empty and
    read-only: appends fail with StorageError until there is room.
    """

    def __init__(self, fs, path):
        self.fs = fs
        self.path = path
        self._app = None
        self.torn_bytes = 0
        self.skipped_bytes = 0
        self.damaged_copy = None  # where the damaged file was kept, when it was
        self.size = 0
        self._repair = None       # the clean image still to write (a full disk at open)

    def open(self):
        buf = self.fs.read(self.path)
        if not buf or (len(buf) < 4 and LOG_MAGIC.startswith(buf)):
            # Missing, or cut before the header reached flash: start empty.
            self._rewrite([LOG_MAGIC])
            return []
        records, good_end, skipped = scan(buf)
        self.skipped_bytes = skipped
        if skipped or buf[:4] != LOG_MAGIC:
            self._set_aside(buf)
            self._rewrite([LOG_MAGIC] + [frame(p) for p in records])
            return records
        self.size = good_end
        if good_end < len(buf):
            self.torn_bytes = len(buf) - good_end
            self._rewrite([buf[:good_end]])
        return records

    def _rewrite(self, chunks):
        """The log becomes exactly chunks; on a full disk the rewrite waits for the next
        append (reading and forwarding go on; nothing new is recorded until it succeeds)."""
        try:
            self.fs.write_atomic(self.path, chunks)
        except OSError:
            self._repair = chunks
            self.size = sum(len(c) for c in chunks)
            return False
        self._repair = None
        self.size = sum(len(c) for c in chunks)
        return True

    def needs_repair(self):
        """True while the log could not be rewritten clean (a full disk at open)."""
        return self._repair is not None

    def _set_aside(self, buf):
        # Keep the evidence for a technician (best effort: a full disk keeps only the count).
        try:
            self.fs.write_atomic(self.path + ".damaged", buf)
            self.damaged_copy = self.path + ".damaged"
        except OSError:
            self.damaged_copy = None

    def _appender(self):
        if self._app is None:
            self._app = self.fs.open_append(self.path)
        return self._app

    def append(self, payloads):
        """Appends the records (a list of bytes) with a single sync; durable on return."""
        data = b"".join(frame(p) for p in payloads)
        if self._repair is not None:
            self.close()
            if not self._rewrite(self._repair):
                raise StorageError("journal not writable (no room to repair it)")
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


# Slot file: a small state that must stay writable on a full disk (the PIN lockouts, the seq
# counters). Two fixed-size slots updated in place in turn, each
#   "SL" | counter u32 LE | length u16 LE | crc32 u32 LE (of counter..payload) | payload, padded
# The newest slot whose CRC holds is the state, so a power cut mid-write leaves the other one.
# The file is made whole (both slots) while there is room; a file in another format (an older
# firmware's JSON) reads as it is and is replaced by the first write.
_SLOT_HDR = 12


class SlotFile:
    def __init__(self, fs, path, size=128):
        self.fs = fs
        self.path = path
        self.size = size
        self._counter = None

    def read(self):
        """The newest state (bytes), or None when there is none."""
        raw = self.fs.read(self.path)
        if raw is None:
            return None
        if len(raw) != 2 * self.size or raw[:2] != b"SL":
            self._counter = None
            return raw if raw else None
        best = None
        for i in (0, 1):
            got = self._slot(raw[i * self.size:(i + 1) * self.size])
            if got is not None and (best is None or got[0] > best[0]):
                best = got
        if best is None:
            self._counter = 0
            return None
        self._counter = best[0]
        return best[1]

    def _slot(self, s):
        if s[:2] != b"SL":
            return None
        counter, n, crc = struct.unpack_from("<IHI", s, 2)
        if n > self.size - _SLOT_HDR:
            return None
        body = s[2:8] + s[_SLOT_HDR:_SLOT_HDR + n]
        if binascii.crc32(body) & 0xFFFFFFFF != crc:
            return None
        return counter, bytes(s[_SLOT_HDR:_SLOT_HDR + n])

    def _encode(self, counter, data):
        head = struct.pack("<IH", counter, len(data))
        crc = binascii.crc32(head + data) & 0xFFFFFFFF
        s = b"SL" + head + struct.pack("<I", crc) + data
        return s + b"\x00" * (self.size - len(s))

    def write(self, data):
        """Makes data the state; OSError when it cannot (a full disk before the file was
        ever made whole)."""
        if len(data) > self.size - _SLOT_HDR:
            raise StorageError("state of %d bytes over the slot size" % len(data))
        if self._counter is None:
            self.read()
        if self._counter is None:
            # No slot file yet (or an old format): make it whole, atomically.
            # counter c lives in slot c % 2: the next write never touches the newest one
            image = self._encode(0, b"") + self._encode(1, data)
            self.fs.write_atomic(self.path, image)
            self._counter = 1
            return
        counter = self._counter + 1
        self.fs.overwrite(self.path, (counter % 2) * self.size, self._encode(counter, data))
        self._counter = counter

