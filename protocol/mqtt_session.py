# The state of an MQTT 3.1.1 client session, sans-I/O (in the manner of h11): bytes and calls go
# in, events and bytes come out. No sockets, no asyncio and no clock reads: every call that
# depends on time takes `now`, a monotonic count of milliseconds kept by the caller. The device's
# link (device/ports/mqtt_link.py) is the thin edge that moves the bytes.
#
# What it decides: packet ids; QoS 1 publishes in flight, sent again with DUP once their retry
# time has passed and, in their original order, after every new CONNACK (persistent sessions);
# SUBSCRIBE/SUBACK; inbound PUBLISH -> event, then its PUBACK; keepalive (PINGREQ after
# keepalive/2 of quiet) and the dead-link rule (no packet for 1.5 x keepalive while a PINGREQ
# is unanswered); an inbound PUBLISH over max_packet read as topic + skipped payload, reported
# and acknowledged, so one oversized message never cuts the session off.
#
# The owner's loop:
#   s.connect(now); write(s.data_to_send())
#   every chunk read: events = s.receive(chunk, now); act on each event; write(s.data_to_send())
#   timer: sleep up to s.wait_ms(now) (None: until a call changes things); events = s.tick(now)
#   connection gone: s.lost()      clean goodbye: s.close(now); write(s.data_to_send())
# Because a PUBACK is queued after the event of its PUBLISH, an owner that acts on every event
# before it sends data_to_send() delivers each message before acknowledging it.
#
# Events (tuples):
#   ("connected", session_present)    CONNACK accepted (unacknowledged publishes already queued)
#   ("refused", return_code)          CONNACK refused: this connection is over
#   ("message", topic, payload)       an inbound PUBLISH (at least once: duplicates happen)
#   ("oversized", topic, size)        an inbound PUBLISH over max_packet, skipped unread
#   ("published", pid)                the PUBACK of our QoS 1 PUBLISH
#   ("subscribed", pid, codes)        the SUBACK of our SUBSCRIBE (0x80 = refused)
#   ("dead", reason)                  the dead-link rule fired: drop the connection
# receive() raises MQTTError on a malformed or unexpected packet (the connection is finished);
# publish()/subscribe() raise SessionError (code offline, busy or bad_message).
from protocol import mqtt
from protocol.mqtt import MQTTError

CLOSED = "closed"
CONNECTING = "connecting"
UP = "up"


class SessionError(Exception):
    """A call the session cannot carry out; `code` is offline, busy or bad_message."""

    def __init__(self, code, message=None):
        super().__init__(code if message is None else code + ": " + message)
        self.code = code


def new_stats():
    """The link's counters; the session counts what it sees, its owner the rest (connects
    failing before a CONNACK, drops, handler errors)."""
    return {"connects": 0, "connect_failures": 0, "drops": 0, "ping_timeouts": 0, "rx": 0,
            "tx": 0, "bad_packets": 0, "retransmits": 0, "handler_errors": 0, "oversized": 0}


def _with_dup(packet):
    return bytes([packet[0] | 0x08]) + packet[1:]


class Session:
    def __init__(self, client_id, keepalive=30, clean_session=True, will=None, username=None,
                 password=None, max_inflight=20, max_packet=mqtt.MAX_PACKET):
        # building CONNECT now turns a bad client id, will or credential into an error here
        self._connect = _encode(mqtt.connect, client_id, keepalive, clean_session, will,
                                username, password)
        self.keepalive_ms = keepalive * 1000
        self.max_inflight = max_inflight
        self.max_packet = max_packet
        self.stats = new_stats()
        self.state = CLOSED
        self._out = []
        self._parser = None
        # pid -> [PUBLISH bytes, order, retry time (ms) or None, abandoned by its caller]
        self._inflight = {}
        self._subs = {}  # pid -> True while its SUBACK is awaited
        self._pid = 0
        self._order = 0
        self._last_rx = self._last_tx = 0
        self._ping_at = None

    @property
    def up(self):
        return self.state == UP

    def inflight(self):
        return len(self._inflight)

    # ------------------------------------------------------------ connection lifecycle

    def connect(self, now):
        """A new connection: queues CONNECT; the next bytes received must start with CONNACK."""
        self._parser = mqtt.Parser(self.max_packet)
        self._subs = {}
        self._out = []
        self._ping_at = None
        self._last_rx = now
        self.state = CONNECTING
        self._send(self._connect, now)

    def lost(self):
        """The connection is gone. Unacknowledged publishes stay for the next connection;
        awaited SUBACKs never come."""
        self.state = CLOSED
        self._parser = None
        self._subs = {}
        self._out = []
        self._ping_at = None

    def close(self, now):
        """Queues DISCONNECT (the broker then discards the will) and ends the connection."""
        if self.state == UP:
            self._send(mqtt.disconnect(), now)
        self.state = CLOSED

    def data_to_send(self):
        out = self._out
        if not out:
            return b""
        self._out = []
        return out[0] if len(out) == 1 else b"".join(out)

    # ------------------------------------------------------------ bytes in

    def receive(self, data, now):
        if self.state == CLOSED:
            return []
        try:
            packets = self._parser.feed(data)
        except MQTTError:
            self.stats["bad_packets"] += 1
            raise
        if data:
            self._last_rx = now
            self._ping_at = None
        events = []
        try:
            for packet in packets:
                if self.state == CLOSED:
                    break  # refused: whatever followed the CONNACK does not count
                self._packet(packet, now, events)
        except MQTTError:
            self.stats["bad_packets"] += 1
            raise
        return events

    def _packet(self, packet, now, events):
        kind = packet[0]
        if self.state == CONNECTING:
            if kind != "connack":
                raise MQTTError("unexpected_packet", "%s before CONNACK" % kind)
            if packet[2] != 0:
                self.stats["connect_failures"] += 1
                self.state = CLOSED
                events.append(("refused", packet[2]))
                return
            self.state = UP
            self.stats["connects"] += 1
            self._resend_all(now)
            events.append(("connected", packet[1]))
        elif kind == "publish" or kind == "oversized":
            qos, pid = packet[3], packet[6]
            if qos == 2:
                raise MQTTError("bad_qos", "QoS 2 PUBLISH on a QoS 1 subscription")
            if kind == "publish":
                self.stats["rx"] += 1
                events.append(("message", packet[1], packet[2]))
            else:
                self.stats["oversized"] += 1
                events.append(("oversized", packet[1], packet[2]))
            if qos == 1:
                self._send(mqtt.puback(pid), now)
        elif kind == "puback":
            if self._inflight.pop(packet[1], None) is not None:
                events.append(("published", packet[1]))
        elif kind == "suback":
            if self._subs.pop(packet[1], None) is not None:
                events.append(("subscribed", packet[1], packet[2]))
        elif kind != "pingresp" and kind != "unsuback":
            raise MQTTError("unexpected_packet", "%s from the broker" % kind)

    def _resend_all(self, now):
        # unacknowledged PUBLISHes go out again first, in their original order, with DUP
        entries = sorted(self._inflight.values(), key=lambda e: e[1])
        for entry in entries:
            entry[2] = None
            self._send(_with_dup(entry[0]), now)
            self.stats["retransmits"] += 1

    # ------------------------------------------------------------ calls

    def publish(self, topic, payload, qos=1, retain=False, now=0, retry_ms=None):
        """Queues a PUBLISH; returns its packet id (0 for QoS 0). A QoS 1 publish stays in
        flight until its PUBACK: sent again with DUP once retry_ms have passed (once per
        connection) and after every reconnect."""
        if self.state != UP:
            raise SessionError("offline", "not connected")
        if qos == 0:
            self._send(_encode(mqtt.publish, topic, payload, 0, retain), now)
            self.stats["tx"] += 1
            return 0
        if qos != 1:
            raise SessionError("bad_message", "QoS %r: only 0 and 1 are used" % (qos,))
        self._make_room()
        pid = self._new_pid()
        packet = _encode(mqtt.publish, topic, payload, 1, retain, pid)
        self._order += 1
        self._inflight[pid] = [packet, self._order,
                               None if retry_ms is None else now + retry_ms, False]
        self._send(packet, now)
        self.stats["tx"] += 1
        return pid

    def abandon(self, pid):
        """The caller stopped waiting for this PUBACK: the publish is still sent again after a
        reconnect, but may make room for a new one when max_inflight is reached."""
        entry = self._inflight.get(pid)
        if entry is not None:
            entry[2] = None
            entry[3] = True

    def subscribe(self, topics, now=0):
        """Queues SUBSCRIBE [(filter, qos), ...]; returns its packet id."""
        if self.state != UP:
            raise SessionError("offline", "not connected")
        for _, qos in topics:
            if qos not in (0, 1):
                raise SessionError("bad_message", "QoS %r: only 0 and 1 are used" % (qos,))
        pid = self._new_pid()
        self._send(_encode(mqtt.subscribe, pid, topics), now)
        self._subs[pid] = True
        return pid

    def forget(self, pid):
        """The caller stopped waiting for this SUBACK."""
        self._subs.pop(pid, None)

    # ------------------------------------------------------------ time

    def tick(self, now):
        """Does what is due at `now`: DUP retransmissions, PINGREQ, the dead-link rule."""
        events = []
        if self.state != UP:
            return events
        due = [e for e in self._inflight.values() if e[2] is not None and now >= e[2]]
        due.sort(key=lambda e: e[1])
        for entry in due:
            entry[2] = None
            self._send(_with_dup(entry[0]), now)
            self.stats["retransmits"] += 1
        ka = self.keepalive_ms
        if not ka:
            return events
        if self._ping_at is not None:
            if now - self._last_rx >= ka * 3 // 2:
                self.stats["ping_timeouts"] += 1
                self.state = CLOSED
                events.append(("dead", "no answer to PINGREQ"))
        elif now - self._last_rx >= ka // 2 or now - self._last_tx >= ka // 2:
            self._ping_at = now
            self._send(mqtt.pingreq(), now)
        return events

    def wait_ms(self, now):
        """Milliseconds until tick() has something to do, None when only a call or received
        bytes can change that."""
        if self.state != UP:
            return None
        due = None
        for entry in self._inflight.values():
            if entry[2] is not None and (due is None or entry[2] < due):
                due = entry[2]
        ka = self.keepalive_ms
        if ka:
            if self._ping_at is not None:
                at = self._last_rx + ka * 3 // 2
            else:
                at = min(self._last_rx, self._last_tx) + ka // 2
            if due is None or at < due:
                due = at
        if due is None:
            return None
        return max(0, due - now)

    # ------------------------------------------------------------ helpers

    def _send(self, packet, now):
        self._out.append(packet)
        self._last_tx = now

    def _new_pid(self):
        while True:
            self._pid = self._pid % 0xFFFF + 1
            if self._pid not in self._inflight and self._pid not in self._subs:
                return self._pid

    def _make_room(self):
        if len(self._inflight) < self.max_inflight:
            return
        oldest = None
        for pid, e in self._inflight.items():
            if e[3] and (oldest is None or e[1] < self._inflight[oldest][1]):
                oldest = pid
        if oldest is None:
            raise SessionError("busy", "%d PUBLISHes await their PUBACK" % len(self._inflight))
        self._inflight.pop(oldest)


def _encode(fn, *args):
    try:
        return fn(*args)
    except MQTTError as e:
        raise SessionError("bad_message", str(e)) from None
