# The queue's checkpoint (device/sales/checkpoint.py, docs/formats.md): a boot from it builds
# the state a full replay of the journal builds, and anything that does not match it (damage,
# a compaction since, a torn file) sends the boot back to the journal.
import struct

from device.ports.storage import PosixFS, RecordLog
from device.sales.queue import ChargeQueue, Kind
from device.sales.sale import make_sale
from tests.both.util import tmpdir

NOW = 1795400000
CPN = {"cti": b"\x07\x07", "cmp": "C", "disc": 10, "exp": NOW + 86400}


def _queue(path, **kw):
    return ChargeQueue(RecordLog(PosixFS(), path), **kw).open()


def _fill(n, declined=(), answered=()):
    path = tmpdir("ckp") + "/queue.log"
    q = _queue(path)
    for i in range(1, n + 1):
        q.commit(make_sale(bytes([i]) * 16, q.take_receipt_no(), 100 * i,
                           [CPN] if i % 2 else [], "CNY", NOW + i, True, "c"))
    for i in answered:
        st = "declined" if i in declined else "approved"
        q.on_result({"cid": bytes([i]) * 16, "st": st, "cpn": []}, NOW, 40 + i)
    return q, path


def _state(q):
    return ([r["cid"] for r in q.pending], q.totals(), sorted(q.unacked), q.next_n, q.host_seq,
            q.ledger.uses(CPN["cti"]), [r["cid"] for r in q.due(0)])


def _replayed(path):
    PosixFS().remove(path[:-4] + ".ckp")
    return _queue(path)


def test_a_boot_from_the_checkpoint_is_the_boot_from_the_journal():
    q, path = _fill(60, declined=(3,), answered=(1, 2, 3, 7))
    assert q.checkpoint(1)
    for i in (8, 9):  # the tail after the checkpoint
        q.on_result({"cid": bytes([i]) * 16, "st": "approved", "cpn": []}, NOW, 60 + i)
    q.commit(make_sale(bytes([99]) * 16, q.take_receipt_no(), 50, [CPN], "CNY", NOW, True, "c"))
    q.log.close()
    a = _queue(path)
    assert a.booted_from == "checkpoint" and a.bad_records == 0
    want = _state(a)
    b = _replayed(path)
    assert b.booted_from == "journal"
    assert _state(b) == want
    assert want[0][:3] == [bytes([4]) * 16, bytes([5]) * 16, bytes([6]) * 16]
    assert want[2] == [bytes([3]) * 16] and want[4] == 69
    assert a.notices()[0][1]["cid"] == bytes([3]) * 16


def test_damage_in_the_part_the_checkpoint_covers_is_found_and_recovered():
    q, path = _fill(10)
    q.checkpoint(1)
    q.log.close()
    raw = bytearray(PosixFS().read(path))
    second = 4 + 9 + struct.unpack_from("<I", raw, 5)[0]  # the second frame
    raw[second + 20] ^= 0xFF
    PosixFS().write_atomic(path, bytes(raw))
    b = _queue(path)
    assert b.booted_from == "journal" and b.log.skipped_bytes > 0
    assert [r["cid"][0] for r in b.pending] == [1, 3, 4, 5, 6, 7, 8, 9, 10]
    assert PosixFS().exists(path + ".damaged")


def test_a_checkpoint_older_than_a_compaction_is_not_used():
    q, path = _fill(80, answered=range(1, 71))
    q.checkpoint(1)
    assert q.needs_compaction()
    q.compact(NOW)
    q.log.close()
    b = _queue(path)
    assert b.booted_from == "journal"
    assert [r["cid"][0] for r in b.pending] == list(range(71, 81))


def test_a_torn_checkpoint_is_ignored():
    q, path = _fill(20, answered=(1, 2))
    q.checkpoint(1)
    q.log.close()
    ckp = path[:-4] + ".ckp"
    raw = PosixFS().read(ckp)
    for cut in (3, len(raw) // 2, len(raw) - 1):
        PosixFS().write_atomic(ckp, raw[:cut])
        b = _queue(path)
        assert b.booted_from == "journal" and len(b.pending) == 18


def test_listeners_hear_of_every_record_still_pending_at_boot():
    refund = Kind("rf", "refund", "refund_result", "rid", lambda rec: {"rid": rec["rid"]})
    path = tmpdir("ckp-listen") + "/queue.log"
    q = ChargeQueue(RecordLog(PosixFS(), path))
    q.add_kind(refund)
    q.open()
    for i in range(1, 6):
        q.commit(make_sale(bytes([i]) * 16, q.take_receipt_no(), 100, [], "CNY", NOW, True, "c"))
        q.commit({"r": "rf", "v": 1, "rid": bytes([100 + i]) * 16, "at": NOW})
    q.on_result({"cid": bytes([2]) * 16, "st": "approved", "cpn": []}, NOW)
    for with_checkpoint in (True, False):
        if with_checkpoint:
            q.checkpoint(1)
        else:
            PosixFS().remove(path[:-4] + ".ckp")
        everything, refunds, resolved = [], [], []
        b = ChargeQueue(RecordLog(PosixFS(), path))
        b.add_kind(refund)
        b.listen(on_commit=lambda kind, rec, seen=everything: seen.append(rec["r"]),
                 on_resolve=lambda kind, rec, answer, seen=resolved: seen.append(rec["cid"][0]))
        b.listen(on_commit=lambda kind, rec, seen=refunds: seen.append(rec["rid"][0]),
                 kinds=["rf"])
        b.listen(on_commit=lambda kind, rec, seen=everything: seen.append("never"),
                 replay=False)
        b.open()
        assert b.booted_from == ("checkpoint" if with_checkpoint else "journal")
        # the answered sale the journal still holds first (commit, then its answer), then the
        # pending records in commit order
        assert everything == ["sale", "sale", "rf", "rf", "sale", "rf", "sale", "rf", "sale",
                              "rf"]
        assert resolved == [2]
        assert refunds == [101, 102, 103, 104, 105]
