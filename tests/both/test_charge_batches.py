# Charges in batches (device/charge_batches.py, protocol/batch_messages.py): the forwarder
# groups due charges into `charges` messages only once the host granted it, never more than
# granted or offered, in commit order; a `charge_results` message resolves its records in one
# journal group, and a bad item is dropped alone.
from device.charge_batches import CAPS_WAIT_MS, ChargeBatches
from device.metrics import Metrics
from device.ports.storage import PosixFS, RecordLog
from device.sales.queue import ChargeQueue
from protocol import batch_messages, envelope, mqtt, topics
from protocol.messages import MessageError, check
from tests.both.test_delivery import DEV, NOW, SECRET, _rig
from tests.both.util import raises


def _batches(most=256):
    return ChargeBatches(most, Metrics(), lambda line: None)


def _due(kinds):
    return [(i, m, {"cid": i}) for i, m in enumerate(kinds)]


def _shape(sends):
    return [(m, rids) for m, _, rids in sends]


def test_without_the_hosts_grant_every_charge_goes_alone():
    sends = _batches().group(_due(["charge"] * 3))
    assert _shape(sends) == [("charge", [0]), ("charge", [1]), ("charge", [2])]
    assert sends[1][1] == {"cid": 1}


def test_granted_charges_go_in_batches_of_at_most_the_grant_in_commit_order():
    b = _batches()
    b.on_caps({"batch": 4}, 1)
    sends = b.group(_due(["charge"] * 10))
    assert _shape(sends) == [("charges", [0, 1, 2, 3]), ("charges", [4, 5, 6, 7]),
                             ("charges", [8, 9])]
    assert sends[0][1] == {"items": [{"cid": 0}, {"cid": 1}, {"cid": 2}, {"cid": 3}]}
    # another kind ends a run (order kept); a run of one is SPEC's plain charge
    sends = b.group(_due(["charge", "refund_req", "charge", "charge"]))
    assert _shape(sends) == [("charge", [0]), ("refund_req", [1]), ("charges", [2, 3])]
    # a new connection: single charges until its host grants again
    b.reset(0)
    assert [m for m, _, _ in b.group(_due(["charge"] * 2))] == ["charge", "charge"]


def test_after_a_connect_the_forwarder_waits_for_the_grant_a_moment_at_most():
    granted = []
    b = ChargeBatches(256, Metrics(), lambda line: None, on_grant=lambda: granted.append(1))
    assert b.settled(5)  # nothing offered yet
    b.reset(1000)
    assert not b.settled(1000) and not b.settled(1000 + CAPS_WAIT_MS - 1)
    b.on_caps({"batch": 32}, 3)
    assert b.settled(1001) and granted == [1] and b.size == 32
    # a host that never answers (SPEC's): single charges after CAPS_WAIT_MS
    b.reset(5000)
    assert b.size == 1 and not b.settled(5000 + CAPS_WAIT_MS - 1)
    assert b.settled(5000 + CAPS_WAIT_MS) and b.settled(5001)
    # a terminal that offers nothing waits for nothing
    one = _batches(1)
    one.reset(0)
    assert one.settled(0)


def test_the_offer_and_the_grant_are_bounded():
    small = _batches(16)
    assert small.offer({"fw": "x"}) == {"fw": "x", "batch": 16}
    small.on_caps({"batch": 32}, 1)
    assert small.size == 16
    assert _batches(1000).offer({})["batch"] == batch_messages.MAX_ITEMS
    # a terminal whose window is one record offers nothing: its hello is SPEC's
    assert _batches(1).offer({}) == {}


def test_batch_bodies():
    check("charges", {"items": [{}, {"cid": 1}]})  # the items are each checked as a charge
    check("charge_results", {"items": [{}]})
    check("caps", {"batch": 8})
    assert raises(MessageError, check, "charges", {}).field == "items"
    assert raises(MessageError, check, "charges", {"items": []}).field == "items"
    e = raises(MessageError, check, "charges", {"items": [{}] * 33})
    assert e.field == "items" and "at most 32" in e.reason
    assert raises(MessageError, check, "charge_results", {"items": [{}, 5]}).field == "items[1]"
    assert raises(MessageError, check, "caps", {"batch": 33}).field == "batch"
    assert raises(MessageError, check, "caps", {"batch": -1}).field == "batch"
    hb = batch_messages.hello_batch
    assert hb({}) == 0 and hb({"batch": 1}) == 0 and hb({"batch": True}) == 0
    assert hb({"batch": "8"}) == 0 and hb({"batch": 8}) == 8 and hb({"batch": 10 ** 30}) == 32


def _result(cid, st="approved"):
    return {"cid": cid, "st": st, "auth": "A", "cpn": []}


def _read_results(link, items, seq, mid):
    data = envelope.seal(SECRET, DEV, "charge_results", seq, NOW, {"items": items}, bytes(16))
    return link.read(mqtt.publish(topics.down("pos/v1", DEV, "charge_results"), data, 1, False,
                                  mid), 2)


def test_a_results_message_is_one_journal_group_and_a_bad_item_is_dropped_alone():
    q, log, link, metrics = _rig(5, lambda m, lg: ChargeBatches(8, m, lg))
    before = log.appends
    bad = {"cid": bytes([3]) * 16, "st": "maybe", "cpn": []}
    _read_results(link, [_result(bytes([1]) * 16), _result(bytes([2]) * 16, "declined"),
                         bad, _result(bytes([4]) * 16)], 7, 1)
    assert [r["cid"][0] for r in q.pending] == [3, 5]
    assert log.appends == before + 1 and metrics.get("answers_grouped") == 3
    assert metrics.get("drop_bad_body") == 1 and metrics.get("recv_charge_results") == 1
    assert link.session.data_to_send() == mqtt.puback(1)
    # a reboot reads the same: the results and the seq they came with
    q2 = ChargeQueue(RecordLog(PosixFS(), log.path)).open()
    assert [r["cid"][0] for r in q2.pending] == [3, 5] and q2.host_seq == 7
    # a result again (a batch answered twice) changes nothing
    _read_results(link, [_result(bytes([1]) * 16), _result(bytes([3]) * 16)], 8, 2)
    assert [r["cid"][0] for r in q.pending] == [5] and q.dup_results == 1
