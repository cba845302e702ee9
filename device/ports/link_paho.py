# The MQTT link on CPython: paho-mqtt 2.x behind the interface of device/ports/link.py. CPython
# only,
# so it lives apart from link.py and boards never carry it.
from device.ports.mqtt_client import Backoff, LinkError, new_stats, run_on_connect, tls_context


class PahoLink:
    """paho-mqtt 2.x (MQTT 3.1.1) behind the link interface, CPython only.

    paho runs its network thread (loop_start); every paho callback is handed to the asyncio
    loop with call_soon_threadsafe, so on_connect/on_message and all link state live in the
    loop's thread. Inbound PUBACKs are manual: on_message runs first, then client.ack().
    Reconnects are paho's, with our backoff + jitter fed through reconnect_delay_set before
    each wait. paho's own dead-link rule applies (no PINGRESP within keepalive after a ping).
    """

    def __init__(self, broker, client_id, will, on_connect, on_message, keepalive=30,
                 clean_session=False, backoff=None, max_inflight=20, max_queued=100,
                 connect_timeout=10):
        import asyncio

        import paho.mqtt.client as paho

        self._asyncio = asyncio
        self._paho = paho
        self.on_connect = on_connect
        self.on_message = on_message
        self.host = broker.get("host", "127.0.0.1")
        self.port = int(broker.get("port", 8883 if broker.get("tls") else 1883))
        self.keepalive = int(keepalive)
        self.backoff = backoff or Backoff()
        self.connected = False
        self.stats = new_stats()
        self.last_error = None
        self.last_delay = None
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                        clean_session=clean_session, protocol=paho.MQTTv311)
        c.suppress_exceptions = True  # a bug in a bridge callback must not kill paho's thread
        c.manual_ack_set(True)
        c.max_inflight_messages_set(max_inflight)
        c.max_queued_messages_set(max_queued)
        c.connect_timeout = connect_timeout
        try:
            if will is not None:
                c.will_set(will[0], will[1], will[2], will[3])
            if broker.get("username") is not None:
                c.username_pw_set(broker["username"], broker.get("password"))
        except (ValueError, TypeError) as e:
            raise LinkError("bad_message", str(e)) from None
        if broker.get("tls"):
            c.tls_set_context(tls_context(broker))
        c.on_connect = self._paho_connect
        c.on_connect_fail = self._paho_connect_fail
        c.on_disconnect = self._paho_disconnect
        c.on_message = self._paho_message
        c.on_publish = self._paho_publish
        c.on_subscribe = self._paho_subscribe
        self._client = c
        self._loop = None
        self._done = None
        self._stopped = None
        self._acks = {}  # mid -> future of a QoS 1 publish
        self._subs = {}  # mid -> future of a subscribe
        self._on_connect_task = None
        self._closing = False
        self._running = False
        self._up = False  # paho thread's view: CONNACK accepted on the current socket

    # ------------------------------------------------------------ public interface

    async def run(self):
        if self._running:
            raise LinkError("busy", "run() is already running")
        if self._closing:
            return
        self._running = True
        self._loop = self._asyncio.get_running_loop()
        self._done = self._loop.create_future()
        self._stopped = self._asyncio.Event()
        self._client.connect_async(self.host, self.port, self.keepalive)
        self._client.loop_start()
        try:
            await self._done
        finally:
            if not self._closing:  # cancelled without close(): still leave cleanly
                self._closing = True
                self._client.disconnect()
            self.connected = False
            # paho's thread writes the DISCONNECT, then ends
            await self._loop.run_in_executor(None, self._client.loop_stop)
            self._fail_waiters("closed")
            self._running = False
            self._stopped.set()

    async def publish(self, topic, payload, retain=False, qos=1, timeout=10):
        if not self.connected:
            raise LinkError("offline", "not connected")
        if qos not in (0, 1):
            raise LinkError("bad_message", "QoS %r: only 0 and 1 are used" % (qos,))
        try:
            info = self._client.publish(topic, payload, qos, retain)
        except (ValueError, TypeError) as e:
            raise LinkError("bad_message", str(e)) from None
        if info.rc != self._paho.MQTT_ERR_SUCCESS:
            code = "busy" if info.rc == self._paho.MQTT_ERR_QUEUE_SIZE else "offline"
            raise LinkError(code, self._paho.error_string(info.rc))
        self.stats["tx"] += 1
        if qos == 0:
            return
        # on_publish for this mid reaches the loop through call_soon_threadsafe, so it cannot
        # run before the future is registered here
        fut = self._loop.create_future()
        self._acks[info.mid] = fut
        try:
            await self._asyncio.wait_for(fut, timeout)
        except self._asyncio.TimeoutError:
            raise LinkError("timeout", "no PUBACK within %s s" % timeout) from None
        finally:
            self._acks.pop(info.mid, None)

    async def subscribe(self, topics, timeout=10):
        if not self.connected:
            raise LinkError("offline", "not connected")
        for _, qos in topics:
            if qos not in (0, 1):
                raise LinkError("bad_message", "QoS %r: only 0 and 1 are used" % (qos,))
        try:
            rc, mid = self._client.subscribe(list(topics))
        except (ValueError, TypeError) as e:
            raise LinkError("bad_message", str(e)) from None
        if rc != self._paho.MQTT_ERR_SUCCESS:
            raise LinkError("offline", self._paho.error_string(rc))
        fut = self._loop.create_future()
        self._subs[mid] = fut
        try:
            return await self._asyncio.wait_for(fut, timeout)
        except self._asyncio.TimeoutError:
            raise LinkError("timeout", "no SUBACK within %s s" % timeout) from None
        finally:
            self._subs.pop(mid, None)

    async def close(self, timeout=5):
        self._closing = True
        self.connected = False
        self._client.disconnect()  # DISCONNECT first: the broker then discards the will
        if self._done is not None and not self._done.done():
            self._done.set_result(None)
        if self._running:
            try:
                await self._asyncio.wait_for(self._stopped.wait(), timeout)
            except self._asyncio.TimeoutError:
                pass

    # ------------------------------------------------------------ paho's thread

    def _call(self, fn, *args):
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass  # the event loop is closed: nobody is left to tell

    def _retry_in(self):
        # our backoff + jitter, handed to paho just before it waits to reconnect
        delay = self.backoff.next()
        self.last_delay = delay
        self._client.reconnect_delay_set(delay, delay)

    def _paho_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self._call(self._connect_failed, "refused: %s" % reason_code)
            return
        if self._closing:
            client.disconnect()  # close() raced this connect: leave cleanly, no will
            return
        self._up = True
        self.backoff.reset()
        self._call(self._connected)

    def _paho_connect_fail(self, client, userdata):
        import sys

        self._retry_in()
        # paho calls this from inside its `except OSError`: that error says what went wrong
        self._call(self._connect_failed, repr(sys.exc_info()[1]))

    def _paho_disconnect(self, client, userdata, flags, reason_code, properties):
        was_up = self._up
        self._up = False
        if not self._closing:
            self._retry_in()
        self._call(self._disconnected, was_up, str(reason_code))

    def _paho_message(self, client, userdata, msg):
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            self._call(self._bad_packet, "topic is not UTF-8")
            return
        self._call(self._deliver, topic, bytes(msg.payload), msg.mid, msg.qos)

    def _paho_publish(self, client, userdata, mid, reason_code, properties):
        self._call(self._acked, self._acks, mid, None)

    def _paho_subscribe(self, client, userdata, mid, reason_codes, properties):
        self._call(self._acked, self._subs, mid, [rc.value for rc in reason_codes])

    # ------------------------------------------------------------ loop thread

    def _connected(self):
        if self._closing:
            return
        self.connected = True
        self.stats["connects"] += 1
        if self._on_connect_task is not None:
            self._on_connect_task.cancel()  # still busy with an older connection
        self._on_connect_task = self._asyncio.ensure_future(run_on_connect(self))

    def _connect_failed(self, why):
        self.stats["connect_failures"] += 1
        self.last_error = "connect: " + why

    def _disconnected(self, was_up, reason):
        self.connected = False
        self._fail_waiters("dropped")
        if self._closing or not was_up:
            return
        self.stats["drops"] += 1
        self.last_error = "dropped: " + reason
        if reason == "Keep alive timeout":
            self.stats["ping_timeouts"] += 1
        elif reason == "Protocol error":
            self.stats["bad_packets"] += 1

    def _bad_packet(self, why):
        self.stats["bad_packets"] += 1
        self.last_error = "bad packet: " + why

    def _fail_waiters(self, code):
        for waiters in (self._acks, self._subs):
            for fut in waiters.values():
                if not fut.done():
                    fut.set_exception(LinkError(code, "connection lost before the answer"))
            waiters.clear()

    def _acked(self, waiters, mid, value):
        fut = waiters.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(value)

    def _deliver(self, topic, payload, mid, qos):
        self.stats["rx"] += 1
        if self.on_message is not None:
            try:
                self.on_message(topic, payload)
            except Exception as e:  # acknowledged anyway: a redelivery would fail alike
                self.stats["handler_errors"] += 1
                self.last_error = "on_message: %r" % (e,)
        # a PUBACK for a message of an earlier connection is harmless: with the persistent
        # session the broker resends that message under the same packet id
        self._client.ack(mid, qos)
