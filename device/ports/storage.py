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


def _chunks(data):
    """bytes, or a list / any iterable of bytes chunks (streamed: never joined)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return (data,)
    return data


class PosixFS:
    """Real files. Paths are plain strings; directories are created on demand."""

    def read(self, path):
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError:
            return None

    def open_read(self, path):
        """A file object to read (read, readinto, seek, close), or None when missing."""
        try:
            return open(path, "rb")
        except OSError:
            return None

    def write_atomic(self, path, data):
        """data: bytes, or a list (or any iterable, a generator too) of bytes chunks, written
        one after the other: a large file is streamed, never joined in memory."""
        # temp + flush/fsync + rename: a cut leaves the old or the new file, never a mix.
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            for chunk in _chunks(data):
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
            cur = cur.rstrip("/") + "/" + part if cur or path.startswith("/") else part
            if part and not _exists(cur):
                try:
                    os.mkdir(cur)
                except OSError:
                    if not _exists(cur):  # else made meanwhile by another process: fine
                        raise


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
    n = len(payload)
    crc = binascii.crc32(payload, binascii.crc32(struct.pack("<I", n))) & 0xFFFFFFFF
    return struct.pack("<BII", _SYNC, n, crc) + payload


CHUNK = 1024  # bytes read at a time: the journal is streamed, never read whole (and on
             # MicroPython a larger block may not be found in a fragmented heap)


class _Source:
    """Bytes of a file (or of a buffer) read forward with look-ahead: buf holds the bytes
    [base, base + len(buf)). Positions only grow, so what lies before them is dropped."""

    def __init__(self, f, pos=0, buf=None):
        self.f = f
        self.base = pos
        self.buf = b"" if buf is None else buf
        if f is not None:
            f.seek(pos)

    def have(self, pos, n):
        """True when the bytes [pos, pos + n) are there (reading more as needed)."""
        end = pos + n
        top = self.base + len(self.buf)
        if top >= end and pos >= self.base:
            return True
        if self.f is None:
            return False
        if pos >= top or pos < self.base:
            # beyond what was read (or behind it): start again there
            self.f.seek(pos)
            self.buf = b""
            self.base = pos
        elif pos > self.base:
            self.buf = self.buf[pos - self.base:]
            self.base = pos
        while self.base + len(self.buf) < end:
            more = self.f.read(max(CHUNK, end - self.base - len(self.buf)))
            if not more:
                return False
            self.buf = self.buf + more if self.buf else more
        return True

    def get(self, pos, n):
        i = pos - self.base
        return self.buf[i:i + n]

    def find_sync(self, pos):
        """The position of the next sync byte at or after pos, or None at the end."""
        while self.have(pos, 1):
            k = self.buf.find(b"\xa5", pos - self.base)
            if k >= 0:
                return self.base + k
            pos = self.base + len(self.buf)
        return None


def _frame_at(src, pos):
    """(header, payload, end) of a valid frame starting at pos, or None."""
    if not src.have(pos, _HDR):
        return None
    hdr = src.get(pos, _HDR)
    if hdr[0] != _SYNC:
        return None
    n = struct.unpack_from("<I", hdr, 1)[0]
    if n > MAX_RECORD or not src.have(pos, _HDR + n):
        return None
    payload = src.get(pos + _HDR, n)
    if binascii.crc32(payload, binascii.crc32(hdr[1:5])) & 0xFFFFFFFF != \
            struct.unpack_from("<I", hdr, 5)[0]:
        return None
    return hdr, payload, pos + _HDR + n


class _Scan:
    """One pass over a log from `pos`: every valid frame in order, damage skipped. Keeps what
    a rewrite needs without holding the records: the runs of good frames (old offset, length),
    whether the header must be written afresh, the CRC of the clean image so far."""

    def __init__(self, src, pos, header_ok, crc):
        self.src = src
        self.pos = pos
        self.good_end = pos
        self.skipped = 0
        self.fresh_magic = not header_ok
        self.runs = [[0, pos]] if header_ok and pos else []
        self.crc = crc

    def frames(self, fn):
        """Calls fn(offset, payload) for each valid frame (offsets in the file as it is)."""
        src = self.src
        pos = self.pos
        while src.have(pos, 1):
            got = _frame_at(src, pos)
            if got is None:
                # Damaged here: look for a later valid frame before calling it a torn tail.
                j = pos + 1
                while True:
                    j = src.find_sync(j)
                    if j is None or _frame_at(src, j) is not None:
                        break
                    j += 1
                if j is None:
                    break
                self.skipped += j - pos
                pos = j
                continue
            hdr, payload, end = got
            self.crc = binascii.crc32(payload, binascii.crc32(hdr, self.crc))
            runs = self.runs
            if runs and runs[-1][0] + runs[-1][1] == pos:
                runs[-1][1] += end - pos
            else:
                runs.append([pos, end - pos])
            fn(pos, payload)
            pos = self.good_end = end
        self.pos = pos

    def size(self):
        return (4 if self.fresh_magic else 0) + sum(r[1] for r in self.runs)


def scan(buf):
    """Parses a whole log image: (payloads, good_end, skipped_bytes).

    good_end is where the last valid frame ends: bytes after it are a torn tail. A damaged
    header is damage like any other: the frames after it are still read, and the header's bytes
    count as skipped (good_end 0 when no frame is left).
    """
    out = []
    ok = buf[:4] == LOG_MAGIC
    sc = _Scan(_Source(None, 0, bytes(buf)), 4 if ok else 0, ok, 0)
    sc.frames(lambda off, payload: out.append(payload))
    good_end, skipped = sc.good_end, sc.skipped
    if good_end == 0 and buf:
        skipped = len(buf)  # no header and no frame: nothing here was ever a record
    return out, good_end, skipped


class Remap:
    """Where the frames of a log went when it was rewritten without its damage: new_offset()
    of any frame offset kept."""

    def __init__(self, fresh_magic, runs):
        self._base = 4 if fresh_magic else 0
        self._runs = runs  # [[old offset, length]] in order

    def new_offset(self, old):
        at = self._base
        for start, n in self._runs:
            if start <= old < start + n:
                return at + old - start
            at += n
        raise StorageError("offset %d was not kept" % old)


class FrameReader:
    """Frames at known offsets, read in one forward pass (offsets must not go down)."""

    def __init__(self, f):
        if f is None:
            raise StorageError("log missing")
        self._f = f
        self._src = None

    def _at(self, off):
        src = self._src
        if src is None or off < src.base:
            src = self._src = _Source(self._f, off)
        got = _frame_at(src, off)
        if got is None:
            raise StorageError("no valid record at %d" % off)
        return got

    def frame(self, off):
        """The whole frame (header and payload) at off, checked."""
        got = self._at(off)
        return got[0] + got[1]

    def payload(self, off):
        return self._at(off)[1]

    def close(self):
        self._f.close()


class RecordLog:
    """Append-only log of small records, each framed with length + CRC32, read as a stream.

    open() / scan_from() read every valid record and repair a torn tail by rewriting the good
    prefix atomically (MicroPython files cannot be truncated). Damage (bytes that are no frame,
    a broken header) never stops it: every valid frame is read, the damaged file is kept aside
    as PATH.damaged for a technician, and the log is rewritten with the frames it could read
    (then `remap` says where each kept frame went). append() is one write + one sync and returns
    where its first frame lies; read_at() reads one frame back. `size` and `crc` describe the
    clean log (what a checkpoint validates). A log that cannot be created (a full disk) opens
    empty and read-only: appends fail with StorageError until there is room.
    """

    def __init__(self, fs, path):
        self.fs = fs
        self.path = path
        self._app = None
        self._rf = None
        self.torn_bytes = 0
        self.skipped_bytes = 0
        self.damaged_copy = None  # where the damaged file was kept, when it was
        self.size = 0
        self.crc = 0              # CRC-32 of the whole clean log
        self.remap = None         # a Remap after a rewrite that moved frames (take it)
        self._repair = None       # (fresh_magic, runs) still to write (a full disk at open)

    def open(self):
        """Every record (a list of payloads): small logs and tests."""
        out = []
        self.scan_from(None, lambda off, payload: out.append(payload))
        return out

    def scan_from(self, start, fn, crc=0):
        """Calls fn(offset, payload) for every valid record from `start` (None: the whole
        log, header checked; else an offset whose prefix is known good, its CRC `crc`), then
        repairs what it found. Offsets are those of the file as read: after a rewrite that
        moved frames `remap` is set and the caller moves the offsets it kept."""
        self.close()
        f = self.fs.open_read(self.path)
        try:
            head = f.read(4) if f is not None else b""
            if start is None and (not head or (len(head) < 4 and LOG_MAGIC.startswith(head))):
                # Missing, or cut before the header reached flash: start empty.
                self._rewrite(False, [[0, 0]], b"")
                self.size = 4
                self.crc = binascii.crc32(LOG_MAGIC)
                return
            if start is None:
                ok = head == LOG_MAGIC
                sc = _Scan(_Source(f, 4 if ok else 0), 4 if ok else 0, ok,
                           binascii.crc32(LOG_MAGIC))
            else:
                sc = _Scan(_Source(f, start), start, True, crc)
            sc.frames(fn)
            end = sc.pos
            file_end = end + (len(sc.src.buf) - (end - sc.src.base))
            while True:
                more = f.read(CHUNK)
                if not more:
                    break
                file_end += len(more)
        finally:
            if f is not None:
                f.close()
        if sc.good_end == 0 and not sc.runs:
            sc.skipped = file_end  # no header and no frame: nothing here was ever a record
        self.skipped_bytes = sc.skipped
        self.crc = sc.crc
        self.size = sc.size()
        if sc.skipped or sc.fresh_magic:
            self._set_aside()
            if self._rewrite(sc.fresh_magic, sc.runs, None):
                self.remap = Remap(sc.fresh_magic, sc.runs)
        elif sc.good_end < file_end:
            self.torn_bytes = file_end - sc.good_end
            self._rewrite(False, sc.runs, None)

    def prefix_crc(self, size):
        """CRC-32 of the first `size` bytes of the log, or None when it is shorter."""
        f = self.fs.open_read(self.path)
        if f is None:
            return None
        crc = 0
        buf = bytearray(CHUNK)
        mv = memoryview(buf)
        left = size
        try:
            while left > 0:
                n = f.readinto(buf) if left >= CHUNK else f.readinto(mv[:left])
                if not n:
                    return None
                crc = binascii.crc32(mv[:n], crc)
                left -= n
        finally:
            f.close()
        return crc

    def _copy_runs(self, fresh_magic, runs):
        """The clean image: a fresh header when needed, then each run copied from the log."""
        if fresh_magic:
            yield LOG_MAGIC
        for start, n in runs:
            for chunk in self.copy(start, n):
                yield chunk

    def copy(self, start, n):
        """The bytes [start, start + n) of the log, in chunks."""
        f = self.fs.open_read(self.path)
        try:
            f.seek(start)
            while n > 0:
                chunk = f.read(min(CHUNK, n))
                if not chunk:
                    raise StorageError("log shorter than expected")
                n -= len(chunk)
                yield chunk
        finally:
            f.close()

    def _rewrite(self, fresh_magic, runs, _):
        """The log becomes its clean image; on a full disk the rewrite waits for the next
        append (reading and forwarding go on; nothing new is recorded until it succeeds)."""
        self.close()
        empty = runs == [[0, 0]]
        try:
            if empty:
                self.fs.write_atomic(self.path, [LOG_MAGIC])
            else:
                self.fs.write_atomic(self.path, self._copy_runs(fresh_magic, runs))
        except OSError:
            self._repair = (fresh_magic, runs)
            return False
        self._repair = None
        return True

    def needs_repair(self):
        """True while the log could not be rewritten clean (a full disk at open)."""
        return self._repair is not None

    def _set_aside(self):
        # Keep the evidence for a technician (best effort: a full disk keeps only the count).
        try:
            self.fs.write_atomic(self.path + ".damaged", self.copy(0, self.fs.size(self.path)))
            self.damaged_copy = self.path + ".damaged"
        except OSError:
            self.damaged_copy = None

    def _appender(self):
        if self._app is None:
            self._app = self.fs.open_append(self.path)
        return self._app

    def append(self, payloads):
        """Appends the records (a list of bytes) with a single sync; durable on return.
        Returns the offset of the first one (a repair still due is written first: check
        `remap` afterwards)."""
        data = frame(payloads[0]) if len(payloads) == 1 else b"".join([frame(p) for p in payloads])
        if self._repair is not None:
            fresh, runs = self._repair
            if not self._rewrite(fresh, runs, None):
                raise StorageError("journal not writable (no room to repair it)")
            if fresh or len(runs) > 1:
                self.remap = Remap(fresh, runs)
        app = self._appender()
        try:
            app.write(data)
            app.sync()
        except OSError as e:
            # A half-written frame may be on flash now; the next open() cuts it off.
            self.close()
            raise StorageError("append failed: %s" % e)
        at = self.size
        self.size += len(data)
        self.crc = binascii.crc32(data, self.crc)
        return at

    def read_at(self, offset):
        """The payload of the frame at offset, or None when no valid frame is there."""
        for _ in (0, 1):
            f = self._rf
            if f is None:
                f = self._rf = self.fs.open_read(self.path)
                if f is None:
                    return None
            f.seek(offset)
            hdr = f.read(_HDR)
            if len(hdr) == _HDR and hdr[0] == _SYNC:
                n = struct.unpack_from("<I", hdr, 1)[0]
                if n <= MAX_RECORD:
                    payload = f.read(n)
                    if len(payload) == n and binascii.crc32(
                            payload, binascii.crc32(hdr[1:5])) & 0xFFFFFFFF == \
                            struct.unpack_from("<I", hdr, 5)[0]:
                        return payload
            self._close_reader()  # a reader opened before the last append: open it again
        return None

    def replace(self, payloads):
        """Compaction: the log becomes exactly these records, atomically."""
        self.replace_chunks([LOG_MAGIC] + [frame(p) for p in payloads])

    def replace_chunks(self, chunks):
        """The log becomes exactly these bytes (header and frames, any iterable of chunks,
        which may read the old log), atomically; size and crc follow them."""
        self.close()
        counted = [0, 0]

        def counting():
            for c in chunks:
                counted[0] += len(c)
                counted[1] = binascii.crc32(c, counted[1])
                yield c
        try:
            self.fs.write_atomic(self.path, counting())
        finally:
            self._close_reader()  # it may have read the old file
        self.size, self.crc = counted

    def each(self, fn):
        """Calls fn(offset, payload) for every valid frame, reading only (no repair)."""
        f = self.fs.open_read(self.path)
        if f is None:
            return
        try:
            ok = f.read(4) == LOG_MAGIC
            _Scan(_Source(f, 4 if ok else 0), 4 if ok else 0, ok, 0).frames(fn)
        finally:
            f.close()

    def reader(self):
        """A FrameReader over the log as it is now: frames at growing offsets."""
        return FrameReader(self.fs.open_read(self.path))

    def _close_reader(self):
        if self._rf is not None:
            try:
                self._rf.close()
            except OSError:
                pass
            self._rf = None

    def close(self):
        self._close_reader()
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

