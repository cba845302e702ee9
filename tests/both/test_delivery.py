# Answers in groups (device/delivery.py): the messages of one read from the broker go through
# the downlink gate together, their journal records are written with one append and one sync,
# and their PUBACKs are queued only after that; a failed write applies none of them. Against
# the real sans-I/O session (protocol/mqtt_session.py) fed the bytes a broker sends.
from device.delivery import GroupedDelivery
from device.downlink import Downlink
from device.metrics import Metrics
from device.ports.storage import PosixFS, RecordLog, StorageError
from device.sales.queue import ChargeQueue
from device.sales.sale import make_sale
from protocol import envelope, mqtt, topics
from protocol.mqtt_session import Session
from tests.both.util import tmpdir

SECRET = bytes(range(32))
DEV = "T-0900"
NOW = 1795400000


class Counters:
    host_seq = 0

    def accept_host_seq(self, seq, durable):
        self.host_seq = seq


class Link:
    """What GroupedDelivery.attach() needs of the link: its session and stats."""

    def __init__(self):
        self.session = Session(DEV, 30, False)
        self.stats = self.session.stats


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


def _rig(n):
    log = CountingLog(PosixFS(), tmpdir("delivery") + "/queue.log")
    q = ChargeQueue(log, window=8).open()
    for i in range(1, n + 1):
        q.commit(make_sale(bytes([i]) * 16, q.take_receipt_no(), 100 * i, [], "CNY", NOW, True,
                           "c"))
    metrics = Metrics()
    down = Downlink(DEV, SECRET, "pos/v1", Counters(), metrics, lambda line: None)
    down.on("charge_result", lambda body, seq: q.on_answer("charge_result", body, NOW, seq))
    delivery = GroupedDelivery(down.receive, q, metrics, lambda line: None)
    link = Link()
    assert delivery.attach(link)
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
    events = link.session.receive(_results([bytes([i]) * 16 for i in (1, 2, 3)]), 2)
    # delivered by the group (not as events for on_message), all three in one append
    assert [e for e in events if e[0] == "message"] == []
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
    link.session.receive(_results([bytes([1]) * 16, bytes([2]) * 16]), 2)
    assert [r["cid"][0] for r in q.pending] == [1, 2, 3]
    assert metrics.get("answers_not_recorded") == 1
    # the host answers again when asked again: then it lands
    log.fail = False
    link.session.receive(_results([bytes([1]) * 16], first_seq=10), 3)
    assert [r["cid"][0] for r in q.pending] == [2, 3]


def test_a_repeat_inside_a_group_counts_once():
    q, log, link, metrics = _rig(2)
    cid = bytes([1]) * 16
    link.session.receive(_results([cid, cid]), 2)
    assert [r["cid"][0] for r in q.pending] == [2]
    assert q.dup_results == 1 and log.appends == 2 + 1
