# The desktop payment host (SPEC 3, 3.1, 3.2, 4): one paho client that serves a fleet of
# terminals over MQTT. Every uplink goes through the same gate: topic -> device secret -> envelope
# (MAC, dev, type) -> seq above the persisted highest -> body schema; only then is it handled and
# its seq recorded. Anything that fails is dropped and counted per device and reason; nothing a
# terminal (or an attacker on the broker) sends can stop the paho thread.
import heapq
import itertools
import os
import threading
import time
from collections import deque

import paho.mqtt.client as mqtt

from host_sim.charges import Charges
from host_sim.registry import Registry
from protocol import cbor, envelope, messages, topics

UNKNOWN_DEVICE = "unknown_device"
BAD_BODY = "bad_body"
UNKNOWN_TYPE = "unknown_type"
INTERNAL_ERROR = "internal_error"
NO_DEVICE = "?"  # drop counter key when the topic names no device


class HostError(RuntimeError):
    pass


class Host:
    """The host simulator. Fault injection: set `latency_s` (delay before a charge_result is
    published) and `outage` (charges are still received and decided, results are withheld; a
    later repeat of the cid gets the original result) at any time."""

    def __init__(self, db_path, broker_host="127.0.0.1", broker_port=1883,
                 root=topics.DEFAULT_ROOT, rules=None, latency_s=0.0, client_id="host_sim",
                 log=None, clock=time.time, keepalive=30, coupon_max_uses=None, ca=None,
                 cert=None, key=None, username=None, password=None):
        """ca: the CA file (PEM) the broker's certificate must chain to; set, it makes the
        connection TLS with the host name checked. cert/key: the host's client certificate
        (PEM, both or neither). username/password: the broker account (for the locked-down
        broker, HOST_USERNAME and Registry.host_broker_password())."""
        topics.fleet(root, "trustlist")  # validates the root
        self.root = root
        self.broker_host = broker_host
        self.broker_port = broker_port
        self.keepalive = keepalive
        self.clock = clock
        self.log = log or (lambda line: None)
        self.latency_s = latency_s
        self.outage = False
        # the client first: a bad TLS file then leaves no database open
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=False, protocol=mqtt.MQTTv311)
        self.client.reconnect_delay_set(0.2, 5)
        self.tls = ca is not None
        if (cert is None) != (key is None):
            raise HostError("the host's certificate and key go together: set both or neither")
        if cert is not None and ca is None:
            raise HostError("a client certificate needs TLS: set the CA file too")
        if ca is not None:
            try:
                # CERT_REQUIRED and the host name check are paho's (and ssl's) defaults here
                self.client.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
            except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
                raise HostError("TLS files: %s" % (e,)) from None
        if username is not None:
            self.client.username_pw_set(username, password)
        elif password is not None:
            raise HostError("a broker password needs a username")
        self.registry = Registry(db_path, clock=clock)
        self.charges = Charges(self.registry, rules, coupon_max_uses)
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._processed = {}
        self._counts = {"results_sent": 0, "withheld": 0, "repeats": 0, "approved": 0,
                        "declined": 0, "redeemed_sent": 0, "errors": 0}
        self._latency = deque(maxlen=10000)
        self._subscribed = threading.Event()
        self._sub_mid = None
        self._connected = False
        self._refused = None  # the broker's reason when it last refused our CONNECT
        self._timers = _Scheduler(self._on_timer_error)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout=10.0):
        """Connects and returns once both subscriptions are acknowledged."""
        self._timers.start()
        self.client.connect_async(self.broker_host, self.broker_port, self.keepalive)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise HostError("no connection to %s:%d within %.1f s%s"
                            % (self.broker_host, self.broker_port, timeout,
                               " (refused: %s)" % self._refused if self._refused else ""))
        self.log("host up %s:%d%s root=%s" % (self.broker_host, self.broker_port,
                                              " (TLS)" if self.tls else "", self.root))
        return self

    def stop(self):
        """Disconnects (the broker keeps the session) and closes the database. Answers still
        waiting for their latency are not sent: the terminal's repeat gets them."""
        self._timers.stop()
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()
            self.registry.close()
        self.log("host down")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self._refused = str(reason_code)
            self.log("connect refused: %s" % reason_code)
            return
        self._connected = True
        result, mid = client.subscribe([("%s/dev/+/up/#" % self.root, 1),
                                        ("%s/dev/+/state" % self.root, 1)])
        self._sub_mid = mid
        self.log("connected (session present: %s)" % bool(flags.session_present))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        if mid == self._sub_mid and not any(rc.is_failure for rc in reason_codes):
            self._subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self._connected = False
        self.log("disconnected: %s" % reason_code)

    # ------------------------------------------------------------ outgoing

    def send(self, device_id, mtype, body):
        """Seals body for the device with the next persisted host seq and publishes it (QoS 1)
        on its down topic; returns the seq used."""
        if mtype in messages.DOWN_TYPES:
            messages.check(mtype, body)
        info = self.registry.lookup(device_id)
        if info is None:
            raise HostError("unknown device %r" % (device_id,))
        # Seq reservation and publish under one lock: the paho thread, the latency thread and
        # the caller all send, and a terminal drops anything that arrives below its highest.
        with self._send_lock:
            seq = self.registry.next_host_seq(device_id)
            data = envelope.seal(info[0], device_id, mtype, seq, int(self.clock()), body,
                                 os.urandom(16))
            self.client.publish(topics.down(self.root, device_id, mtype), data, qos=1)
        return seq

    def publish_trustlist(self, cose_bytes, timeout=5.0):
        return self._publish_list("trustlist", cose_bytes, timeout)

    def publish_revocations(self, cose_bytes, timeout=5.0):
        return self._publish_list("revocations", cose_bytes, timeout)

    def _publish_list(self, what, data, timeout):
        if not isinstance(data, (bytes, bytearray)) or not data:
            raise HostError("%s must be non-empty COSE bytes" % what)
        info = self.client.publish(topics.fleet(self.root, what), bytes(data), qos=1,
                                   retain=True)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise HostError("%s not acknowledged by the broker within %.1f s" % (what, timeout))
        self.log("published %s (%d bytes, retained)" % (what, len(data)))
        return info

    # ------------------------------------------------------------ incoming

    def _on_message(self, client, userdata, msg):
        arrived = time.monotonic()
        try:
            self._handle(msg.topic, msg.payload, arrived)
        except Exception as e:  # noqa: BLE001 - the paho thread must survive anything
            self._count("errors")
            dev = _topic_device(self.root, msg.topic)
            try:
                self.registry.count_drop(dev, INTERNAL_ERROR)
            except Exception:  # noqa: BLE001 - the database itself may be the problem
                pass
            self.log("error %s on %s: %r" % (dev, msg.topic, e))

    def _on_timer_error(self, e):
        # A result that could not be sent is sent again when the terminal repeats the charge.
        self._count("errors")
        self.log("error sending a delayed answer: %r" % (e,))

    def _drop(self, dev, reason, detail=""):
        self.registry.count_drop(dev, reason)
        self.log("drop %s %s %s" % (dev, reason, detail))

    def _handle(self, topic, data, arrived):
        try:
            kind, dev, mtype = topics.parse(self.root, topic)
        except ValueError as e:
            self._drop(_topic_device(self.root, topic), envelope.MALFORMED, str(e))
            return
        if kind == "state":
            self._handle_state(dev, data)
            return
        if kind != "up":
            self._drop(dev or NO_DEVICE, envelope.MALFORMED, "unexpected topic " + topic)
            return
        info = self.registry.lookup(dev)
        if info is None:
            self._drop(dev, UNKNOWN_DEVICE, topic)
            return
        secret, last_seq, store_id = info
        try:
            payload = envelope.open_envelope(secret, data, dev, mtype)
            seq = payload["seq"]
            if last_seq is not None and seq <= last_seq:
                raise envelope.EnvelopeError(envelope.STALE_SEQ,
                                             "seq %d not above %d" % (seq, last_seq))
        except envelope.EnvelopeError as e:
            self._drop(dev, e.code, e.message)
            return
        body = payload["body"]
        if mtype not in messages.UP_TYPES:
            # Authentic and fresh, but nothing here knows the type: record the seq, count it.
            self.registry.accept_seq(dev, seq)
            self._drop(dev, UNKNOWN_TYPE, mtype)
            return
        try:
            messages.check(mtype, body)
        except messages.MessageError as e:
            self._drop(dev, BAD_BODY, "%s: %s" % (mtype, e))
            return
        if mtype == "charge":
            self._handle_charge(dev, store_id, body, arrived)
        elif mtype == "hello":
            self.registry.record_hello(dev, body)
            self.log("hello %s fw=%s rt=%s boot=%d queue=%d trust=%d rev=%d" % (
                dev, body["fw"], body["rt"], body["boot"], body["queue"], body["trust_ver"],
                body["rev_ver"]))
        else:
            self.registry.record_status(dev, body)
            self.log("status %s queue=%d amt=%d drops=%d uptime=%d" % (
                dev, body["queue"], body["queue_amt"], body["drops"], body["uptime"]))
        # Only a fully handled message moves the device's seq forward.
        self.registry.accept_seq(dev, seq)
        with self._lock:
            self._processed[mtype] = self._processed.get(mtype, 0) + 1

    def _handle_state(self, dev, data):
        if not data:
            return  # a cleared retained message
        if self.registry.lookup(dev) is None:
            self._drop(dev, UNKNOWN_DEVICE, "state")
            return
        try:
            st = cbor.loads(data)
        except cbor.CBORError as e:
            self._drop(dev, envelope.MALFORMED, "state: %s" % e)
            return
        if type(st) is not dict or type(st.get("online")) is not bool \
                or type(st.get("at")) is not int or st["at"] < 0:
            self._drop(dev, envelope.MALFORMED, "state must be {online: bool, at: uint}")
            return
        self.registry.set_online(dev, st["online"], st["at"])
        with self._lock:
            self._processed["state"] = self._processed.get("state", 0) + 1
        self.log("state %s %s" % (dev, "online" if st["online"] else "offline"))

    def _handle_charge(self, dev, store_id, body, arrived):
        result, fresh = self.charges.apply(dev, body, int(self.clock()))
        self._count(result["st"] if fresh else "repeats")
        detail = "code=" + result["code"] if "code" in result else "auth=" + result["auth"]
        conflicts = sum(1 for c in result["cpn"] if c["st"] == "conflict")
        self.log("charge %s cid=%s amt=%d %s -> %s %s%s%s" % (
            dev, body["cid"].hex(), body["amt"], body["cur"], result["st"], detail,
            " conflicts=%d" % conflicts if conflicts else "", "" if fresh else " (repeat)"))
        # The answer first: the terminal's queue waits on it. An outage withholds only the
        # answer; the other terminals still learn of the coupons (a repeat is not fresh).
        if self.outage:
            self._count("withheld")
            self.log("withheld result %s cid=%s (outage)" % (dev, body["cid"].hex()))
        elif self.latency_s and self.latency_s > 0:
            self._timers.call_later(self.latency_s, self._answer, dev, result, arrived)
        else:
            self._answer(dev, result, arrived)
        if fresh:
            ok = [c["cti"] for c in result["cpn"] if c["st"] == "ok"]
            if ok:
                self._announce_redeemed(dev, store_id, ok)

    def _answer(self, dev, result, arrived):
        seq = self.send(dev, "charge_result", result)
        self.log("charge_result -> %s cid=%s %s seq=%d" % (dev, result["cid"].hex(),
                                                            result["st"], seq))
        with self._lock:
            self._counts["results_sent"] += 1
            self._latency.append(time.monotonic() - arrived)

    def _announce_redeemed(self, dev, store_id, ctis):
        for other in self.registry.devices(store_id):
            if other["device_id"] == dev:
                continue
            self.send(other["device_id"], "redeemed", {"cti": list(ctis)})
            self._count("redeemed_sent")
            self.log("redeemed -> %s %d coupon(s) from %s" % (other["device_id"], len(ctis), dev))

    # ------------------------------------------------------------ observation

    def _count(self, key):
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1

    def connected(self):
        return self._connected

    def metrics(self):
        """drops (persisted, per device and reason), processed messages per type, charge
        counters of this run, and answer latency in ms (arrival to publish)."""
        with self._lock:
            lat = sorted(self._latency)
            out = {"processed": dict(self._processed), "charges": dict(self._counts),
                   "connected": self._connected, "outage": self.outage,
                   "latency_s": self.latency_s}
        out["drops"] = self.registry.drops()
        out["drops_total"] = sum(sum(r.values()) for r in out["drops"].values())
        out["latency_ms"] = _stats(lat)
        return out

    def wait_for(self, predicate, timeout=5.0, interval=0.02):
        """Polls predicate() until it returns something true; returns that, or None on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                return None
            time.sleep(interval)


def _stats(samples):
    if not samples:
        return {"count": 0}
    n = len(samples)

    def pct(p):
        return round(samples[min(n - 1, int(p * n))] * 1000, 3)

    return {"count": n, "min": round(samples[0] * 1000, 3), "p50": pct(0.50),
            "p95": pct(0.95), "max": round(samples[-1] * 1000, 3),
            "mean": round(sum(samples) / n * 1000, 3)}


def _topic_device(root, topic):
    # Best effort for counting a drop on a topic that does not parse.
    rest = topic[len(root) + 1:].split("/") if topic.startswith(root + "/") else []
    if len(rest) > 1 and rest[0] == "dev" and rest[1]:
        return rest[1]
    return NO_DEVICE


class _Scheduler:
    """One thread that runs delayed calls (injected latency) so the paho thread never sleeps."""

    def __init__(self, on_error):
        self._on_error = on_error
        self._cv = threading.Condition()
        self._heap = []
        self._ids = itertools.count()
        self._thread = None
        self._running = False

    def start(self):
        with self._cv:
            if self._running:
                return
            self._running = True
        self._thread = threading.Thread(target=self._run, name="host_sim-latency", daemon=True)
        self._thread.start()

    def stop(self):
        with self._cv:
            self._running = False
            self._heap = []
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def call_later(self, delay, fn, *args):
        with self._cv:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._ids), fn, args))
            self._cv.notify()

    def _run(self):
        while True:
            with self._cv:
                while self._running and (not self._heap
                                         or self._heap[0][0] > time.monotonic()):
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cv.wait(wait)
                if not self._running:
                    return
                _, _, fn, args = heapq.heappop(self._heap)
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - the thread must go on serving
                self._on_error(e)
