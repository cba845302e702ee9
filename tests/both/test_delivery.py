# Answers in groups (device/delivery.py): the messages of one read from the broker go through
# the downlink gate together, their journal records are written with one append and one sync,
# and only then does the link write their PUBACKs; a failed write applies none of them. The
# real link (device/ports/mqtt_link.py, on_messages) over its sans-I/O session fed the bytes a
# broker sends: receive() turns a read into events, _act() hands them over, and the PUBACKs the
# session queued are written after that (MQTTLink._read_loop).
from device.delivery import GroupedDelivery
from device.downlink import Downlink
from device.metrics import Metrics
from device.ports.mqtt_link import MQTTLink
from device.ports.storage import PosixFS, RecordLog, StorageError
from device.sales.queue import ChargeQueue
from device.sales.sale import make_sale
from protocol import envelope, mqtt, topics
from tests.both.util import tmpdir

SECRET = bytes(range(32))
DEV = "T-0900"
NOW = 1795400000


class Counters:
    host_seq = 0

    def accept_host_seq(self, seq, durable):
        self.host_seq = seq


class Link:
    """The device's link fed one read at a time, as its read loop does."""

    def __init__(self, on_messages):
        self.link = MQTTLink({"host": "127.0.0.1", "port": 1883}, DEV, None, None, None, 30,
                             on_messages=on_messages)
        self.session = self.link.session

    def read(self, data, now):
        events = self.session.receive(data, now)
        self.link._act(events)
        return events


class CountingLog(RecordLog):
    def __init__(self, fs, path):
        RecordLog.__init__(self, fs, path)
        self.appends = 0
        self.fail = False

    def append(self, payloads):
        if self.fail:
            raise StorageError("no room")
        self.appends += 1
        return RecordLog.append(self, payloads)


def _rig(n, batches=None):
    """batches: a ChargeBatches factory (metrics, log) -> its `charge_results` handler too."""
    log = CountingLog(PosixFS(), tmpdir("delivery") + "/queue.log")
    q = ChargeQueue(log, window=8).open()
    for i in range(1, n + 1):
        q.commit(make_sale(bytes([i]) * 16, q.take_receipt_no(), 100 * i, [], "CNY", NOW, True,
                           "c"))
    metrics = Metrics()
    down = Downlink(DEV, SECRET, "pos/v1", Counters(), metrics, lambda line: None)

    def answer(body, seq):
        q.on_answer("charge_result", body, NOW, seq)
    down.on("charge_result", answer)
    if batches is not None:
        down.on("charge_results", batches(metrics, lambda line: None).results(answer))
    delivery = GroupedDelivery(down.receive, q, metrics, lambda line: None)
    link = Link(delivery.many)
    link.session.connect(0)
    link.session.data_to_send()
    assert link.session.receive(mqtt.connack(False, 0), 1) == [("connected", False)]
    return q, log, link, metrics


def _results(cids, first_seq=1):
    out = b""
    for i, cid in enumerate(cids):
        body = {"cid": cid, "st": "approved", "auth": "A%d" % i, "cpn": []}
        data = envelope.seal(SECRET, DEV, "charge_result", first_seq + i, NOW, body, bytes(16))
        out += mqtt.publish(topics.down("pos/v1", DEV, "charge_result"), data, 1, False, i + 1)
    return out


def test_the_answers_of_one_read_are_one_append_before_their_pubacks():
    q, log, link, metrics = _rig(5)
    before = log.appends
    events = link.read(_results([bytes([i]) * 16 for i in (1, 2, 3)]), 2)
    assert len([e for e in events if e[0] == "message"]) == 3
    # all three in one append
    assert log.appends == before + 1
    assert [r["cid"][0] for r in q.pending] == [4, 5]
    assert metrics.get("answer_groups") == 1 and metrics.get("answers_grouped") == 3
    # the PUBACKs are queued, after the group was written
    assert link.session.data_to_send() == mqtt.puback(1) + mqtt.puback(2) + mqtt.puback(3)
    # what the group wrote is what a reboot reads
    q2 = ChargeQueue(RecordLog(PosixFS(), log.path)).open()
    assert [r["cid"][0] for r in q2.pending] == [4, 5]
    assert q2.host_seq == 3


def test_a_group_that_cannot_be_written_applies_nothing():
    q, log, link, metrics = _rig(3)
    log.fail = True
    link.read(_results([bytes([1]) * 16, bytes([2]) * 16]), 2)
    assert [r["cid"][0] for r in q.pending] == [1, 2, 3]
    assert metrics.get("answers_not_recorded") == 1
    # the host answers again when asked again: then it lands
    log.fail = False
    link.read(_results([bytes([1]) * 16], first_seq=10), 3)
    assert [r["cid"][0] for r in q.pending] == [2, 3]


def test_a_repeat_inside_a_group_counts_once():
    q, log, link, metrics = _rig(2)
    cid = bytes([1]) * 16
    link.read(_results([cid, cid]), 2)
    assert [r["cid"][0] for r in q.pending] == [2]
    assert q.dup_results == 1 and log.appends == 2 + 1
