from device.ports.storage import PosixFS, RecordLog
from device.sales.queue import ChargeQueue, QueueError
from device.sales.sale import charge_body, make_sale
from tests.both.util import raises, tmpdir

LIMITS = {"offline_max_charge": 5000, "offline_max_total": 9000, "offline_max_count": 3,
          "offline_max_age_s": 3600}


def _queue(path=None, **kw):
    path = path or tmpdir("queue") + "/queue.log"
    return ChargeQueue(RecordLog(PosixFS(), path), **kw).open(), path


def _sale(q, n_cid, gross=1000, coupons=(), at=1000, off=True):
    cid = bytes([n_cid]) * 16
    return make_sale(cid, q.take_receipt_no(), gross, list(coupons), "CNY", at, off, "c1")


def test_commit_survives_reopen_in_order():
    q, path = _queue()
    for i in range(1, 4):
        q.commit(_sale(q, i, gross=100 * i))
    q2, _ = _queue(path)
    assert [r["gross"] for r in q2.pending] == [100, 200, 300]
    assert q2.totals() == (3, 600, 1000)
    assert q2.next_n == 4


def test_sale_and_redemption_are_one_record():
    q, path = _queue()
    cpn = {"cti": b"\x01\x02", "cmp": "C1", "disc": 150, "exp": 5000}
    rec = _sale(q, 1, gross=1000, coupons=[cpn])
    assert rec["amt"] == 850
    q.commit(rec)
    assert q.ledger.uses(b"\x01\x02") == 1
    q2, _ = _queue(path)
    assert q2.ledger.uses(b"\x01\x02") == 1 and len(q2.pending) == 1
    body = charge_body(q2.pending[0])
    assert body["cpn"] == [{"cti": b"\x01\x02", "cmp": "C1", "disc": 150}]
    assert "exp" not in body["cpn"][0] and "n" not in body


def test_window_and_retry_backoff():
    q, _ = _queue(window=2)
    for i in range(1, 5):
        q.commit(_sale(q, i))
    due = q.due(0)
    assert [r["cid"][0] for r in due] == [1, 2]
    for r in due:
        q.sent(r["cid"], 0, 0.5)
    assert q.due(1000) == []
    assert [r["cid"][0] for r in q.due(5000)] == [1, 2]
    q.sent(bytes([1]) * 16, 5000, 0.5)
    assert [r["cid"][0] for r in q.due(5000 + 9999)] == [2]
    assert [r["cid"][0] for r in q.due(5000 + 10000)] == [1, 2]
    q.link_up()
    assert len(q.due(0)) == 2


def test_result_resolves_and_window_moves_on():
    q, path = _queue(window=1)
    q.commit(_sale(q, 1))
    q.commit(_sale(q, 2))
    assert q.on_result({"cid": bytes([1]) * 16, "st": "approved", "auth": "A1", "cpn": []},
                       2000)["cid"] == bytes([1]) * 16
    assert [r["cid"][0] for r in q.due(0)] == [2]
    # A repeated result (we resent before the first one came) changes nothing.
    assert q.on_result({"cid": bytes([1]) * 16, "st": "approved", "cpn": []}, 2001) is None
    assert q.dup_results == 1
    q2, _ = _queue(path)
    assert [r["cid"][0] for r in q2.pending] == [2]
    assert q2.resolved[0][1]["auth"] == "A1"


def test_declined_stays_until_acknowledged():
    q, path = _queue()
    q.commit(_sale(q, 1))
    q.on_result({"cid": bytes([1]) * 16, "st": "declined", "code": "over_limit", "cpn": []}, 5)
    assert len(q.declined()) == 1 and q.declined()[0][1]["code"] == "over_limit"
    q2, _ = _queue(path)
    assert len(q2.unacked) == 1
    q2.acknowledge(bytes([1]) * 16, "supervisor", 6)
    raises(QueueError, q2.acknowledge, bytes([1]) * 16, "supervisor", 7)
    q3, _ = _queue(path)
    assert q3.unacked == []


def test_limits_name_the_limit_and_amount():
    q, _ = _queue()
    assert q.refusal(6000, True, 1000, LIMITS).limit == "offline_max_charge"
    assert q.refusal(6000, True, 1000, LIMITS).detail == 1000
    assert q.refusal(6000, False, 1000, LIMITS) is None
    q.commit(_sale(q, 1, gross=4000))
    q.commit(_sale(q, 2, gross=4000))
    r = q.refusal(2000, True, 1000, LIMITS)
    assert r.limit == "offline_max_total" and r.detail == 1000
    q.commit(_sale(q, 3, gross=500))
    assert q.refusal(1, True, 1000, LIMITS).limit == "offline_max_count"
    q.on_result({"cid": bytes([3]) * 16, "st": "approved", "cpn": []}, 1001)
    r = q.refusal(1, True, 1000 + 3601, LIMITS)
    assert r.limit == "offline_max_age_s" and r.detail == 1


def test_compaction_keeps_pending_declines_and_ledger():
    q, path = _queue(retention=2)
    cpn = {"cti": b"old", "cmp": "C", "disc": 10, "exp": 10 ** 9}
    q.commit(_sale(q, 1, coupons=[cpn]))
    q.on_result({"cid": bytes([1]) * 16, "st": "declined", "cpn": []}, 1)
    for i in range(2, 12):
        q.commit(_sale(q, i))
        q.on_result({"cid": bytes([i]) * 16, "st": "approved", "cpn": []}, 1)
    q.commit(_sale(q, 20))
    q.add_redeemed([b"elsewhere"], 100)
    before = q.log.size
    assert q.needs_compaction()
    q.compact(100)
    assert q.log.size < before
    q2, _ = _queue(path)
    assert [r["cid"][0] for r in q2.pending] == [20]
    assert [p[0]["cid"][0] for p in q2.resolved] == [1, 10, 11]
    assert q2.unacked == [bytes([1]) * 16]
    assert q2.ledger.uses(b"old") == 1 and q2.ledger.uses(b"elsewhere") == 1
    assert q2.next_n == q.next_n
    # Redemptions after the snapshot add to it, and a second compaction counts nothing twice.
    q2.commit(_sale(q2, 21, coupons=[cpn]))
    q2.compact(101)
    q3, _ = _queue(path)
    assert q3.ledger.uses(b"old") == 2


def test_expired_coupons_leave_the_ledger_at_compaction():
    q, path = _queue()
    q.commit(_sale(q, 1, coupons=[{"cti": b"x", "cmp": "C", "disc": 1, "exp": 50}]))
    q.commit(_sale(q, 2, coupons=[{"cti": b"y", "cmp": "C", "disc": 1, "exp": 500}]))
    q.compact(100)
    q2, _ = _queue(path)
    assert q2.ledger.uses(b"x") == 0 and q2.ledger.uses(b"y") == 1


def test_garbage_records_are_counted_not_fatal():
    q, path = _queue()
    q.commit(_sale(q, 1))
    q.log.append([b"\xff\xff", b"\xa1\x61r\x63bad"])
    q.commit(_sale(q, 2))
    q2, _ = _queue(path)
    assert q2.bad_records == 2 and len(q2.pending) == 2


def test_duplicate_cid_refused():
    q, path = _queue()
    rec = _sale(q, 1)
    q.commit(rec)
    raises(QueueError, q.commit, rec)
    # once in the window (read back for forwarding), and after a reopen
    assert [r["cid"] for r in q.due(0)] == [rec["cid"]]
    raises(QueueError, q.commit, _sale(q, 1))
    q2, _ = _queue(path)
    raises(QueueError, q2.commit, _sale(q2, 1))
    # an id sharing the first 4 bytes (the index's prefix) is another sale
    other = make_sale(bytes([1]) * 4 + bytes([2]) * 12, q2.take_receipt_no(), 500, [], "CNY",
                      1000, True, "c1")
    q2.commit(other)
    assert len(q2.pending) == 2


def test_ledger_snapshot_in_parts_survives_reopen():
    import device.sales.queue as queue_mod
    saved = queue_mod.SNAP_ROWS
    queue_mod.SNAP_ROWS = 3  # 10 coupons -> 4 snapshot records
    try:
        q, path = _queue(retention=0)
        for i in range(1, 11):
            cpn = {"cti": b"c%d" % i, "cmp": "C", "disc": 1, "exp": 10 ** 9}
            q.commit(_sale(q, i, coupons=[cpn]))
            q.on_result({"cid": bytes([i]) * 16, "st": "approved", "cpn": []}, 1)
        q.compact(100)
        q.add_redeemed([b"c1"], 101)
        q2, _ = _queue(path)
        assert q2.bad_records == 0 and len(q2.ledger) == 10
        assert q2.ledger.uses(b"c1") == 2 and q2.ledger.uses(b"c10") == 1
    finally:
        queue_mod.SNAP_ROWS = saved


def test_a_long_backlog_is_not_compacted_while_it_drains():
    q, _ = _queue(retention=2)
    for i in range(1, 21):
        q.commit(_sale(q, i))
    for i in range(1, 6):
        q.on_result({"cid": bytes([i]) * 16, "st": "approved", "cpn": []}, 1)
    # 5 resolved > retention 2, but 15 pending would be rewritten for 5 records dropped.
    assert not q.needs_compaction()
    for i in range(6, 12):
        q.on_result({"cid": bytes([i]) * 16, "st": "approved", "cpn": []}, 1)
    assert q.needs_compaction()


def test_oversized_record_refused_before_flash():
    from device.ports.storage import MAX_RECORD, StorageError
    q, path = _queue()
    raises(StorageError, q.log.append, [b"x" * (MAX_RECORD + 1)])
    q.commit(_sale(q, 1))
    assert len(_queue(path)[0].pending) == 1
