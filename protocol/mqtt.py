# MQTT 3.1.1 packet codec, sans-I/O: encoders return bytes, Parser turns bytes into packet tuples.
# No sockets, no clocks: the session (protocol/mqtt_session.py) and test brokers use it; the
# connection owner drops the link when a packet is malformed (MQTTError).
import struct

CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

MAX_REMAINING = 268435455  # largest value four length bytes can carry
MAX_PACKET = 256 * 1024
# A PUBLISH larger than this that arrives in pieces has its payload kept as those pieces and
# joined once at its end (Parser): one large block on a small heap, not the packet and then
# its payload.
BIG_PACKET = 4096
SUBACK_FAILURE = 0x80

# Fixed-header flags the spec (2.2.2) requires for every type but PUBLISH.
_FLAGS = {CONNECT: 0, CONNACK: 0, PUBACK: 0, PUBREC: 0, PUBREL: 2, PUBCOMP: 0, SUBSCRIBE: 2,
          SUBACK: 0, UNSUBSCRIBE: 2, UNSUBACK: 0, PINGREQ: 0, PINGRESP: 0, DISCONNECT: 0}
_PID_ONLY = {PUBACK: "puback", PUBREC: "pubrec", PUBREL: "pubrel", PUBCOMP: "pubcomp",
             UNSUBACK: "unsuback"}
_EMPTY = {PINGREQ: "pingreq", PINGRESP: "pingresp", DISCONNECT: "disconnect"}


class MQTTError(Exception):
    """Malformed packet or unencodable value; `code` is a stable short string."""

    def __init__(self, code, message=None):
        super().__init__(code if message is None else code + ": " + message)
        self.code = code


# ---------------------------------------------------------------- encoding

def remaining_length(n):
    """The variable-length Remaining Length field (1-4 bytes) for a body of n bytes."""
    if n < 0 or n > MAX_REMAINING:
        raise MQTTError("too_large", "remaining length %d" % n)
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _packet(kind, flags, body):
    return bytes([(kind << 4) | flags]) + remaining_length(len(body)) + body


def _blob(data):
    if len(data) > 0xFFFF:
        raise MQTTError("too_long", "field of %d bytes" % len(data))
    return struct.pack("!H", len(data)) + data


def _text(s, what):
    if isinstance(s, str):
        data = s.encode()
    elif isinstance(s, (bytes, bytearray)):
        data = bytes(s)
    else:
        raise MQTTError("bad_type", what + " must be text")
    _check_utf8(data, what)
    return _blob(data)


def _check_pid(pid):
    if not isinstance(pid, int) or not 0 < pid <= 0xFFFF:
        raise MQTTError("bad_packet_id", repr(pid))
    return struct.pack("!H", pid)


def _check_qos(qos, top=2):
    if qos not in (0, 1, 2) or qos > top:
        raise MQTTError("bad_qos", repr(qos))


def _check_topic_name(data):
    if not data:
        raise MQTTError("bad_topic", "empty topic")
    if b"#" in data or b"+" in data:
        raise MQTTError("bad_topic", "wildcard in a topic name")


def _check_filter(data):
    if not data:
        raise MQTTError("bad_topic", "empty filter")


def _payload(payload):
    if isinstance(payload, str):
        return payload.encode()
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    raise MQTTError("bad_type", "payload must be bytes")


def connect(client_id, keepalive, clean_session=True, will=None, username=None, password=None):
    if not isinstance(keepalive, int) or not 0 <= keepalive <= 0xFFFF:
        raise MQTTError("bad_keepalive", repr(keepalive))
    flags = 0x02 if clean_session else 0
    payload = _text(client_id, "client id")
    if will is not None:
        w_topic, w_payload, w_qos, w_retain = will
        _check_qos(w_qos)
        w_topic = _text(w_topic, "will topic")
        _check_topic_name(w_topic[2:])
        flags |= 0x04 | (w_qos << 3) | (0x20 if w_retain else 0)
        payload += w_topic + _blob(_payload(w_payload))
    if username is not None:
        flags |= 0x80
        payload += _text(username, "username")
    if password is not None:
        if username is None:
            raise MQTTError("bad_credentials", "a password needs a username")
        flags |= 0x40
        payload += _blob(_payload(password))
    head = _blob(b"MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    return _packet(CONNECT, 0, head + payload)


def connack(session_present, rc):
    if not 0 <= rc <= 5:
        raise MQTTError("bad_return_code", repr(rc))
    return _packet(CONNACK, 0, bytes([1 if session_present else 0, rc]))


def publish(topic, payload, qos=0, retain=False, pid=0, dup=False):
    _check_qos(qos)
    name = _text(topic, "topic")
    _check_topic_name(name[2:])
    if qos:
        name += _check_pid(pid)
    elif pid or dup:
        raise MQTTError("bad_packet_id", "QoS 0 carries no packet id and no DUP")
    flags = (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    return _packet(PUBLISH, flags, name + _payload(payload))


def puback(pid):
    return _packet(PUBACK, 0, _check_pid(pid))


def unsuback(pid):
    return _packet(UNSUBACK, 0, _check_pid(pid))


def subscribe(pid, topics):
    body = _check_pid(pid)
    if not topics:
        raise MQTTError("empty", "SUBSCRIBE needs at least one filter")
    for flt, qos in topics:
        _check_qos(qos)
        data = _text(flt, "filter")
        _check_filter(data[2:])
        body += data + bytes([qos])
    return _packet(SUBSCRIBE, 2, body)


def suback(pid, codes):
    if not codes:
        raise MQTTError("empty", "SUBACK needs at least one return code")
    for c in codes:
        if c not in (0, 1, 2, SUBACK_FAILURE):
            raise MQTTError("bad_return_code", repr(c))
    return _packet(SUBACK, 0, _check_pid(pid) + bytes(codes))


def unsubscribe(pid, filters):
    body = _check_pid(pid)
    if not filters:
        raise MQTTError("empty", "UNSUBSCRIBE needs at least one filter")
    for flt in filters:
        data = _text(flt, "filter")
        _check_filter(data[2:])
        body += data
    return _packet(UNSUBSCRIBE, 2, body)


def pingreq():
    return b"\xc0\x00"


def pingresp():
    return b"\xd0\x00"


def disconnect():
    return b"\xe0\x00"


# ---------------------------------------------------------------- decoding

def _check_utf8(data, what):
    # RFC 3629 well-formedness plus MQTT's ban on U+0000 (1.5.3). Checked by hand because
    # MicroPython's decoder accepts surrogates, overlong forms and code points past U+10FFFF.
    i = 0
    n = len(data)
    while i < n:
        c = data[i]
        if c < 0x80:
            if c == 0:
                raise MQTTError("bad_utf8", what + " contains U+0000")
            i += 1
            continue
        lo, hi = 0x80, 0xBF
        if 0xC2 <= c <= 0xDF:
            need = 1
        elif c == 0xE0:
            need, lo = 2, 0xA0
        elif c == 0xED:
            need, hi = 2, 0x9F  # would be a UTF-16 surrogate
        elif 0xE1 <= c <= 0xEF:
            need = 2
        elif c == 0xF0:
            need, lo = 3, 0x90
        elif 0xF1 <= c <= 0xF3:
            need = 3
        elif c == 0xF4:
            need, hi = 3, 0x8F
        else:
            raise MQTTError("bad_utf8", what + " is not UTF-8")
        if i + need >= n:
            raise MQTTError("bad_utf8", what + " ends inside a character")
        if not lo <= data[i + 1] <= hi:
            raise MQTTError("bad_utf8", what + " is not UTF-8")
        for k in range(i + 2, i + need + 1):
            if not 0x80 <= data[k] <= 0xBF:
                raise MQTTError("bad_utf8", what + " is not UTF-8")
        i += need + 1


class _Reader:
    """Cursor over one packet body; running past its end is a truncated field."""

    def __init__(self, body):
        self.body = body
        self.pos = 0

    def left(self):
        return len(self.body) - self.pos

    def take(self, n):
        if n > self.left():
            raise MQTTError("truncated", "field runs past the packet end")
        out = self.body[self.pos:self.pos + n]
        self.pos += n
        return bytes(out)

    def byte(self):
        return self.take(1)[0]

    def u16(self):
        b = self.take(2)
        return (b[0] << 8) | b[1]

    def pid(self):
        pid = self.u16()
        if pid == 0:
            raise MQTTError("bad_packet_id", "packet id 0")
        return pid

    def blob(self):
        return self.take(self.u16())

    def text(self, what):
        data = self.blob()
        _check_utf8(data, what)
        return data.decode()

    def end(self):
        if self.left():
            raise MQTTError("bad_length", "%d unexpected bytes at the packet end" % self.left())


def _decode_connect(r):
    if r.blob() != b"MQTT":
        raise MQTTError("bad_protocol", "protocol name is not MQTT")
    level = r.byte()
    if level != 4:
        raise MQTTError("bad_protocol", "protocol level %d" % level)
    flags = r.byte()
    keepalive = r.u16()
    if flags & 0x01:
        raise MQTTError("bad_flags", "reserved CONNECT flag set")
    will_flag = flags & 0x04
    will_qos = (flags >> 3) & 3
    will_retain = bool(flags & 0x20)
    if will_qos == 3:
        raise MQTTError("bad_qos", "will QoS 3")
    if not will_flag and (will_qos or will_retain):
        raise MQTTError("bad_flags", "will QoS/retain without a will")
    if flags & 0x40 and not flags & 0x80:
        raise MQTTError("bad_flags", "password flag without username flag")
    client_id = r.text("client id")
    will = None
    if will_flag:
        w_topic = r.text("will topic")
        _check_topic_name(w_topic.encode())
        will = (w_topic, r.blob(), will_qos, will_retain)
    username = r.text("username") if flags & 0x80 else None
    password = r.blob() if flags & 0x40 else None
    r.end()
    return ("connect", client_id, keepalive, bool(flags & 0x02), will, username, password)


def _decode_publish(flags, r):
    qos = (flags >> 1) & 3
    dup = bool(flags & 0x08)
    if qos == 3:
        raise MQTTError("bad_qos", "PUBLISH QoS 3")
    if qos == 0 and dup:
        raise MQTTError("bad_flags", "DUP set on a QoS 0 PUBLISH")
    topic = r.text("topic")
    _check_topic_name(topic.encode())
    pid = r.pid() if qos else 0
    payload = r.take(r.left())
    return ("publish", topic, payload, qos, bool(flags & 1), dup, pid)


def _decode_subscribe(r):
    pid = r.pid()
    topics = []
    while r.left():
        flt = r.text("filter")
        _check_filter(flt)
        opts = r.byte()
        if opts & 0xFC:
            raise MQTTError("bad_flags", "reserved subscription option bits set")
        _check_qos(opts)
        topics.append((flt, opts))
    if not topics:
        raise MQTTError("empty", "SUBSCRIBE without a filter")
    return ("subscribe", pid, topics)


def _decode_unsubscribe(r):
    pid = r.pid()
    filters = []
    while r.left():
        flt = r.text("filter")
        _check_filter(flt)
        filters.append(flt)
    if not filters:
        raise MQTTError("empty", "UNSUBSCRIBE without a filter")
    return ("unsubscribe", pid, filters)


def _decode(kind, flags, body):
    if kind == PUBLISH:
        return _decode_publish(flags, _Reader(body))
    if kind not in _FLAGS:
        raise MQTTError("bad_type", "reserved packet type %d" % kind)
    if flags != _FLAGS[kind]:
        raise MQTTError("bad_flags", "fixed-header flags %d on packet type %d" % (flags, kind))
    r = _Reader(body)
    if kind in _EMPTY:
        r.end()
        return (_EMPTY[kind],)
    if kind in _PID_ONLY:
        pid = r.pid()
        r.end()
        return (_PID_ONLY[kind], pid)
    if kind == CONNACK:
        ack_flags = r.byte()
        rc = r.byte()
        r.end()
        if ack_flags & 0xFE:
            raise MQTTError("bad_flags", "reserved CONNACK flags set")
        if rc > 5:
            raise MQTTError("bad_return_code", "CONNACK code %d" % rc)
        return ("connack", bool(ack_flags & 1), rc)
    if kind == SUBACK:
        pid = r.pid()
        codes = list(r.take(r.left()))
        if not codes:
            raise MQTTError("empty", "SUBACK without a return code")
        for c in codes:
            if c not in (0, 1, 2, SUBACK_FAILURE):
                raise MQTTError("bad_return_code", "SUBACK code %d" % c)
        return ("suback", pid, codes)
    if kind == CONNECT:
        return _decode_connect(r)
    if kind == SUBSCRIBE:
        return _decode_subscribe(r)
    return _decode_unsubscribe(r)


class Parser:
    """Incremental decoder: feed(bytes) -> list of complete packets, keeping any partial one.

    A PUBLISH that arrives in pieces is streamed once its topic and packet id are in: a large
    one's payload is kept as the pieces it came in and joined once, at its end (one large
    block on a small heap, not the whole packet and then its payload), and one larger than
    max_packet is not kept at all: its payload bytes are passed over as they arrive and it
    comes out as ("oversized", topic, packet size, qos, retain, dup, pid), so the owner can
    acknowledge it and carry on; so does one whose payload finds no room on the heap
    (MemoryError while it is kept). Any other packet over max_packet is an error.
    After an MQTTError the stream is out of step; every later feed raises the same error.
    """

    def __init__(self, max_packet=MAX_PACKET):
        self.max_packet = max_packet
        self._parts = []  # chunks not parsed yet; joined only once a packet can be complete
        self._have = 0
        self._need = 0  # size of the packet being received, once its header is known
        self._body_left = 0  # payload bytes still to come of the PUBLISH being streamed
        self._pieces = None  # its payload so far, or None when it is skipped (oversized)
        self._head = None  # (topic, packet size, qos, retain, dup, pid) of that PUBLISH
        self._error = None

    def buffered(self):
        """Bytes held for packets not complete yet (a skipped payload holds none)."""
        if self._pieces is not None:
            return sum(len(p) for p in self._pieces)
        return self._have

    def feed(self, data):
        if self._error is not None:
            raise self._error
        try:
            return self._feed(data)
        except MQTTError as e:
            self._error = e
            self._parts = []
            self._have = self._need = self._body_left = 0
            self._pieces = self._head = None
            raise

    def _feed(self, data):
        packets = []
        if self._body_left:
            n = min(self._body_left, len(data))
            if self._pieces is not None:
                try:
                    self._pieces.append(bytes(memoryview(data)[:n]))
                except MemoryError:
                    self._pieces = None  # no room for it now: skipped as if oversized
            self._body_left -= n
            if self._body_left:
                return packets
            packets.append(self._streamed())
            data = memoryview(data)[n:]
        if data:
            self._parts.append(bytes(data))
            self._have += len(data)
        if self._need > self._have:
            return packets  # a large packet still arriving: no copying until it is all here
        buf = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        self._parts = []  # buf holds it all now: the chunks can go
        view = memoryview(buf)
        pos = 0
        n = len(buf)
        self._need = 0
        while pos < n:
            header = self._header(buf, pos, n)
            if header is None:
                break
            start, length = header
            first = buf[pos]
            size = start - pos + length
            oversized = size > self.max_packet
            if oversized and first >> 4 != PUBLISH:
                raise MQTTError("too_large", "packet of %d bytes" % size)
            if oversized or (start + length > n and size > BIG_PACKET and first >> 4 == PUBLISH):
                end = self._stream(first & 0x0F, view, pos, start, length, n, not oversized)
                if end is None:
                    break  # topic and packet id not all here yet
                pos = end
                if self._body_left:
                    break  # everything left in buf was payload
                packets.append(self._streamed())
                continue
            if start + length > n:
                self._need = size
                break
            packets.append(_decode(first >> 4, first & 0x0F, view[start:start + length]))
            pos = start + length
        rest = buf[pos:] if pos else buf
        self._parts = [rest] if rest else []
        self._have = len(rest)
        return packets

    def _stream(self, flags, view, pos, start, length, n, keep):
        # Reads the variable header of a PUBLISH (topic, packet id), then takes as much of its
        # payload as this chunk holds, keeping it or not; _body_left counts the rest. None
        # while the variable header is incomplete (at most 65 539 bytes: waiting is bounded).
        if start + 2 > n:
            self._need = start + 2 - pos
            return None
        qos = (flags >> 1) & 3
        head = 2 + ((view[start] << 8) | view[start + 1]) + (2 if qos else 0)
        if head > length:
            raise MQTTError("truncated", "PUBLISH header runs past the packet end")
        if start + head > n:
            self._need = start + head - pos
            return None
        packet = _decode_publish(flags, _Reader(view[start:start + head]))
        self._head = (packet[1], start - pos + length, packet[3], packet[4], packet[5],
                      packet[6])
        body_end = start + length
        end = min(body_end, n)
        self._pieces = [bytes(view[start + head:end])] if keep else None
        self._body_left = body_end - end
        return end

    def _streamed(self):
        topic, size, qos, retain, dup, pid = self._head
        pieces = self._pieces
        self._head = self._pieces = None
        if pieces is not None:
            try:
                payload = pieces[0] if len(pieces) == 1 else b"".join(pieces)
                return ("publish", topic, payload, qos, retain, dup, pid)
            except MemoryError:  # a small, fragmented heap has no block that size just now
                pieces = None
        return ("oversized", topic, size, qos, retain, dup, pid)

    def _header(self, buf, pos, n):
        # Returns (body start, body length), or None while the length bytes are incomplete.
        # The caller checks the size limit before it buffers the body.
        length = 0
        shift = 0
        i = pos + 1
        while True:
            if i - pos - 1 == 4:
                raise MQTTError("bad_remaining_length", "more than four length bytes")
            if i >= n:
                return None
            b = buf[i]
            length |= (b & 0x7F) << shift
            shift += 7
            i += 1
            if not b & 0x80:
                break
        return i, length
