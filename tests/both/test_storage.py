from device.ports.storage import LOG_MAGIC, PosixFS, RecordLog, frame, scan
from tests.both.util import tmpdir


def _log():
    d = tmpdir("log")
    return PosixFS(), d + "/q.log"


def test_atomic_write_replaces_whole_file():
    fs = PosixFS()
    p = tmpdir("atomic") + "/cfg.json"
    assert fs.read(p) is None
    fs.write_atomic(p, b"old")
    fs.write_atomic(p, b"new-longer")
    assert fs.read(p) == b"new-longer"
    assert not fs.exists(p + ".tmp")


def test_append_and_reopen():
    fs, p = _log()
    log = RecordLog(fs, p)
    assert log.open() == []
    log.append([b"one"])
    log.append([b"two", b"three"])
    log.close()
    again = RecordLog(fs, p)
    assert again.open() == [b"one", b"two", b"three"]
    assert again.torn_bytes == 0 and again.size == fs.size(p)


def test_torn_tail_is_cut_at_every_byte():
    fs, p = _log()
    good = LOG_MAGIC + frame(b"alpha") + frame(b"beta")
    last = frame(b"gamma-record")
    for cut in range(len(last)):
        fs.write_atomic(p, good + last[:cut])
        log = RecordLog(fs, p)
        assert log.open() == [b"alpha", b"beta"], cut
        assert log.torn_bytes == cut
        assert fs.read(p) == good
        log.append([b"after"])
        log.close()
        assert RecordLog(fs, p).open() == [b"alpha", b"beta", b"after"]


def test_damaged_middle_record_is_skipped_not_the_rest():
    buf = bytearray(LOG_MAGIC + frame(b"a" * 20) + frame(b"b" * 20) + frame(b"c" * 20))
    buf[4 + 9 + 20 + 12] ^= 0xFF  # a payload byte of the second record
    records, good_end, skipped = scan(bytes(buf))
    assert records == [b"a" * 20, b"c" * 20]
    assert skipped == 29 and good_end == len(buf)


def test_bad_length_field_does_not_allocate():
    buf = LOG_MAGIC + bytes([0xA5]) + b"\xff\xff\xff\x7f" + b"\0\0\0\0" + b"x"
    records, good_end, skipped = scan(buf)
    assert records == [] and good_end == 4


def test_not_a_log_is_all_damage():
    assert scan(b"XXXX") == ([], 0, 4)


def test_damaged_header_keeps_every_valid_record_and_sets_the_file_aside():
    # Issue 16: a damaged header used to stop the agent ("not a record log").
    fs, p = _log()
    good = LOG_MAGIC + frame(b"alpha") + frame(b"beta") + frame(b"gamma")
    for damage in (b"XXXX", b"\x00\x00\x00\x00\x00", b"RLG2", b"\xa5\xa5\xa5\xa5"):
        broken = damage + good[4:]
        fs.write_atomic(p, broken)
        log = RecordLog(fs, p)
        assert log.open() == [b"alpha", b"beta", b"gamma"], damage
        assert log.skipped_bytes == len(damage)
        assert fs.read(p + ".damaged") == broken and log.damaged_copy == p + ".damaged"
        assert fs.read(p) == good
        log.append([b"after"])
        log.close()
        again = RecordLog(fs, p)
        assert again.open() == [b"alpha", b"beta", b"gamma", b"after"]
        assert again.skipped_bytes == 0


def test_damage_in_the_first_record_keeps_the_rest():
    fs, p = _log()
    buf = bytearray(LOG_MAGIC + frame(b"first" * 4) + frame(b"second") + frame(b"third"))
    buf[4 + 9 + 3] ^= 0x55
    fs.write_atomic(p, bytes(buf))
    log = RecordLog(fs, p)
    assert log.open() == [b"second", b"third"] and log.skipped_bytes == 9 + 20
    assert RecordLog(fs, p).open() == [b"second", b"third"]


def test_header_cut_starts_empty():
    fs, p = _log()
    fs.write_atomic(p, b"RL")
    assert RecordLog(fs, p).open() == []
    assert fs.read(p) == LOG_MAGIC


def test_replace_compacts():
    fs, p = _log()
    log = RecordLog(fs, p)
    log.open()
    log.append([b"x" * 100 for _ in range(10)])
    log.replace([b"keep"])
    log.append([b"new"])
    log.close()
    assert RecordLog(fs, p).open() == [b"keep", b"new"]
    assert fs.size(p) == len(LOG_MAGIC) + 2 * 9 + 7


def test_makedirs_nested():
    fs = PosixFS()
    d = tmpdir("mk") + "/a/b/c"
    fs.makedirs(d)
    fs.makedirs(d)
    fs.write_atomic(d + "/f", b"1")
    assert fs.read(d + "/f") == b"1"


def test_makedirs_when_another_process_makes_the_folder_first():
    # Two fleet shards start agents under one folder: a folder made between the check and the
    # mkdir is what was wanted (it raised FileExistsError before)
    from device.ports import storage
    fs = PosixFS()
    d = tmpdir("mkrace") + "/a/b"
    real = storage._exists
    raced = []

    def exists_but_late(path):
        if path.endswith("/a") and not raced:
            raced.append(path)
            import os
            os.mkdir(path)  # the other process, just before our mkdir
            return False
        return real(path)

    storage._exists = exists_but_late
    try:
        fs.makedirs(d)
    finally:
        storage._exists = real
    assert raced and real(d)


def test_makedirs_still_says_when_it_cannot():
    fs = PosixFS()
    f = tmpdir("mkfile") + "/plain"
    fs.write_atomic(f, b"x")
    try:
        fs.makedirs(f + "/sub")
    except OSError:
        return
    raise AssertionError("a folder under a file was made")
