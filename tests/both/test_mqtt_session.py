# protocol/mqtt_session.py on both runtimes: the MQTT client session as bytes and events, with
# the broker's side written by hand through protocol/mqtt.py and time passed in (ms).
from protocol import mqtt
from protocol.mqtt import MQTTError, Parser
from protocol.mqtt_session import Session, SessionError
from tests.both.util import raises

CONNACK = mqtt.connack(False, 0)


def sent(s):
    """The packets the session has queued, decoded as the broker would."""
    return Parser(1 << 20).feed(s.data_to_send())


def up(now=0, **kw):
    s = Session("T-1", kw.pop("keepalive", 30), False, **kw)
    s.connect(now)
    assert sent(s)[0][0] == "connect"
    assert s.receive(CONNACK, now) == [("connected", False)]
    assert s.up and s.data_to_send() == b""
    return s


def test_connect_then_connack_brings_the_session_up():
    s = Session("T-1", 30, False, ("t/state", b"gone", 1, True), "T-1", b"pw")
    assert not s.up and s.wait_ms(0) is None
    s.connect(0)
    assert sent(s) == [("connect", "T-1", 30, False, ("t/state", b"gone", 1, True), "T-1",
                        b"pw")]
    # a CONNACK in two pieces
    assert s.receive(CONNACK[:1], 5) == []
    assert s.receive(CONNACK[1:], 6) == [("connected", False)]
    assert s.up and s.stats["connects"] == 1


def test_a_refused_connack_ends_the_connection():
    s = Session("T-1", 30)
    s.connect(0)
    s.data_to_send()
    assert s.receive(mqtt.connack(False, 5) + mqtt.publish("a", b"x"), 1) == [("refused", 5)]
    assert not s.up and s.stats["connect_failures"] == 1 and s.stats["rx"] == 0
    assert raises(SessionError, s.publish, "a", b"x").code == "offline"


def test_anything_but_connack_first_is_a_protocol_error():
    s = Session("T-1", 30)
    s.connect(0)
    assert raises(MQTTError, s.receive, mqtt.pingresp(), 1).code == "unexpected_packet"
    assert s.stats["bad_packets"] == 1


def test_bad_connect_arguments_fail_at_construction():
    assert raises(SessionError, Session, "", 70000).code == "bad_message"
    assert raises(SessionError, Session, "T-1", 30, True, ("a/#", b"", 1, False)).code \
        == "bad_message"


def test_publish_waits_in_flight_until_its_puback():
    s = up()
    pid = s.publish("pos/up/charge", b"sale", 1, False, 10)
    assert sent(s) == [("publish", "pos/up/charge", b"sale", 1, False, False, pid)]
    assert s.inflight() == 1 and s.stats["tx"] == 1
    assert s.receive(mqtt.puback(pid + 1), 11) == []  # someone else's: ignored
    assert s.receive(mqtt.puback(pid), 12) == [("published", pid)]
    assert s.inflight() == 0
    assert s.receive(mqtt.puback(pid), 13) == []  # a repeat is harmless
    assert s.publish("a", b"x", 0) == 0  # QoS 0: nothing to wait for
    assert sent(s) == [("publish", "a", b"x", 0, False, False, 0)]
    assert s.inflight() == 0


def test_inbound_publish_is_delivered_before_its_puback():
    s = up()
    chunk = (mqtt.publish("d/1", b"one", 1, False, 7) + mqtt.publish("d/2", b"two", 0)
             + mqtt.publish("d/3", b"three", 1, True, 8, True))
    events = s.receive(chunk, 1)
    assert events == [("message", "d/1", b"one"), ("message", "d/2", b"two"),
                      ("message", "d/3", b"three")]
    # the PUBACKs are only queued: the owner sends them after acting on the events
    assert sent(s) == [("puback", 7), ("puback", 8)]
    assert s.stats["rx"] == 3


def test_qos_2_and_unexpected_packets_are_protocol_errors():
    s = up()
    assert raises(MQTTError, s.receive, mqtt.publish("d", b"x", 2, False, 3), 1).code == "bad_qos"
    s = up()
    assert raises(MQTTError, s.receive, CONNACK, 1).code == "unexpected_packet"
    assert s.stats["bad_packets"] == 1


def test_an_oversized_publish_is_skipped_acknowledged_and_the_next_one_flows():
    s = up(max_packet=200)
    big = mqtt.publish("pos/v1/fleet/down/revocations", b"\xab" * 5000, 1, True, 41)
    normal = mqtt.publish("pos/v1/dev/T-1/down/config", b"small", 1, False, 42)
    stream = big + normal
    events = []
    for i in range(0, len(stream), 64):
        events += s.receive(stream[i:i + 64], i)
        assert s._parser.buffered() <= 200  # the big payload is never held
    assert events == [("oversized", "pos/v1/fleet/down/revocations", len(big)),
                      ("message", "pos/v1/dev/T-1/down/config", b"small")]
    assert sent(s) == [("puback", 41), ("puback", 42)]
    assert s.up and s.stats["oversized"] == 1 and s.stats["rx"] == 1
    # in one chunk too, and at QoS 0 (nothing to acknowledge)
    s = up(max_packet=200)
    q0 = mqtt.publish("f/big", b"\x00" * 300)
    assert s.receive(q0 + normal, 1) == [("oversized", "f/big", len(q0)),
                                          ("message", "pos/v1/dev/T-1/down/config", b"small")]
    assert sent(s) == [("puback", 42)]


def test_oversized_packets_other_than_publish_end_the_connection():
    s = up(max_packet=20)
    suback = mqtt.suback(5, [1] * 30)
    assert raises(MQTTError, s.receive, suback, 1).code == "too_large"


def test_reconnect_resends_unacknowledged_publishes_in_order_with_dup():
    s = up()
    pids = [s.publish("up/%d" % i, b"%d" % i, 1, False, i) for i in range(4)]
    s.data_to_send()
    s.receive(mqtt.puback(pids[1]), 5)
    s.abandon(pids[2])  # its caller gave up: still resent
    s.lost()
    assert not s.up and raises(SessionError, s.publish, "a", b"x").code == "offline"
    s.connect(100)
    assert sent(s)[0][0] == "connect"  # nothing else before the CONNACK
    assert s.receive(mqtt.connack(True, 0), 101) == [("connected", True)]
    again = sent(s)
    assert again == [("publish", "up/0", b"0", 1, False, True, pids[0]),
                     ("publish", "up/2", b"2", 1, False, True, pids[2]),
                     ("publish", "up/3", b"3", 1, False, True, pids[3])]
    assert s.stats["retransmits"] == 3
    for pid in (pids[0], pids[2], pids[3]):
        s.receive(mqtt.puback(pid), 102)
    s.lost()
    s.connect(200)
    s.data_to_send()
    s.receive(CONNACK, 201)
    assert s.data_to_send() == b""  # all acknowledged: nothing to resend


def test_a_late_puback_gets_one_dup_at_the_retry_time():
    s = up()
    pid = s.publish("up/x", b"late", 1, False, 1000, retry_ms=500)
    s.data_to_send()
    assert s.wait_ms(1000) == 500
    assert s.tick(1499) == [] and s.data_to_send() == b""
    assert s.tick(1500) == []
    assert sent(s) == [("publish", "up/x", b"late", 1, False, True, pid)]
    assert s.stats["retransmits"] == 1
    assert s.tick(5000) == [] and s.data_to_send() == b""  # once per connection
    assert s.receive(mqtt.puback(pid), 5001) == [("published", pid)]


def test_keepalive_pings_when_quiet_and_declares_a_dead_link():
    s = up(keepalive=10)
    assert s.wait_ms(0) == 5000
    assert s.tick(4999) == [] and s.data_to_send() == b""
    assert s.tick(5000) == [] and sent(s) == [("pingreq",)]
    assert s.wait_ms(5000) == 10000  # 1.5 x keepalive after the last packet received
    s.receive(mqtt.pingresp(), 6000)
    assert s.tick(14999) == [] and sent(s) == [("pingreq",)]  # quiet again since 6000
    assert s.tick(20999) == []
    assert s.tick(21000) == [("dead", "no answer to PINGREQ")]
    assert not s.up and s.stats["ping_timeouts"] == 1
    assert s.wait_ms(21000) is None


def test_sending_alone_does_not_keep_a_dead_link_alive():
    s = up(keepalive=10)
    for t in range(0, 15000, 1000):
        s.publish("up/x", b"x", 0, False, t)  # our traffic, no answer from the broker
        assert s.tick(t) == []
    assert s.tick(15000) == [("dead", "no answer to PINGREQ")]


def test_keepalive_zero_never_pings():
    s = Session("T-1", 0)
    s.connect(0)
    s.data_to_send()
    s.receive(CONNACK, 0)
    assert s.wait_ms(0) is None and s.tick(10 ** 9) == [] and s.data_to_send() == b""


def test_subscribe_and_its_suback():
    s = up()
    pid = s.subscribe([("pos/v1/dev/T-1/down/#", 1), ("pos/v1/fleet/down/#", 1)], 0)
    assert sent(s) == [("subscribe", pid, [("pos/v1/dev/T-1/down/#", 1),
                                           ("pos/v1/fleet/down/#", 1)])]
    assert s.receive(mqtt.suback(pid, [1, 0x80]), 1) == [("subscribed", pid, [1, 0x80])]
    other = s.subscribe([("a", 0)], 2)
    s.forget(other)
    assert s.receive(mqtt.suback(other, [0]), 3) == []
    assert raises(SessionError, s.subscribe, [("a", 2)]).code == "bad_message"
    assert raises(SessionError, s.publish, "a", b"x", 2).code == "bad_message"
    assert raises(SessionError, s.publish, "a/#", b"x").code == "bad_message"
    s.lost()
    assert raises(SessionError, s.subscribe, [("a", 1)]).code == "offline"


def test_max_inflight_makes_room_only_from_abandoned_publishes():
    s = up(max_inflight=3)
    pids = [s.publish("up", b"%d" % i) for i in range(3)]
    assert raises(SessionError, s.publish, "up", b"x").code == "busy"
    s.abandon(pids[2])
    s.abandon(pids[1])
    s.publish("up", b"new")
    s.lost()
    s.connect(0)
    s.data_to_send()
    s.receive(CONNACK, 0)
    assert [p[2] for p in sent(s)] == [b"0", b"2", b"new"]  # the oldest abandoned one went


def test_packet_ids_skip_those_in_use_and_wrap():
    s = up()
    s._pid = 0xFFFE
    a = s.publish("up", b"a")
    b = s.subscribe([("x", 1)])
    c = s.publish("up", b"c")
    assert (a, b, c) == (0xFFFF, 1, 2)
    s._pid = 0xFFFE
    assert s.publish("up", b"d") == 3  # 0xFFFF, 1 and 2 are still waiting


def test_close_says_disconnect():
    s = up()
    s.close(1)
    assert sent(s) == [("disconnect",)] and not s.up
    assert s.receive(mqtt.publish("d", b"x", 1, False, 1), 2) == []
