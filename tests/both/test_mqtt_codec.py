# MQTT 3.1.1 codec: literal byte vectors (checked field by field against the 3.1.1 spec),
# remaining-length boundaries, split input and every rejection.
from binascii import unhexlify

from protocol import mqtt
from protocol.mqtt import MQTTError, Parser
from tests.both.util import raises

H = unhexlify

WILL = ("pos/v1/dev/T-1/state", b"\xa1", 1, True)

# (name, encoded bytes, decoded tuple)
VECTORS = [
    # 10 | rl 47 | "MQTT" level 4 | flags ec = user, password, will retain, will qos 1, will
    # | keepalive 30 | "dev1" | will topic | will payload a1 | "u" | "p"
    ("connect",
     H("102f00044d51545404ec001e0004646576310014706f732f76312f6465762f542d312f7374617465"
       "0001a1000175000170"),
     ("connect", "dev1", 30, False, WILL, "u", b"p")),
    # clean session only, empty client id, keepalive 0
    ("connect_min", H("100c00044d515454040200000000"), ("connect", "", 0, True, None, None, None)),
    ("connack_present", H("20020100"), ("connack", True, 0)),
    ("connack_refused", H("20020005"), ("connack", False, 5)),
    # 3b = PUBLISH, DUP, QoS 1, RETAIN | topic "a/b" | pid 7 | "hello"
    ("publish_qos1", H("3b0c0003612f62000768656c6c6f"),
     ("publish", "a/b", b"hello", 1, True, True, 7)),
    ("publish_qos0_empty", H("30050003612f62"), ("publish", "a/b", b"", 0, False, False, 0)),
    ("publish_utf8", H("320b0006e4ba8ce4b889ffff00"),
     ("publish", "\u4e8c\u4e09", b"\x00", 1, False, False, 0xFFFF)),
    ("puback", H("40020201"), ("puback", 513)),
    ("subscribe",
     H("821e00010003612f23010013706f732f76312f666c6565742f646f776e2f2300"),
     ("subscribe", 1, [("a/#", 1), ("pos/v1/fleet/down/#", 0)])),
    ("suback", H("900400010180"), ("suback", 1, [1, 0x80])),
    ("unsubscribe", H("a20700020003612f23"), ("unsubscribe", 2, ["a/#"])),
    ("unsuback", H("b0020002"), ("unsuback", 2)),
    ("pingreq", H("c000"), ("pingreq",)),
    ("pingresp", H("d000"), ("pingresp",)),
    ("disconnect", H("e000"), ("disconnect",)),
]


def _encode(name):
    if name == "connect":
        return mqtt.connect("dev1", 30, clean_session=False, will=WILL, username="u",
                            password=b"p")
    if name == "connect_min":
        return mqtt.connect("", 0)
    if name == "connack_present":
        return mqtt.connack(True, 0)
    if name == "connack_refused":
        return mqtt.connack(False, 5)
    if name == "publish_qos1":
        return mqtt.publish("a/b", b"hello", qos=1, retain=True, pid=7, dup=True)
    if name == "publish_qos0_empty":
        return mqtt.publish("a/b", b"")
    if name == "publish_utf8":
        return mqtt.publish("\u4e8c\u4e09", b"\x00", qos=1, pid=0xFFFF)
    if name == "puback":
        return mqtt.puback(513)
    if name == "subscribe":
        return mqtt.subscribe(1, [("a/#", 1), ("pos/v1/fleet/down/#", 0)])
    if name == "suback":
        return mqtt.suback(1, [1, 0x80])
    if name == "unsubscribe":
        return mqtt.unsubscribe(2, ["a/#"])
    if name == "unsuback":
        return mqtt.unsuback(2)
    if name == "pingreq":
        return mqtt.pingreq()
    if name == "pingresp":
        return mqtt.pingresp()
    return mqtt.disconnect()


def _code(fn, *args, **kw):
    return raises(MQTTError, fn, *args, **kw).code


def _parse_code(data, max_packet=mqtt.MAX_PACKET):
    return _code(Parser(max_packet).feed, data)


def test_encoders_produce_the_vectors():
    for name, wire, _ in VECTORS:
        assert _encode(name) == wire, name


def test_parser_decodes_the_vectors():
    for name, wire, packet in VECTORS:
        assert Parser().feed(wire) == [packet], name


def test_encoders_accept_text_and_buffer_payloads():
    assert mqtt.publish("a/b", "hello", 1, True, 7, True) == VECTORS[4][1]
    assert mqtt.publish("a/b", bytearray(b"hello"), 1, True, 7, True) == VECTORS[4][1]
    assert mqtt.connect("dev1", 30, False, WILL, "u", "p") == VECTORS[0][1]


def test_parser_takes_every_packet_of_one_chunk_in_order():
    stream = b"".join(v[1] for v in VECTORS)
    assert Parser().feed(stream) == [v[2] for v in VECTORS]


def test_parser_fed_byte_by_byte_yields_the_same_packets():
    stream = b"".join(v[1] for v in VECTORS)
    ends = []
    total = 0
    for v in VECTORS:
        total += len(v[1])
        ends.append(total)
    p = Parser()
    got = []
    for i in range(len(stream)):
        out = p.feed(stream[i:i + 1])
        if out:
            assert len(out) == 1 and i + 1 == ends[len(got)], i  # completes on its last byte
        got.extend(out)
    assert got == [v[2] for v in VECTORS]
    assert p.buffered() == 0


def test_parser_keeps_a_partial_packet_across_feeds():
    wire = VECTORS[4][1]
    p = Parser()
    assert p.feed(bytearray(wire[:5])) == []
    assert p.buffered() == 5
    assert p.feed(memoryview(wire[5:] + wire[:1])) == [VECTORS[4][2]]
    assert p.buffered() == 1
    assert p.feed(wire[1:]) == [VECTORS[4][2]]


def test_large_packet_in_small_chunks_then_the_next_packet():
    big = mqtt.publish("pos/v1/fleet/down/trustlist", bytes(range(256)) * 400, 1, True, 9)
    stream = big + VECTORS[7][1]
    p = Parser()
    got = []
    for i in range(0, len(stream), 1000):
        got.extend(p.feed(stream[i:i + 1000]))
        if not got:  # only the payload is held, in the pieces it came in
            assert p.buffered() == min(i + 1000, len(big)) - (len(big) - 102400)
    assert got == [("publish", "pos/v1/fleet/down/trustlist", bytes(range(256)) * 400, 1, True,
                    False, 9), VECTORS[7][2]]
    assert p.buffered() == 0


def test_remaining_length_encoding_boundaries():
    cases = [(0, "00"), (127, "7f"), (128, "8001"), (16383, "ff7f"), (16384, "808001"),
             (2097151, "ffff7f"), (2097152, "80808001"), (268435455, "ffffff7f")]
    for n, hexed in cases:
        assert mqtt.remaining_length(n) == H(hexed), n
    assert _code(mqtt.remaining_length, 268435456) == "too_large"
    assert _code(mqtt.remaining_length, -1) == "too_large"


def _publish_with_body(n):
    # QoS 0 PUBLISH to "t" whose remaining length is exactly n (3 bytes of topic field)
    return mqtt.publish("t", b"\x5a" * (n - 3))


def test_remaining_length_boundaries_round_trip():
    for n, header in ((127, "307f"), (128, "308001"), (16383, "30ff7f"), (16384, "30808001")):
        wire = _publish_with_body(n)
        assert wire[:len(header) // 2] == H(header), n
        assert len(wire) == len(header) // 2 + n
        assert Parser().feed(wire) == [("publish", "t", b"\x5a" * (n - 3), 0, False, False, 0)]


def test_parser_reads_four_byte_lengths_without_the_body():
    # Large bodies are only announced: the parser waits for them (and, under the default size
    # limit, reads an oversized one as topic + skipped payload, or rejects it if no PUBLISH).
    for header, n in (("30ffff7f", 2097151), ("3080808001", 2097152),
                      ("30ffffff7f", 268435455)):
        p = Parser(max_packet=n + 5)
        assert p.feed(H(header)) == []
        assert p.buffered() == len(header) // 2
        assert Parser().feed(H(header)) == []  # oversized: waits for its topic
        assert _parse_code(H("90" + header[2:])) == "too_large"  # a SUBACK that size


def test_rejects_more_than_four_length_bytes_before_the_fifth_arrives():
    assert _parse_code(H("30ffffffff")) == "bad_remaining_length"
    assert _parse_code(H("30ffffffff01"), max_packet=1 << 30) == "bad_remaining_length"


def test_rejects_oversize_packet_from_its_header_alone():
    limit = mqtt.MAX_PACKET
    assert limit == 256 * 1024
    ok = H("90") + mqtt.remaining_length(limit - 4)  # 1 + 3 length bytes + body == limit
    p = Parser()
    assert p.feed(ok) == []
    too_big = H("90") + mqtt.remaining_length(limit - 3)
    assert _parse_code(too_big) == "too_large"
    assert _parse_code(H("9005"), max_packet=6) == "too_large"
    assert Parser(max_packet=7).feed(H("30050003612f62")) == [VECTORS[5][2]]


def test_an_oversized_publish_is_read_as_its_header_and_skipped():
    payload = bytes(range(256)) * 40
    big = mqtt.publish("pos/v1/fleet/down/revocations", payload, 1, True, 77, True)
    after = VECTORS[4][1]
    for chunk in (1, 7, 100, 4096, len(big) + len(after)):
        p = Parser(max_packet=1000)
        got = []
        stream = big + after
        for i in range(0, len(stream), chunk):
            got += p.feed(stream[i:i + chunk])
            assert p.buffered() <= max(chunk, 40)  # never the payload: at most one chunk
        assert got == [("oversized", "pos/v1/fleet/down/revocations", len(big), 1, True, True,
                        77), VECTORS[4][2]], chunk
        assert p.buffered() == 0
    # exactly at the limit it is an ordinary packet; one byte more and it is skipped
    at = mqtt.publish("t", b"x" * 100)
    assert Parser(max_packet=len(at)).feed(at)[0][0] == "publish"
    assert Parser(max_packet=len(at) - 1).feed(at) == [("oversized", "t", len(at), 0, False,
                                                        False, 0)]


class _NoRoom(list):
    def append(self, item):
        raise MemoryError("no block that size")


def test_a_publish_that_finds_no_room_on_the_heap_is_skipped_like_an_oversized_one():
    big = mqtt.publish("f/list", b"\x11" * 20000, 1, True, 5)
    p = Parser()
    assert p.feed(big[:5000]) == []  # being kept, in pieces
    p._pieces = _NoRoom(p._pieces)  # the heap is full: the next piece cannot be kept
    got = []
    for i in range(5000, len(big), 4096):
        got += p.feed(big[i:i + 4096])
    assert got == [("oversized", "f/list", len(big), 1, True, False, 5)]
    assert p.feed(VECTORS[4][1]) == [VECTORS[4][2]]  # and the stream is still in step


def test_an_oversized_publish_header_is_still_checked():
    # QoS 3, a bad topic, a topic longer than the packet: the stream is out of step
    assert _parse_code(H("360a0003612f62") + b"\x00" * 7, max_packet=5) == "bad_qos"
    assert _parse_code(H("300a0003612f23") + b"\x00" * 7, max_packet=5) == "bad_topic"
    assert _parse_code(H("3006ffff612f6200"), max_packet=5) == "truncated"
    assert _parse_code(H("320a0003612f620000") + b"\x00" * 3, max_packet=5) == "bad_packet_id"
    p = Parser(max_packet=5)
    assert p.feed(H("300a0003612f")) == []  # topic incomplete: waits
    assert p.feed(H("62") + b"\x00" * 5) == [("oversized", "a/b", 12, 0, False, False, 0)]


def test_rejects_invalid_utf8_topics():
    bad = ["ff", "c080", "eda080", "f4908080", "e282", "00", "61006200"]
    for topic in bad:
        t = H(topic)
        wire = H("30") + bytes([2 + len(t)]) + bytes([0, len(t)]) + t
        assert _parse_code(wire) == "bad_utf8", topic
    # the largest code point and a 4-byte character are fine
    for topic in ("f48fbfbf", "f09f9880", "efbfbf"):
        t = H(topic)
        wire = H("30") + bytes([2 + len(t)]) + bytes([0, len(t)]) + t
        assert Parser().feed(wire)[0][1] == t.decode()


def test_rejects_qos_3_and_wrong_reserved_flags():
    assert _parse_code(H("36050003612f62")) == "bad_qos"
    assert _parse_code(H("38050003612f62")) == "bad_flags"      # DUP on QoS 0
    assert _parse_code(H("41020001")) == "bad_flags"            # PUBACK flags 1
    assert _parse_code(H("80080001000361" "2f2301")) == "bad_flags"
    assert _parse_code(H("a0070002000361" "2f23")) == "bad_flags"
    assert _parse_code(H("c100")) == "bad_flags"
    assert _parse_code(H("20020200")) == "bad_flags"            # CONNACK reserved bit
    assert _parse_code(H("820700010003612f23")) == "truncated"      # options byte missing
    assert _parse_code(H("820800010003612f2304")) == "bad_flags"
    assert _parse_code(H("820800010003612f2303")) == "bad_qos"


def test_rejects_reserved_types_codes_and_ids():
    assert _parse_code(H("0000")) == "bad_type"
    assert _parse_code(H("f000")) == "bad_type"
    assert _parse_code(H("20020006")) == "bad_return_code"
    assert _parse_code(H("9003000103")) == "bad_return_code"
    assert _parse_code(H("90020001")) == "empty"
    assert _parse_code(H("40020000")) == "bad_packet_id"
    assert _parse_code(H("32070003612f620000")) == "bad_packet_id"
    assert _parse_code(H("30050003612f23")) == "bad_topic"        # wildcard in a name
    assert _parse_code(H("30020000")) == "bad_topic"              # empty name
    assert _parse_code(H("82020001")) == "empty"
    assert _parse_code(H("82050001000000")) == "bad_topic"


def test_rejects_truncated_and_overlong_fields():
    assert _parse_code(H("3003000561")) == "truncated"           # topic longer than body
    assert _parse_code(H("320500036125620001"[:14])) == "truncated"   # pid cut off
    assert _parse_code(H("400102")) == "truncated"
    assert _parse_code(H("4003000100")) == "bad_length"
    assert _parse_code(H("c00100")) == "bad_length"
    assert _parse_code(H("2003000000")) == "bad_length"
    assert _parse_code(H("200100")) == "truncated"


def test_rejects_bad_connect_packets():
    good = VECTORS[0][1]
    assert _parse_code(good[:4] + b"MQTS" + good[8:]) == "bad_protocol"
    assert _parse_code(good[:8] + b"\x03" + good[9:]) == "bad_protocol"
    assert _parse_code(good[:9] + b"\xed" + good[10:]) == "bad_flags"      # reserved bit
    assert _parse_code(good[:9] + b"\xfc" + good[10:]) == "bad_qos"        # will QoS 3
    minimal = VECTORS[1][1]
    assert _parse_code(minimal[:9] + b"\x42" + minimal[10:]) == "bad_flags"  # password only
    assert _parse_code(minimal[:9] + b"\x0a" + minimal[10:]) == "bad_flags"  # will QoS no will
    assert _parse_code(minimal[:1] + b"\x0b" + minimal[2:-1]) == "truncated"


def test_parser_stays_failed_after_an_error():
    p = Parser()
    assert raises(MQTTError, p.feed, H("36050003612f62")).code == "bad_qos"
    assert raises(MQTTError, p.feed, VECTORS[-1][1]).code == "bad_qos"
    assert p.buffered() == 0


def test_packets_before_garbage_in_one_chunk_are_not_returned():
    # the owner drops the link, so nothing decoded from this chunk is acted upon (or acked)
    assert _parse_code(VECTORS[4][1] + H("f000")) == "bad_type"


def test_encoders_reject_unencodable_values():
    assert _code(mqtt.publish, "a/b", b"", 3, False, 1) == "bad_qos"
    assert _code(mqtt.publish, "a/b", b"", 1) == "bad_packet_id"
    assert _code(mqtt.publish, "a/b", b"", 1, False, 65536) == "bad_packet_id"
    assert _code(mqtt.publish, "a/b", b"", 0, False, 3) == "bad_packet_id"
    assert _code(mqtt.publish, "a/b", b"", 0, False, 0, True) == "bad_packet_id"
    assert _code(mqtt.publish, "a/+", b"") == "bad_topic"
    assert _code(mqtt.publish, "", b"") == "bad_topic"
    assert _code(mqtt.publish, "a\x00", b"") == "bad_utf8"
    assert _code(mqtt.publish, "a" * 65536, b"") == "too_long"
    assert _code(mqtt.publish, "a", 5) == "bad_type"
    assert _code(mqtt.publish, 5, b"") == "bad_type"
    assert _code(mqtt.puback, 0) == "bad_packet_id"
    assert _code(mqtt.subscribe, 1, []) == "empty"
    assert _code(mqtt.subscribe, 1, [("a", 3)]) == "bad_qos"
    assert _code(mqtt.subscribe, 1, [("", 0)]) == "bad_topic"
    assert _code(mqtt.unsubscribe, 1, []) == "empty"
    assert _code(mqtt.suback, 1, [3]) == "bad_return_code"
    assert _code(mqtt.suback, 1, []) == "empty"
    assert _code(mqtt.connack, False, 6) == "bad_return_code"
    assert _code(mqtt.connect, "d", 65536) == "bad_keepalive"
    assert _code(mqtt.connect, "d", 10, True, None, None, b"pw") == "bad_credentials"
    assert _code(mqtt.connect, "d", 10, True, ("a/#", b"", 0, False)) == "bad_topic"
    assert _code(mqtt.connect, "d", 10, True, ("a", b"", 3, False)) == "bad_qos"


def test_decoded_payload_is_bytes_and_error_has_a_message():
    pkt = Parser().feed(bytearray(VECTORS[4][1]))[0]
    assert isinstance(pkt[2], bytes)
    e = raises(MQTTError, Parser().feed, H("36050003612f62"))
    assert "bad_qos" in str(e)
