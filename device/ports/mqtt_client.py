# asyncio MQTT 3.1.1 client over protocol/mqtt.py: the MicroPython MQTT link
# (device/ports/link.py).
# Uses only the asyncio subset MicroPython and CPython share (open_connection, read, write, drain,
# wait_for, sleep, create_task, Event, Lock), so the same code is tested on both.
#
# What it does, in the manner of Peter Hinch's mqtt_as minus the Wi-Fi handling:
# - persistent session if asked (clean_session=False): the broker queues QoS 1 downlinks offline;
# - QoS 1 out: publish() waits for the PUBACK; unacknowledged PUBLISHes are sent again with DUP
#   once when half the timeout has passed and after every reconnect, until their PUBACK arrives;
# - QoS 1 in: on_message(topic, payload) runs, then the PUBACK goes out;
# - keepalive: PINGREQ when the link has been quiet for keepalive/2; no packet from the broker
#   for 1.5 x keepalive while a ping is outstanding drops the connection (dead-link detector);
# - reconnect forever with exponential backoff and jitter (reset after a good CONNACK);
# - TLS when broker["tls"]: the broker verified against broker["ca"] (host name included), a
#   client certificate from broker["cert"]/["key"] when set; MicroPython loads DER (tls_context).
import asyncio
import random
import time

from device.ports import runtime as rt
from protocol import mqtt
from protocol.mqtt import MQTTError

try:
    from time import ticks_diff, ticks_ms
except ImportError:  # CPython

    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b


class LinkError(Exception):
    """The MQTT link could not do what was asked; `code` is a short stable string:
    offline, dropped, timeout, busy, bad_message, config, closed, refused."""

    def __init__(self, code, message=None):
        super().__init__(code if message is None else code + ": " + message)
        self.code = code


async def run_on_connect(link):
    """Awaits the owner's on_connect after a CONNACK (both links)."""
    if link.on_connect is None:
        return
    try:
        await link.on_connect(link)
    except LinkError:
        pass  # the connection went away meanwhile; the next CONNACK calls it again
    except Exception as e:  # the agent's bug must not stop the link
        link.stats["handler_errors"] += 1
        link.last_error = "on_connect: %r" % (e,)


def new_stats():
    return {"connects": 0, "connect_failures": 0, "drops": 0, "ping_timeouts": 0, "rx": 0,
            "tx": 0, "bad_packets": 0, "retransmits": 0, "handler_errors": 0}


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


def pem_to_der(data, kind=b"CERTIFICATE"):
    """Every PEM block of a kind as DER (MicroPython's ssl takes only DER): kind b"CERTIFICATE"
    for certificates, b"PRIVATE KEY" for keys (also matches "EC PRIVATE KEY" and the like).
    Input without a PEM header is taken as one DER block and returned as it is."""
    import binascii

    data = bytes(data)
    if b"-----BEGIN" not in data:
        return [data]
    out = []
    body = None
    for line in data.split(b"\n"):
        line = line.strip()
        if line.startswith(b"-----BEGIN "):
            label = line[11:].rstrip(b"-")
            body = [] if label.endswith(kind) else None
            if body is not None and label.startswith(b"ENCRYPTED"):
                raise LinkError("config", "encrypted private keys are not supported")
        elif line.startswith(b"-----END "):
            if body is not None:
                out.append(binascii.a2b_base64(b"".join(body)))
            body = None
        elif body is not None and line:
            if b":" in line:  # RFC 1421 headers: "Proc-Type: 4,ENCRYPTED" and the like
                raise LinkError("config", "PEM headers (an encrypted key?) are not supported")
            body.append(line)
    if not out:
        raise LinkError("config", "no %s block in the PEM data" % kind.decode())
    return out


def der_twin(path):
    """The DER file beside a PEM file: X.pem -> X.der (as host_sim/certs.py writes them)."""
    return (path[:-4] if path.endswith(".pem") else path) + ".der"


def tls_context(broker):
    """The client-side SSLContext for a broker config: the broker's certificate must chain to
    broker["ca"] and name the host we dial; broker["cert"] + broker["key"], when set, are the
    client certificate the broker may demand. Bad or missing files raise LinkError("config")."""
    import ssl

    ca, cert, key = broker.get("ca"), broker.get("cert"), broker.get("key")
    if (cert is None) != (key is None):
        raise LinkError("config", "broker cert and key go together: set both or neither")
    if not rt.MICROPYTHON:
        # PROTOCOL_TLS_CLIENT: CERT_REQUIRED and check_hostname are its defaults
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            if ca:
                ctx.load_verify_locations(ca)
            else:
                ctx.load_default_certs()
            if cert:
                ctx.load_cert_chain(cert, key)
        except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
            raise LinkError("config", "TLS files: %s" % (e,)) from None
        return ctx
    if not ca:
        raise LinkError("config", "TLS on MicroPython needs the broker CA file (\"ca\")")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    # the host name check comes with server_hostname at connect time (MQTTClient._connect)
    try:
        for der in load_der(ca, b"CERTIFICATE"):
            ctx.load_verify_locations(cadata=der)
        if cert:
            # only the first certificate: a DER load takes one, and ours are issued by the CA
            ctx.load_cert_chain(load_der(cert, b"CERTIFICATE")[0],
                                load_der(key, b"PRIVATE KEY")[0])
    except LinkError:
        raise
    except Exception as e:  # OSError for a file, ValueError("invalid cert"/"invalid key")
        raise LinkError("config", "TLS files: %r" % (e,)) from None
    return ctx


def load_der(path, kind):
    """The DER blocks of a PEM/DER file, read from its DER twin when there is one (a board
    keeps the base64 decoding and the PEM text out of its small heap)."""
    twin = der_twin(path)
    if twin != path:
        try:
            with open(twin, "rb") as f:
                return [f.read()]
        except OSError:
            pass
    with open(path, "rb") as f:
        data = f.read()
    try:
        return pem_to_der(data, kind)
    except LinkError as e:
        raise LinkError("config", "%s: %s" % (path, str(e)[len("config: "):])) from None


def _with_dup(packet):
    return bytes([packet[0] | 0x08]) + packet[1:]


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

    async def wait(self, timeout):
        # raises asyncio.TimeoutError when nothing was delivered in time
        await asyncio.wait_for(self.event.wait(), timeout)
        if self.error is not None:
            raise self.error
        return self.value


class MQTTClient:
    """One broker connection kept alive by run(); see device/ports/link.py for the interface."""

    def __init__(self, broker, client_id, will=None, on_connect=None, on_message=None,
                 keepalive=30, clean_session=True, backoff=None, max_inflight=20,
                 connect_timeout=10, write_timeout=10, max_packet=mqtt.MAX_PACKET):
        self.host = broker.get("host", "127.0.0.1")
        self.port = int(broker.get("port", 8883 if broker.get("tls") else 1883))
        self.ssl = tls_context(broker) if broker.get("tls") else None
        self.username = broker.get("username")
        self.password = broker.get("password")
        self.client_id = client_id
        self.will = will
        self.on_connect = on_connect
        self.on_message = on_message
        self.keepalive = int(keepalive)
        self.clean_session = clean_session
        self.backoff = backoff or Backoff()
        self.max_inflight = max_inflight
        self.connect_timeout = connect_timeout
        self.write_timeout = write_timeout
        self.max_packet = max_packet
        # building CONNECT now turns a bad client id, will or credential into an error here
        self._connect_packet = self._encode(
            mqtt.connect, client_id, self.keepalive, clean_session, will, self.username,
            self.password)
        self.connected = False
        self.stats = new_stats()
        self.last_error = None  # why the last connect failed or the last connection dropped
        self.last_delay = None  # the last backoff delay, seconds
        self._inflight = {}  # pid -> [PUBLISH bytes, waiter or None once abandoned, order]
        self._subs = {}  # pid -> waiter for its SUBACK
        self._order = 0
        self._pid = 0
        self._writer = None
        self._wlock = None
        self._dropped = None
        self._drop_reason = None
        self._parser = None
        self._wake = None
        self._stopped = None
        self._on_connect_task = None
        self._running = False
        self._closing = False
        self._last_rx = self._last_tx = 0
        self._ping_at = None

    # ------------------------------------------------------------ public interface

    async def run(self):
        """Connects and stays connected, reconnecting with backoff, until close()."""
        if self._running:
            raise LinkError("busy", "run() is already running")
        self._running = True
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._wlock = asyncio.Lock()
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
        """Returns once the broker has the message (PUBACK for QoS 1, written for QoS 0)."""
        if not self.connected:
            raise LinkError("offline", "not connected")
        if qos == 0:
            await self._write(self._encode(mqtt.publish, topic, payload, 0, retain))
            self.stats["tx"] += 1
            return
        if qos != 1:
            raise LinkError("bad_message", "QoS %r: only 0 and 1 are used" % (qos,))
        self._make_room()
        pid = self._new_pid()
        packet = self._encode(mqtt.publish, topic, payload, 1, retain, pid)
        waiter = _Waiter()
        self._order += 1
        entry = [packet, waiter, self._order]
        self._inflight[pid] = entry
        try:
            await self._write(packet)
            self.stats["tx"] += 1
            half = timeout / 2
            try:
                await waiter.wait(half)
                return
            except asyncio.TimeoutError:
                pass
            if self._inflight.get(pid) is entry:
                await self._write(_with_dup(packet))
                self.stats["retransmits"] += 1
            try:
                await waiter.wait(timeout - half)
            except asyncio.TimeoutError:
                raise LinkError("timeout", "no PUBACK within %s s" % timeout) from None
        finally:
            # the caller is gone; the entry stays for retransmission until its PUBACK
            entry[1] = None

    async def subscribe(self, topics, timeout=10):
        """Subscribes [(filter, qos), ...]; returns the granted codes (0x80 = refused)."""
        if not self.connected:
            raise LinkError("offline", "not connected")
        for _, qos in topics:
            if qos not in (0, 1):
                raise LinkError("bad_message", "QoS %r: only 0 and 1 are used" % (qos,))
        pid = self._new_pid()
        packet = self._encode(mqtt.subscribe, pid, topics)
        waiter = _Waiter()
        self._subs[pid] = waiter
        try:
            await self._write(packet)
            return await waiter.wait(timeout)
        except asyncio.TimeoutError:
            raise LinkError("timeout", "no SUBACK within %s s" % timeout) from None
        finally:
            self._subs.pop(pid, None)

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
            reader, writer, connack, pending = await self._connect()
        except Exception as e:  # any failure to connect is retried; none may end run()
            self.stats["connect_failures"] += 1
            if isinstance(e, MQTTError):
                self.stats["bad_packets"] += 1
            self.last_error = "connect: %r" % (e,)
            await _close_stream(writer)
            return
        if connack[2] != 0:
            self.stats["connect_failures"] += 1
            self.last_error = "connect: refused with CONNACK code %d" % connack[2]
            await _close_stream(writer)
            return
        self.stats["connects"] += 1
        self.backoff.reset()
        self._writer = writer
        self._dropped = dropped = asyncio.Event()
        self._last_rx = self._last_tx = ticks_ms()
        self._ping_at = None
        tasks = []
        try:
            tasks.append(asyncio.create_task(self._read_loop(reader, pending)))
            tasks.append(asyncio.create_task(self._keepalive_loop()))
            if self._closing:
                self._drop("closed")
            else:
                await self._retransmit()
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
            if self._closing:
                try:
                    await self._write(mqtt.disconnect())  # so the broker discards the will
                except LinkError:
                    pass
            self._writer = None
            for t in tasks:
                t.cancel()
            for waiter in self._subs.values():
                waiter.fail(LinkError("dropped", "connection lost before the SUBACK"))
            for entry in self._inflight.values():
                if entry[1] is not None:
                    entry[1].fail(LinkError("dropped", "connection lost before the PUBACK"))
            if not self._closing:
                self.stats["drops"] += 1
                self.last_error = "dropped: %s" % (self._drop_reason,)
            await _close_stream(writer)

    async def _connect(self):
        parser = mqtt.Parser(self.max_packet)
        kw = {}
        if self.ssl is not None:
            kw = {"ssl": self.ssl, "server_hostname": self.host}
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, **kw), self.connect_timeout)
        try:
            writer.write(self._connect_packet)
            await asyncio.wait_for(writer.drain(), self.connect_timeout)
            packets = await asyncio.wait_for(self._first_packets(reader, parser),
                                             self.connect_timeout)
        except BaseException:
            await _close_stream(writer)
            raise
        if packets[0][0] != "connack":
            raise MQTTError("unexpected_packet", "%s before CONNACK" % packets[0][0])
        self._parser = parser
        return reader, writer, packets[0], packets[1:]

    async def _first_packets(self, reader, parser):
        while True:
            data = await reader.read(1024)
            if not data:
                raise LinkError("dropped", "broker closed the connection before CONNACK")
            packets = parser.feed(data)
            if packets:
                return packets

    async def _retransmit(self):
        # unacknowledged PUBLISHes go out again, first and in their original order
        entries = sorted(self._inflight.values(), key=lambda e: e[2])
        for entry in entries:
            await self._write(_with_dup(entry[0]))
            self.stats["retransmits"] += 1

    async def _run_on_connect(self):
        await run_on_connect(self)

    def _drop(self, reason):
        self.connected = False  # at once: no new publish may start on a dying connection
        if self._dropped is not None and not self._dropped.is_set():
            self._drop_reason = reason
            self._dropped.set()

    async def _read_loop(self, reader, pending):
        try:
            for packet in pending:
                await self._handle(packet)
            while True:
                data = await reader.read(4096)
                if not data:
                    self._drop("broker closed the connection")
                    return
                self._last_rx = ticks_ms()
                self._ping_at = None
                for packet in self._parser.feed(data):
                    await self._handle(packet)
        except MQTTError as e:
            self.stats["bad_packets"] += 1
            self._drop("bad packet: %s" % (e,))
        except LinkError as e:
            self._drop(e.code)
        except Exception as e:  # a reset socket, a TLS error: the link is gone either way
            self._drop("read: %r" % (e,))

    async def _handle(self, packet):
        kind = packet[0]
        if kind == "publish":
            topic, payload, qos, pid = packet[1], packet[2], packet[3], packet[6]
            if qos == 2:
                raise MQTTError("bad_qos", "QoS 2 PUBLISH on a QoS 1 subscription")
            self.stats["rx"] += 1
            if self.on_message is not None:
                try:
                    self.on_message(topic, payload)
                except Exception as e:  # acknowledged anyway: a redelivery would fail alike
                    self.stats["handler_errors"] += 1
                    self.last_error = "on_message: %r" % (e,)
            if qos == 1:
                await self._write(mqtt.puback(pid))
        elif kind == "puback":
            entry = self._inflight.pop(packet[1], None)
            if entry is not None and entry[1] is not None:
                entry[1].done()
        elif kind == "suback":
            waiter = self._subs.get(packet[1])
            if waiter is not None:
                waiter.done(packet[2])
        elif kind not in ("pingresp", "unsuback"):
            raise MQTTError("unexpected_packet", "%s from the broker" % kind)

    async def _keepalive_loop(self):
        if not self.keepalive:
            return
        period = self.keepalive * 1000
        tick = max(50, min(period // 4, 5000)) / 1000
        while True:
            await asyncio.sleep(tick)
            now = ticks_ms()
            quiet_rx = ticks_diff(now, self._last_rx)
            if self._ping_at is not None and quiet_rx >= period * 3 // 2:
                self.stats["ping_timeouts"] += 1
                self._drop("no answer to PINGREQ")
                return
            if self._ping_at is None and (quiet_rx >= period // 2
                                          or ticks_diff(now, self._last_tx) >= period // 2):
                self._ping_at = now
                try:
                    await self._write(mqtt.pingreq())
                except LinkError:
                    return

    async def _write(self, packet):
        writer = self._writer
        if writer is None:
            raise LinkError("offline", "not connected")
        async with self._wlock:
            if self._writer is not writer:
                raise LinkError("dropped", "connection lost")
            try:
                writer.write(packet)
                await asyncio.wait_for(writer.drain(), self.write_timeout)
            except Exception as e:  # half a packet may be out: this stream is finished
                if self._writer is writer:  # not a newer connection's business
                    self._drop("write: %r" % (e,))
                raise LinkError("dropped", "write failed: %r" % (e,)) from None
        self._last_tx = ticks_ms()

    # ------------------------------------------------------------ helpers

    def _encode(self, fn, *args):
        try:
            return fn(*args)
        except MQTTError as e:
            raise LinkError("bad_message", str(e)) from None

    def _new_pid(self):
        while True:
            self._pid = self._pid % 0xFFFF + 1
            if self._pid not in self._inflight and self._pid not in self._subs:
                return self._pid

    def _make_room(self):
        if len(self._inflight) < self.max_inflight:
            return
        abandoned = [(e[2], pid) for pid, e in self._inflight.items() if e[1] is None]
        if not abandoned:
            raise LinkError("busy", "%d PUBLISHes await their PUBACK" % len(self._inflight))
        self._inflight.pop(min(abandoned)[1])


async def _close_stream(writer):
    if writer is None:
        return
    try:
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 2)
    except Exception:  # closing a broken stream may fail; it is closed either way
        pass
