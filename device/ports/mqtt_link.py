# The device's MQTT link on both runtimes (device/ports/link.py): an asyncio edge around the
# sans-I/O session of protocol/mqtt_session.py. The session decides everything (packet ids,
# retransmissions, PUBACKs, keepalive, the dead-link rule, oversized messages); this module
# opens the connection, moves bytes both ways, runs a timer, wakes the callers waiting for a
# PUBACK or SUBACK, and reconnects forever with backoff and jitter.
# It uses only the asyncio subset MicroPython and CPython share (open_connection, read, write,
# drain, wait_for, sleep, create_task, Event, Lock), so one code path is tested on both.
import asyncio
import random
import sys

from device.ports import runtime as rt
from device.ports.clock import ticks_diff, ticks_ms
from device.ports.tls import TlsError, tls_context
from protocol import mqtt
from protocol.mqtt import MQTTError
from protocol.mqtt_session import Session, SessionError

READ_CHUNK = 4096  # an oversized message passes through in pieces of this size, never whole


class LinkError(Exception):
    """The MQTT link could not do what was asked; `code` is a short stable string:
    offline, dropped, timeout, busy, bad_message, config, closed, refused."""

    def __init__(self, code, message=None):
        super().__init__(code if message is None else code + ": " + message)
        self.code = code


class Backoff:
    """Reconnect delays: `first` seconds doubling up to `cap`, each one +-`jitter` (a fraction)
    so a fleet that lost its broker does not come back in lockstep. reset() after a good
    connect."""

    def __init__(self, first=0.5, cap=30.0, jitter=0.25, rand=random.random):
        self.first = first
        self.cap = cap
        self.jitter = jitter
        self._rand = rand
        self._base = first

    def next(self):
        base = self._base
        self._base = min(base * 2, self.cap)
        return base * (1 + self.jitter * (2 * self._rand() - 1))

    def reset(self):
        self._base = self.first


class Millis:
    """Monotonic milliseconds that never wrap (MicroPython's ticks_ms wraps after days): the
    session's `now`."""

    def __init__(self):
        self._ticks = ticks_ms()
        self._ms = 0

    def __call__(self):
        t = ticks_ms()
        self._ms += ticks_diff(t, self._ticks)
        self._ticks = t
        return self._ms


def no_delay(sock):
    """TCP_NODELAY on a connected socket, so a PUBLISH written right after a PUBACK is not held
    for the delayed ACK of the first (PLATFORM_NOTES: 40 ms stalls). The socket module's
    constants where the port has them; the unix port lacks the names, and as it runs on Linux
    it gets Linux's values. False where it cannot be set."""
    import socket

    level = getattr(socket, "IPPROTO_TCP", None)
    option = getattr(socket, "TCP_NODELAY", None)
    if (level is None or option is None) and rt.MICROPYTHON and sys.platform == "linux":
        level, option = 6, 1
    if level is None or option is None or not hasattr(sock, "setsockopt"):
        return False
    try:
        sock.setsockopt(level, option, 1)
    except OSError:
        return False
    return True


class _Waiter:
    """A one-shot result another task delivers (MicroPython's asyncio has no Future)."""

    def __init__(self):
        self.event = asyncio.Event()
        self.value = None
        self.error = None

    def done(self, value=None):
        if not self.event.is_set():
            self.value = value
            self.event.set()

    def fail(self, error):
        if not self.event.is_set():
            self.error = error
            self.event.set()

    def acked(self, pid):
        self.done()

    async def wait(self, timeout):
        # raises asyncio.TimeoutError when nothing was delivered in time
        await asyncio.wait_for(self.event.wait(), timeout)
        if self.error is not None:
            raise self.error
        return self.value


class _Group:
    """The waiter of the publishes of one publish_many(): one event for all of them, set once
    every one is acknowledged or the connection failed them."""

    def __init__(self, pids):
        self.event = asyncio.Event()
        self.pending = set(pids)
        self.error = None
        if not pids:
            self.event.set()

    def acked(self, pid):
        self.pending.discard(pid)
        if not self.pending:
            self.event.set()

    def fail(self, error):
        if self.error is None:
            self.error = error
        self.event.set()


class MQTTLink:
    """One broker connection kept alive by run(); see device/ports/link.py for the interface.
    on_oversized(topic, size), when given, hears of every inbound PUBLISH over max_packet
    (skipped and acknowledged; stats["oversized"] counts them either way). on_messages, when
    given, takes the place of on_message: on_messages([(topic, payload), ...]) once per read
    of the socket, with every message of that read, before any of their PUBACKs is written
    (so their effects can be made durable together)."""

    def __init__(self, broker, client_id, will=None, on_connect=None, on_message=None,
                 keepalive=30, clean_session=True, backoff=None, max_inflight=20,
                 connect_timeout=10, write_timeout=10, max_packet=mqtt.MAX_PACKET,
                 on_oversized=None, on_messages=None):
        self.host = broker.get("host", "127.0.0.1")
        self.port = int(broker.get("port", 8883 if broker.get("tls") else 1883))
        try:
            self.ssl = tls_context(broker) if broker.get("tls") else None
        except TlsError as e:
            raise LinkError("config", str(e)) from None
        try:
            self.session = Session(client_id, int(keepalive), clean_session, will,
                                   broker.get("username"), broker.get("password"),
                                   max_inflight, max_packet)
        except SessionError as e:
            raise LinkError(e.code, str(e)) from None
        self.on_connect = on_connect
        self.on_message = on_message
        self.on_oversized = on_oversized
        self.on_messages = on_messages
        self.backoff = backoff or Backoff()
        self.connect_timeout = connect_timeout
        self.write_timeout = write_timeout
        self.stats = self.session.stats
        self.connected = False
        self.no_delay = None  # whether TCP_NODELAY is set on the current socket
        self.last_error = None  # why the last connect failed or the last connection dropped
        self.last_delay = None  # the last backoff delay, seconds
        self._now = Millis()
        self._waiters = {}  # packet id -> _Waiter of a publish or subscribe, _Group
        self._writer = None
        self._wlock = None
        self._dropped = None
        self._drop_reason = None
        self._timer = None
        self._wake = None
        self._stopped = None
        self._on_connect_task = None
        self._running = False
        self._closing = False

    # ------------------------------------------------------------ public interface

    async def run(self):
        """Connects and stays connected, reconnecting with backoff, until close()."""
        if self._running:
            raise LinkError("busy", "run() is already running")
        self._running = True
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._wlock = asyncio.Lock()
        self._timer = asyncio.Event()
        try:
            while not self._closing:
                await self._connection()
                if self._closing:
                    break
                self.last_delay = self.backoff.next()
                try:
                    await asyncio.wait_for(self._wake.wait(), self.last_delay)
                except asyncio.TimeoutError:
                    pass
        finally:
            self.connected = False
            self._running = False
            self._stopped.set()

    async def publish(self, topic, payload, retain=False, qos=1, timeout=10):
        """Returns once the broker has the message (PUBACK for QoS 1, written for QoS 0); a
        QoS 1 PUBLISH still unacknowledged after timeout/2 goes out again with DUP."""
        if not self.connected:
            raise LinkError("offline", "not connected")
        try:
            pid = self.session.publish(topic, payload, qos, retain, self._now(),
                                       int(timeout * 500) if qos else None)
        except SessionError as e:
            raise LinkError(e.code, str(e)) from None
        if not pid:
            await self._flush()
            return
        waiter = _Waiter()
        self._waiters[pid] = waiter
        acked = False
        try:
            self._timer.set()  # a new retry time for the timer
            await self._flush()
            await waiter.wait(timeout)
            acked = True
        except asyncio.TimeoutError:
            raise LinkError("timeout", "no PUBACK within %s s" % timeout) from None
        finally:
            self._waiters.pop(pid, None)
            if not acked:
                # the caller is gone; the session sends it again after a reconnect
                self.session.abandon(pid)

    async def publish_many(self, messages, timeout=10):
        """Publishes [(topic, payload), ...] (QoS 1, not retained) with one write and one wait
        for all of them: no task, timer or lock per message (a window of them costs what one
        publish() does). Returns a list in the same order: None for each message the broker
        acknowledged, the LinkError of each it did not (the session still sends those again
        after a reconnect, as for publish()). Raises LinkError("offline") when not connected."""
        if not self.connected:
            raise LinkError("offline", "not connected")
        now = self._now()
        pids = []
        refused = None
        for topic, payload in messages:
            try:
                pids.append(self.session.publish(topic, payload, 1, False, now,
                                                 int(timeout * 500)))
            except SessionError as e:  # busy: the rest are not sent at all
                refused = LinkError(e.code, str(e))
                break
        group = _Group(pids)
        for pid in pids:
            self._waiters[pid] = group
        try:
            if pids:
                self._timer.set()  # new retry times for the timer
                try:
                    await self._flush()
                    await asyncio.wait_for(group.event.wait(), timeout)
                except asyncio.TimeoutError:
                    group.fail(LinkError("timeout", "no PUBACK within %s s" % timeout))
                except LinkError as e:
                    group.fail(e)
        finally:
            for pid in pids:
                self._waiters.pop(pid, None)
                if pid in group.pending:
                    self.session.abandon(pid)  # as publish(): sent again after a reconnect
        out = []
        for pid in pids:
            out.append(group.error if pid in group.pending else None)
        while len(out) < len(messages):
            out.append(refused)
        return out

    async def subscribe(self, topics, timeout=10):
        """Subscribes [(filter, qos), ...]; returns the granted codes (0x80 = refused)."""
        if not self.connected:
            raise LinkError("offline", "not connected")
        try:
            pid = self.session.subscribe(topics, self._now())
        except SessionError as e:
            raise LinkError(e.code, str(e)) from None
        waiter = _Waiter()
        self._waiters[pid] = waiter
        try:
            await self._flush()
            return await waiter.wait(timeout)
        except asyncio.TimeoutError:
            raise LinkError("timeout", "no SUBACK within %s s" % timeout) from None
        finally:
            self._waiters.pop(pid, None)
            self.session.forget(pid)

    async def close(self, timeout=5):
        """Clean DISCONNECT (the broker then discards the will) and stop run()."""
        self._closing = True
        self.connected = False
        if self._wake is not None:
            self._wake.set()
        self._drop("closed")  # the connection says goodbye on its way out (_connection)
        if self._running:
            try:
                await asyncio.wait_for(self._stopped.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    # ------------------------------------------------------------ one connection

    async def _connection(self):
        writer = None
        try:
            reader, writer = await asyncio.wait_for(self._open(), self.connect_timeout)
            self.session.connect(self._now())
            writer.write(self.session.data_to_send())
            await asyncio.wait_for(writer.drain(), self.connect_timeout)
            events = await asyncio.wait_for(self._until_connack(reader), self.connect_timeout)
        except Exception as e:  # any failure to connect is retried; none may end run()
            self.session.lost()
            self.stats["connect_failures"] += 1  # (a malformed answer: bad_packets too)
            self.last_error = "connect: %r" % (e,)
            await _close_stream(writer)
            return
        if events[0][0] == "refused":
            self.session.lost()
            self.last_error = "connect: refused with CONNACK code %d" % events[0][1]
            await _close_stream(writer)
            return
        self.backoff.reset()
        self._writer = writer
        self._dropped = dropped = asyncio.Event()
        tasks = []
        try:
            self._act(events[1:])  # messages that came with the CONNACK, before their PUBACKs
            tasks.append(asyncio.create_task(self._read_loop(reader)))
            tasks.append(asyncio.create_task(self._timer_loop()))
            if self._closing:
                self._drop("closed")
            else:
                await self._flush()  # unacknowledged publishes first, then those PUBACKs
            if not dropped.is_set():
                self.connected = True
                if self._on_connect_task is not None:
                    self._on_connect_task.cancel()  # still busy with an older connection
                self._on_connect_task = asyncio.create_task(self._run_on_connect())
            await dropped.wait()
        except LinkError:
            pass
        finally:
            self.connected = False
            for t in tasks:
                t.cancel()
            if self._closing:
                self.session.close(self._now())
                try:
                    await self._flush()  # DISCONNECT: the broker discards the will
                except LinkError:
                    pass
            self.session.lost()
            self._writer = None
            for waiter in self._waiters.values():
                waiter.fail(LinkError("dropped", "connection lost before the answer"))
            if not self._closing:
                self.stats["drops"] += 1
                self.last_error = "dropped: %s" % (self._drop_reason,)
            await _close_stream(writer)

    async def _open(self):
        if self.ssl is None:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            sock = writer.s if rt.MICROPYTHON else writer.get_extra_info("socket")
            self.no_delay = no_delay(sock)
            return reader, writer
        if not rt.MICROPYTHON:
            reader, writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.ssl, server_hostname=self.host)
            self.no_delay = no_delay(writer.get_extra_info("socket"))
            return reader, writer
        # MicroPython's TLS socket has no setsockopt: connect plain, set the option, then wrap
        # the socket as its open_connection would (the stream's `s`; the handshake runs on the
        # first write), the host name checked against the certificate.
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self.no_delay = no_delay(writer.s)
        writer.s = self.ssl.wrap_socket(writer.s, server_hostname=self.host,
                                        do_handshake_on_connect=False)
        writer.s.setblocking(False)
        return reader, writer

    async def _until_connack(self, reader):
        while True:
            data = await reader.read(READ_CHUNK)
            if not data:
                raise LinkError("dropped", "broker closed the connection before CONNACK")
            events = self.session.receive(data, self._now())
            if events:
                return events

    async def _run_on_connect(self):
        if self.on_connect is None:
            return
        try:
            await self.on_connect(self)
        except LinkError:
            pass  # the connection went away meanwhile; the next CONNACK calls it again
        except Exception as e:  # the agent's bug must not stop the link
            self.stats["handler_errors"] += 1
            self.last_error = "on_connect: %r" % (e,)

    def _drop(self, reason):
        self.connected = False  # at once: no new publish may start on a dying connection
        if self._dropped is not None and not self._dropped.is_set():
            self._drop_reason = reason
            self._dropped.set()

    async def _read_loop(self, reader):
        try:
            while True:
                data = await reader.read(READ_CHUNK)
                if not data:
                    self._drop("broker closed the connection")
                    return
                self._act(self.session.receive(data, self._now()))
                await self._flush()  # the PUBACKs, after every message was delivered
        except MQTTError as e:
            self._drop("bad packet: %s" % (e,))
        except LinkError as e:
            self._drop(e.code)
        except Exception as e:  # a reset socket, a TLS error: the link is gone either way
            self._drop("read: %r" % (e,))

    async def _timer_loop(self):
        while True:
            wait = self.session.wait_ms(self._now())
            try:
                if wait is None:
                    await self._timer.wait()
                else:
                    await asyncio.wait_for(self._timer.wait(), max(wait, 1) / 1000)
            except asyncio.TimeoutError:
                pass
            self._timer.clear()
            events = self.session.tick(self._now())
            try:
                await self._flush()
            except LinkError:
                return
            if events:
                self._act(events)
                return

    def _act(self, events):
        if self.on_messages is not None:
            batch = [(ev[1], ev[2]) for ev in events if ev[0] == "message"]
            if batch:
                try:
                    self.on_messages(batch)
                except Exception as e:  # acknowledged anyway: a redelivery would fail alike
                    self.stats["handler_errors"] += 1
                    self.last_error = "on_messages: %r" % (e,)
        for ev in events:
            kind = ev[0]
            if kind == "message":
                if self.on_messages is None and self.on_message is not None:
                    try:
                        self.on_message(ev[1], ev[2])
                    except Exception as e:  # acknowledged anyway: a redelivery would fail alike
                        self.stats["handler_errors"] += 1
                        self.last_error = "on_message: %r" % (e,)
            elif kind == "oversized":
                self.last_error = "oversized PUBLISH on %s (%d bytes) skipped" % (ev[1], ev[2])
                if self.on_oversized is not None:
                    try:
                        self.on_oversized(ev[1], ev[2])
                    except Exception as e:
                        self.stats["handler_errors"] += 1
                        self.last_error = "on_oversized: %r" % (e,)
            elif kind == "published":
                waiter = self._waiters.get(ev[1])
                if waiter is not None:
                    waiter.acked(ev[1])
            elif kind == "subscribed":
                waiter = self._waiters.get(ev[1])
                if waiter is not None:
                    waiter.done(ev[2])
            elif kind == "dead":
                self._drop(ev[1])

    async def _flush(self):
        """Writes whatever the session has queued, in order."""
        writer = self._writer
        if writer is None:
            raise LinkError("offline", "not connected")
        async with self._wlock:
            if self._writer is not writer:
                raise LinkError("dropped", "connection lost")
            data = self.session.data_to_send()
            if not data:
                return
            try:
                writer.write(data)
                await asyncio.wait_for(writer.drain(), self.write_timeout)
            except Exception as e:  # half a packet may be out: this stream is finished
                if self._writer is writer:  # not a newer connection's business
                    self._drop("write: %r" % (e,))
                raise LinkError("dropped", "write failed: %r" % (e,)) from None


async def _close_stream(writer):
    if writer is None:
        return
    try:
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 2)
    except Exception:  # closing a broken stream may fail; it is closed either way
        pass
