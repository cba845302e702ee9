# Every released on-flash format version must stay readable by the current code.
from device.ports.storage import PosixFS, RecordLog
from device.sales.queue import ChargeQueue
from tests.both.util import tmpdir


def _copy(name):
    with open("tests/fixtures/formats/" + name, "rb") as f:
        data = f.read()
    path = tmpdir("fmt") + "/" + name
    with open(path, "wb") as f:
        f.write(data)
    return path


def test_queue_v1_fixture():
    q = ChargeQueue(RecordLog(PosixFS(), _copy("queue-v1.log"))).open()
    assert q.bad_records == 0 and q.log.torn_bytes == 0
    assert [r["cid"][0] for r in q.pending] == [3, 4]
    assert q.pending[1]["ref"] == "R-1" and q.pending[1]["amt"] == 630
    assert [p[0]["cid"][0] for p in q.resolved] == [2]
    assert q.unacked == []
    assert q.ledger.uses(b"\x01\x02\x03") == 2 and q.ledger.uses(b"\x09\x09") == 1
    assert q.next_n == 5


def test_queue_v2_fixture():
    # 2026-12-04: compaction writes the ledger as packed rows (`snap` version 2).
    q = ChargeQueue(RecordLog(PosixFS(), _copy("queue-v2.log"))).open()
    assert q.bad_records == 0 and q.log.torn_bytes == 0 and q.booted_from == "journal"
    assert [r["cid"][0] for r in q.pending] == [3, 4]
    assert q.pending[1]["ref"] == "R-1" and q.pending[1]["amt"] == 700
    assert [p[0]["cid"][0] for p in q.resolved] == [2]
    assert q.unacked == []
    assert q.ledger.uses(b"\x01\x02\x03") == 2 and q.ledger.uses(b"\x09\x09") == 1
    assert q.next_n == 5 and q.host_seq == 8
