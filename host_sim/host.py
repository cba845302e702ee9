# The desktop payment host (SPEC 3, 3.1, 3.2, 4, 8): one paho client that serves a fleet of
# terminals over MQTT. The paho thread only queues what arrives; one worker thread takes every
# message waiting (up to batch_max) and handles them in ONE transaction: each goes through the
# same gate (topic -> device secret -> envelope (MAC, dev, type) -> seq above the persisted
# highest -> body schema), then to its handler (hello, status, charge here; the store services'
# types to their service, host_sim/service.py), and its seq is accepted in that transaction.
# After the commit the answers' host seqs are reserved (a short transaction of their own) and
# they are sealed and published. A transaction that meets a transient database error (a
# deadlock between two workers) runs again; a message that raises otherwise makes the batch roll
# back and run again one transaction per message, so only that one is lost (`internal_error`).
# Anything that fails the gate is dropped and counted per device and reason; nothing a terminal
# (or an attacker on the broker) sends can stop the worker. The host outbox (service.push) is
# published after each batch and every OUTBOX_POLL_S; services with a tick(now) are called about
# every TICK_S from the worker.
import hashlib
import heapq
import inspect
import itertools
import os
import random
import socket
import threading
import time
from collections import deque

import paho.mqtt.client as mqtt

from host_sim import service
from host_sim.charges import FRESH, REUSED, Charges
from host_sim.registry import SEQ_WINDOW, Registry, RegistryError
from host_sim.service import FLEET, Context, Msg, Out
from host_sim.store import open_store
from protocol import batch_messages, cbor, envelope, messages, topics
from protocol.schema import AMOUNT_END

UNKNOWN_DEVICE = "unknown_device"
BAD_BODY = "bad_body"
UNKNOWN_TYPE = "unknown_type"
INTERNAL_ERROR = "internal_error"
NO_DEVICE = "?"  # drop counter key when the topic names no device
CORE_TYPES = ("hello", "status", "charge", "charges")
BATCH_MAX = 64
INFLIGHT_MAX = 1024  # our QoS 1 publishes awaiting their PUBACK (paho's limit)
OUTBOX_POLL_S = 0.2
OUTBOX_TAKE = 100
TICK_S = 1.0  # services' tick(now) at most this often
SEQ_END = AMOUNT_END  # a seq must fit the database's signed 64-bit integer
SHARE_PREFIX = "$share/host/"  # MQTT shared subscription of the host workers
PUBACK_WAIT_S = 5.0
# A transaction that meets a transient database error (store.transient: a deadlock between two
# workers, a lost connection) runs again, at most this many times in all.
TRANSIENT_TRIES = 5
# The fleet lists last published, so a terminal whose hello shows an older one gets it again:
# a broker's retained store may not hold it (RabbitMQ keeps retained messages per node).
FLEET_LISTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS fleet_lists (
    name TEXT PRIMARY KEY,
    ver  INTEGER NOT NULL,
    body BLOB NOT NULL
);
"""
HELLO_VER = {"trustlist": "trust_ver", "revocations": "rev_ver"}
REPUBLISH_S = 5.0  # a list is published again for stale hellos at most this often per host


class HostError(RuntimeError):
    pass


class Host:
    """The host simulator. Fault injection: set `latency_s` (delay before a charge_result is
    published) and `outage` (charges are still received and decided, results are withheld; a
    later repeat of the cid gets the original result) at any time."""

    def __init__(self, db, broker_host="127.0.0.1", broker_port=1883,
                 root=topics.DEFAULT_ROOT, rules=None, latency_s=0.0, client_id="host_sim",
                 log=None, clock=time.time, keepalive=30, coupon_max_uses=None, ca=None,
                 cert=None, key=None, username=None, password=None, services=(),
                 batch_max=BATCH_MAX, shared=False, inbound=None):
        """db: a SQLite path or a postgresql:// URL. ca: the CA file (PEM) the broker's
        certificate must chain to; set, it makes the connection TLS with the host name checked.
        cert/key: the host's client certificate (PEM, both or neither). username/password: the
        broker account (for the locked-down broker, HOST_USERNAME and
        Registry.host_broker_password()). services: store service classes
        (host_sim/service.py), built here over the same database. shared: one of several
        workers: subscribe through the MQTT shared subscription `$share/host/...` (give each
        worker its own client_id). inbound: another source of up messages instead of the MQTT
        subscriptions (host_sim/amqp_inbound.py: a RabbitMQ queue); MQTT still sends."""
        topics.fleet(root, "trustlist")  # validates the root
        self.root = root
        self.broker_host = broker_host
        self.broker_port = broker_port
        self.keepalive = keepalive
        self.clock = clock
        self.log = log or (lambda line: None)
        self.latency_s = latency_s
        self.outage = False
        if type(batch_max) is not int or batch_max < 1:
            raise HostError("batch_max must be an int >= 1")
        self.batch_max = batch_max
        self.shared = shared
        self.inbound = inbound
        # the client first: a bad TLS file then leaves no database open
        # manual_ack: the PUBACK of an up message goes out after the transaction that handled it
        # committed, so a worker killed in between gets it again from the broker.
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=False, protocol=mqtt.MQTTv311, manual_ack=True)
        self.client.reconnect_delay_set(0.2, 5)
        # paho's default (20 QoS 1 publishes in flight) paces a batch's answers by broker round
        # trips: 256 answers took 13 of them, with the worker waiting for the last PUBACK.
        self.client.max_inflight_messages_set(INFLIGHT_MAX)
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
        self.store = open_store(db)
        try:
            # Several workers finish a terminal's messages out of order: only they need the
            # seq window (registry.SEQ_WINDOW); one host keeps SPEC 3.1's strict rule.
            self.registry = Registry(self.store, clock=clock,
                                     seq_window=SEQ_WINDOW if shared or inbound else 1)
            self.store.schema(service.OUTBOX_SCHEMA)
            self.store.schema(FLEET_LISTS_SCHEMA)
            self.services = self._build_services(services)
            self.charges = Charges(self.registry, rules, coupon_max_uses, self.services)
        except BaseException:
            self.store.close()
            raise
        self._handlers = {"hello": self._on_hello, "status": self._on_status,
                          "charge": self._on_charge, "charges": self._on_charges}
        for svc in self.services:
            for mtype, fn in _service_handlers(svc):
                self._handlers[mtype] = fn
        self._lock = threading.Lock()
        # host seq reservation .. PUBACK, in seq order per device (the store's publish lock
        # does the same across processes: several workers answer one terminal)
        self._send_lock = threading.Lock()
        self._claims = None  # PostgreSQL: the connection that holds claimed outbox rows
        self._last_rx = 0.0
        self._republished = {}  # list name -> monotonic time it was last republished
        self._processed = {}
        self._counts = {"results_sent": 0, "withheld": 0, "repeats": 0, "approved": 0,
                        "declined": 0, "redeemed_sent": 0, "errors": 0, "cid_reused": 0,
                        "outbox_sent": 0, "retries": 0}
        self._batches = {"count": 0, "messages": 0, "largest": 0, "fallbacks": 0}
        self._latency = deque(maxlen=10000)
        self._inbox = _Inbox()
        self._worker = None
        self._subscribed = threading.Event()
        self._sub_mid = None
        self._connected = False
        self._refused = None  # the broker's reason when it last refused our CONNECT
        self._timers = _Scheduler(self._on_timer_error)
        self._next_tick = 0.0
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _build_services(self, classes):
        ctx = Context(self.store, self.clock, self.log)
        out = []
        claimed = set(CORE_TYPES)
        for cls in classes:
            if getattr(cls, "SCHEMA", None):
                self.store.schema(cls.SCHEMA)
            svc = cls(ctx)
            for mtype, _ in _service_handlers(svc):
                if mtype in claimed:
                    raise HostError("message type %r is handled twice (service %s)"
                                    % (mtype, getattr(svc, "name", cls.__name__)))
                if mtype not in messages.UP_TYPES:
                    raise HostError("service %s handles %r, which protocol/messages.py does "
                                    "not register as an up type"
                                    % (getattr(svc, "name", cls.__name__), mtype))
                claimed.add(mtype)
            out.append(svc)
        return out

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout=10.0):
        """Connects and returns once both subscriptions are acknowledged."""
        self._timers.start()
        self._inbox.open()
        self._worker = threading.Thread(target=self._work, name="host_sim-worker", daemon=True)
        self._worker.start()
        self.client.connect_async(self.broker_host, self.broker_port, self.keepalive)
        self.client.loop_start()
        if self.inbound is not None:
            try:
                self.inbound.start(self._inbox.put, timeout)
            except Exception as e:  # noqa: BLE001 - reported as the host not starting
                self.stop()
                raise HostError("inbound %s: %s" % (self.inbound, e))
        if not self._subscribed.wait(timeout):
            self.stop()
            raise HostError("no connection to %s:%d within %.1f s%s"
                            % (self.broker_host, self.broker_port, timeout,
                               " (refused: %s)" % self._refused if self._refused else ""))
        self.log("host up %s:%d%s root=%s" % (self.broker_host, self.broker_port,
                                              " (TLS)" if self.tls else "", self.root))
        return self

    def stop(self):
        """Handles what has already arrived, disconnects (the broker keeps the session) and
        closes the database. Answers still waiting for their latency are not sent: the
        terminal's repeat gets them."""
        self._timers.stop()
        try:
            if self.inbound is not None:
                self.inbound.stop()
            elif self.shared:
                self._leave_share()
            self._inbox.close()
            if self._worker is not None:
                self._worker.join(60)
                self._worker = None
            self.client.disconnect()
        finally:
            if self.inbound is not None:
                self.inbound.close()
            self.client.loop_stop()
            self.registry.close()
            self.store.close()
            if self._claims is not None:
                self._claims.close()
        self.log("host down")

    def _leave_share(self, quiet_s=0.3, most_s=5.0):
        # A persistent session still subscribed keeps receiving its share of the messages
        # while this worker is gone (mosquitto queues them for it): unsubscribe, then handle
        # what is still on its way before disconnecting. A killed worker cannot: restart it
        # with the same --worker number and the broker hands it what it holds.
        if not self._connected:
            return
        self.client.unsubscribe(self.subscriptions())
        deadline = time.monotonic() + most_s
        while time.monotonic() < deadline:
            if not self._inbox.size() and time.monotonic() - self._last_rx >= quiet_s:
                break
            time.sleep(0.05)

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
        _nodelay(client)
        if self.inbound is not None:
            self._subscribed.set()  # up messages come from the inbound queue
            self.log("connected (publishing only; up messages from %s)" % self.inbound)
            return
        result, mid = client.subscribe([(t, 1) for t in self.subscriptions()])
        self._sub_mid = mid
        self.log("connected (session present: %s)" % bool(flags.session_present))

    def subscriptions(self):
        """The topic filters this host subscribes to: through the shared subscription
        `$share/host/` (MQTT 5, and by topic name for 3.1.1 clients on mosquitto 2) when it is one
        of several workers, so the broker gives each message to one of them."""
        filters = ["%s/dev/+/up/#" % self.root, "%s/dev/+/state" % self.root]
        if self.shared:
            filters = [SHARE_PREFIX + f for f in filters]
        return filters

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
        out = Out(device_id, mtype, body)  # checks a known down type's body
        try:
            [(topic, data, seq)] = self._deliver([out])
        except RegistryError:
            raise HostError("unknown device %r" % (device_id,))
        return seq

    def _deliver(self, outs):
        """Seals outs with host seqs reserved (and committed) now and publishes them, waiting
        for the broker's PUBACKs before another worker may reserve a seq for the same
        terminals: the terminal drops a seq below one it accepted, so answers to one terminal
        must reach the broker in seq order even when several workers answer it."""
        if not outs:
            return []
        devices = sorted({o.device_id for o in outs})
        with self._send_lock, self.store.publish_lock(devices):
            sealed = self._retrying(self._reserve, outs)
            infos = [self.client.publish(topic, data, qos=1) for topic, data, _ in sealed]
            self._wait_acked(infos)
        return sealed

    def _wait_acked(self, infos, timeout=PUBACK_WAIT_S):
        deadline = time.monotonic() + timeout
        for info in infos:
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError):  # not queued: the broker is gone
                pass
            if not info.is_published():
                # Order past this point is not guaranteed; a terminal that drops a late answer
                # as stale asks again (its queue retries) and gets the stored result.
                self._count("puback_timeouts")
                return

    def _reserve(self, outs):
        """Reserves the host seqs of outs in one committed transaction (one write per device,
        in device order as a batch takes them: two workers never wait on each other in a
        circle) and seals them: [(topic, envelope bytes, seq)] in the order given."""
        per_device = {}
        for o in outs:
            per_device[o.device_id] = per_device.get(o.device_id, 0) + 1
        nxt = {}
        with self.store.transaction() as tx:
            for dev in sorted(per_device):
                first, secret = self.registry.reserve_host_seqs(dev, per_device[dev], tx)
                nxt[dev] = [first, secret]
        ts = int(self.clock())
        sealed = []
        for o in outs:
            slot = nxt[o.device_id]
            seq, slot[0] = slot[0], slot[0] + 1
            data = envelope.seal(slot[1], o.device_id, o.mtype, seq, ts, o.body, os.urandom(16))
            sealed.append((topics.down(self.root, o.device_id, o.mtype), data, seq))
        return sealed

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
        self._remember_list(what, bytes(data))
        return info

    def _remember_list(self, what, data):
        ver = _list_ver(data)
        if ver is None:
            return
        with self.store.transaction() as tx:
            tx.execute("INSERT INTO fleet_lists (name, ver, body) VALUES (?, ?, ?)"
                       " ON CONFLICT (name) DO UPDATE SET ver=excluded.ver, body=excluded.body"
                       " WHERE fleet_lists.ver < excluded.ver", (what, ver, data))

    def _stale_lists(self, tx, body):
        """The lists newer than the ones a hello reports, not republished in REPUBLISH_S."""
        out = []
        now = time.monotonic()
        for name, ver, data in tx.execute("SELECT name, ver, body FROM fleet_lists").fetchall():
            key = HELLO_VER.get(name)
            if key is None or body.get(key, 0) >= ver:
                continue
            if now - self._republished.get(name, -REPUBLISH_S) < REPUBLISH_S:
                continue
            self._republished[name] = now
            out.append((name, bytes(data)))
        return out

    # ------------------------------------------------------------ incoming

    def _on_message(self, client, userdata, msg):
        # The paho thread only queues: the worker handles (and so commits) in batches, then
        # acknowledges (manual_ack): a message not acknowledged comes again after a reconnect.
        self._last_rx = time.monotonic()
        if not self._inbox.put((msg.topic, msg.payload, time.monotonic(), (msg.mid, msg.qos))):
            self.log("stopping: %s not handled (the broker sends it again)" % msg.topic)

    def _ack(self, items):
        """Acknowledges handled items (in the order received, as MQTT wants)."""
        if self.inbound is not None:
            self.inbound.ack([item[3] for item in items])
            return
        for item in items:
            mid, qos = item[3]
            if qos > 0:
                self.client.ack(mid, qos)

    def _work(self):
        while True:
            batch = self._inbox.take(self.batch_max, OUTBOX_POLL_S)
            if batch is None:
                return
            if batch:
                self._run_batch(batch)
            self._drain_outbox()
            self._tick()

    def _run_batch(self, items):
        with self._lock:
            self._batches["count"] += 1
            self._batches["messages"] += len(items)
            self._batches["largest"] = max(self._batches["largest"], len(items))
        try:
            self._finish(self._retrying(self._handle_batch, items), items)
            return
        except Exception as e:  # noqa: BLE001 - the worker must survive anything
            if len(items) == 1:
                self._internal_error(items[0], e)
                self._ack(items)
                return
            with self._lock:
                self._batches["fallbacks"] += 1
            self.log("batch of %d rolled back (%r): one transaction per message"
                     % (len(items), e))
        for item in items:
            try:
                self._finish(self._retrying(self._handle_batch, [item]), [item])
            except Exception as e:  # noqa: BLE001
                self._internal_error(item, e)
                self._ack([item])

    def _retrying(self, fn, arg):
        """fn(arg), run again after a transient database error (TRANSIENT_TRIES in all): the
        transaction that lost a deadlock was rolled back whole and may simply go again."""
        for attempt in range(1, TRANSIENT_TRIES + 1):
            try:
                return fn(arg)
            except Exception as e:
                if attempt == TRANSIENT_TRIES or not self.store.transient(e):
                    raise
                self._count("retries")
                self.log("transient database error (%r): try %d of %d"
                         % (e, attempt + 1, TRANSIENT_TRIES))
                time.sleep(random.uniform(0.001, 0.01) * attempt)

    def _finish(self, b, items):
        """After the commit: acknowledge the messages, then send the answers."""
        self._ack(items)
        try:
            self._send_answers(b)
        except Exception as e:  # noqa: BLE001 - decided and committed: the terminal asks again
            self._count("errors")
            self.log("answers not sent (%r): the terminals' repeats get them" % (e,))

    def _internal_error(self, item, e):
        topic = item[0]
        self._count("errors")
        dev = _topic_device(self.root, topic)
        try:
            self.registry.count_drop(dev, INTERNAL_ERROR)
        except Exception:  # noqa: BLE001 - the database itself may be the problem
            pass
        self.log("error %s on %s: %r" % (dev, topic, e))

    def _handle_batch(self, items):
        """Handles items in one transaction and counts what it did once committed; returns the
        batch (its answers go out in _send_answers). Items are taken per terminal (stable
        order): two workers then lock terminals' rows in the same order."""
        b = _Batch()
        ordered = sorted(items, key=lambda item: _topic_device(self.root, item[0]))
        with self.store.transaction() as tx:
            for item in ordered:
                self._handle(tx, b, item[0], item[1], item[2])
            for dev in sorted(b.taken):
                self.registry.save_seq_window(dev, b.windows[dev], tx)
        # committed: now it may be counted and said (counted first, so whoever sees an answer
        # also sees it in metrics())
        with self._lock:
            for key in b.counts:
                self._counts[key] = self._counts.get(key, 0) + 1
            for mtype in b.processed:
                self._processed[mtype] = self._processed.get(mtype, 0) + 1
        self._say(b.logs)
        return b

    def _send_answers(self, b):
        for name, data in b.lists:
            self.client.publish(topics.fleet(self.root, name), data, qos=1, retain=True)
        outs = [o for o, _ in b.outs]
        sealed = self._deliver(outs)
        now = time.monotonic()
        sent = []
        lines = []
        for (_, _, seq), (out, arrived) in zip(sealed, b.outs, strict=True):
            if out.mtype == "charge_result":
                results = (out.body,)
            elif out.mtype == "charge_results":
                results = out.body["items"]
            else:
                continue
            batched = " (batch)" if out.mtype == "charge_results" else ""
            for r in results:
                sent.append(now - arrived)
                lines.append("charge_result -> %s cid=%s %s seq=%d%s" % (
                    out.device_id, r["cid"].hex(), r["st"], seq, batched))
        with self._lock:
            self._counts["results_sent"] += len(sent)
            self._latency.extend(sent)
        self._say(lines)
        for dev, result, arrived in b.later:
            self._timers.call_later(self.latency_s, self._answer, dev, result, arrived)

    def _say(self, lines):
        """Log lines, in one write where the log takes several (host_sim serve's)."""
        many = getattr(self.log, "lines", None)
        if many is not None:
            many(lines)
            return
        for line in lines:
            self.log(line)

    def _on_timer_error(self, e):
        # A result that could not be sent is sent again when the terminal repeats the charge.
        self._count("errors")
        self.log("error sending a delayed answer: %r" % (e,))

    def _drop(self, tx, b, dev, reason, detail=""):
        self.registry.count_drop(dev, reason, tx)
        b.logs.append("drop %s %s %s" % (dev, reason, detail))

    def _handle(self, tx, b, topic, data, arrived):
        try:
            kind, dev, mtype = topics.parse(self.root, topic)
        except ValueError as e:
            self._drop(tx, b, _topic_device(self.root, topic), envelope.MALFORMED, str(e))
            return
        if kind == "state":
            self._handle_state(tx, b, dev, data)
            return
        if kind != "up":
            self._drop(tx, b, dev or NO_DEVICE, envelope.MALFORMED, "unexpected topic " + topic)
            return
        info = b.devices.get(dev)
        if info is None:
            info = self.registry.lookup(dev, tx)
            if info is None:
                self._drop(tx, b, dev, UNKNOWN_DEVICE, topic)
                return
            b.devices[dev] = info
        secret, last_seq, store_id = info
        last_seq = b.seqs.get(dev, last_seq)
        try:
            payload = envelope.open_envelope(secret, data, dev, mtype)
            seq = payload["seq"]
            if seq >= SEQ_END:
                raise envelope.EnvelopeError(envelope.MALFORMED, "seq %d beyond 2^63-1" % seq)
            if self.registry.seq_is_stale(last_seq, seq):
                raise envelope.EnvelopeError(envelope.STALE_SEQ,
                                             "seq %d: highest accepted %d" % (seq, last_seq))
        except envelope.EnvelopeError as e:
            self._drop(tx, b, dev, e.code, e.message)
            return
        body = payload["body"]
        handler = self._handlers.get(mtype)
        if handler is not None:
            try:
                messages.check(mtype, body)
            except messages.MessageError as e:
                self._drop(tx, b, dev, BAD_BODY, "%s: %s" % (mtype, e))
                return
        # The seq is accepted in the database, atomically and once (registry.take_seq: a
        # window, since two workers may finish one terminal's messages out of order); the row
        # is read and locked to this transaction at the terminal's first message of the batch
        # and written back once before the commit (_handle_batch), so a terminal's messages go
        # one at a time. A handler that raises rolls the whole batch back, its seqs with it.
        window = b.windows.get(dev)
        if window is None:
            window = b.windows[dev] = self.registry.seq_window_of(dev, tx)
        if window is None or not self.registry.take_seq(window, seq):
            self._drop(tx, b, dev, envelope.STALE_SEQ, "seq %d seen before" % seq)
            return
        b.taken.add(dev)
        if handler is None:
            # Authentic and fresh, but nothing here handles the type: the seq counts.
            b.seqs[dev] = max(seq, b.seqs.get(dev, seq))
            self._drop(tx, b, dev, UNKNOWN_TYPE, mtype)
            return
        handler(tx, b, Msg(dev, store_id, mtype, body, seq, int(self.clock())), arrived)
        # The batch's cached view of the terminal's highest seq (the database has it too).
        b.seqs[dev] = max(seq, b.seqs.get(dev, seq))
        b.processed.append(mtype)

    def _handle_state(self, tx, b, dev, data):
        if not data:
            return  # a cleared retained message
        if self.registry.lookup(dev, tx) is None:
            self._drop(tx, b, dev, UNKNOWN_DEVICE, "state")
            return
        try:
            st = cbor.loads(data)
        except cbor.CBORError as e:
            self._drop(tx, b, dev, envelope.MALFORMED, "state: %s" % e)
            return
        if type(st) is not dict or type(st.get("online")) is not bool \
                or type(st.get("at")) is not int or not 0 <= st["at"] < SEQ_END:
            self._drop(tx, b, dev, envelope.MALFORMED, "state must be {online: bool, at: uint}")
            return
        self.registry.set_online(dev, st["online"], st["at"], tx)
        b.processed.append("state")
        b.logs.append("state %s %s" % (dev, "online" if st["online"] else "offline"))

    # ------------------------------------------------------------ core handlers

    def _on_hello(self, tx, b, msg, arrived):
        body = msg.body
        self.registry.record_hello(msg.device_id, body, tx)
        b.logs.append("hello %s fw=%s rt=%s boot=%d queue=%d trust=%d rev=%d" % (
            msg.device_id, body["fw"], body["rt"], body["boot"], body["queue"],
            body["trust_ver"], body["rev_ver"]))
        batch = batch_messages.hello_batch(body)
        if batch:
            # The terminal batches its charges on this connection once it has this answer.
            b.outs.append((Out(msg.device_id, "caps", {"batch": batch}), None))
        for name, data in self._stale_lists(tx, body):
            b.lists.append((name, data))
            b.logs.append("hello %s has an older %s: published again" % (msg.device_id, name))
        for svc in self.services:
            on_hello = getattr(svc, "on_hello", None)
            if on_hello is not None:
                b.add(on_hello(tx, msg), svc)

    def _on_status(self, tx, b, msg, arrived):
        body = msg.body
        self.registry.record_status(msg.device_id, body, tx)
        b.logs.append("status %s queue=%d amt=%d drops=%d uptime=%d" % (
            msg.device_id, body["queue"], body["queue_amt"], body["drops"], body["uptime"]))

    def _on_charge(self, tx, b, msg, arrived):
        result, redeemed = self._charge(tx, b, msg, msg.body, arrived)
        # The answer first: the terminal's queue waits on it.
        if result is not None:
            b.outs.append((Out(msg.device_id, "charge_result", result), arrived))
        if redeemed:
            self._announce_redeemed(tx, b, msg.store_id, msg.device_id, msg.body["cid"],
                                    redeemed)

    def _on_charges(self, tx, b, msg, arrived):
        """A batch of charges (protocol/batch_messages.py): each item is decided as its own
        `charge`, a bad one dropped and counted alone; the results go back in one message."""
        results = []
        announce = []
        for i, body in enumerate(msg.body["items"]):
            try:
                messages.check("charge", body)
            except messages.MessageError as e:
                self._drop(tx, b, msg.device_id, BAD_BODY, "charges.items[%d]: %s" % (i, e))
                continue
            result, redeemed = self._charge(tx, b, msg, body, arrived)
            if result is not None:
                results.append(result)
            if redeemed:
                announce.append((body["cid"], redeemed))
        if results:
            b.outs.append((Out(msg.device_id, "charge_results", {"items": results}), arrived))
        for cid, ctis in announce:
            self._announce_redeemed(tx, b, msg.store_id, msg.device_id, cid, ctis)

    def _charge(self, tx, b, msg, body, arrived):
        """Decides one charge body: (the result to send now or None (withheld by an outage,
        delayed by the injected latency), the coupons it redeemed afresh to announce)."""
        dev = msg.device_id
        charge = {"device_id": dev, "store_id": msg.store_id, "cid": body["cid"],
                  "body": body, "now": msg.now}
        result, outcome = self.charges.decide(tx, charge, msg.now)
        fresh = outcome == FRESH
        if outcome == REUSED:
            b.counts.append("cid_reused")
            b.logs.append("drop %s cid_reused cid=%s: this terminal sent the cid before with "
                          "another body -> declined" % (dev, body["cid"].hex()))
        else:
            b.counts.append(result["st"] if fresh else "repeats")
            detail = "code=" + result["code"] if "code" in result else "auth=" + result["auth"]
            conflicts = sum(1 for c in result["cpn"] if c["st"] == "conflict")
            b.logs.append("charge %s cid=%s amt=%d %s -> %s %s%s%s" % (
                dev, body["cid"].hex(), body["amt"], body["cur"], result["st"], detail,
                " conflicts=%d" % conflicts if conflicts else "", "" if fresh else " (repeat)"))
        redeemed = [c["cti"] for c in result["cpn"] if c["st"] == "ok"] if fresh else None
        # An outage withholds only the answer; the other terminals still learn of the coupons
        # (a repeat is not fresh).
        if self.outage:
            b.counts.append("withheld")
            b.logs.append("withheld result %s cid=%s (outage)" % (dev, body["cid"].hex()))
            return None, redeemed
        if self.latency_s and self.latency_s > 0:
            b.later.append((dev, result, arrived))
            return None, redeemed
        return result, redeemed

    def _announce_redeemed(self, tx, b, store_id, dev, cid, ctis):
        # rid: one id per charge, the same at every terminal, so a replay adds no use there.
        devices = b.stores.get(store_id)
        if devices is None:
            devices = b.stores[store_id] = service.store_devices(tx, store_id)
        rid = None
        for other in devices:
            if other == dev:
                continue
            if rid is None:
                rid = _redeemed_id(dev, cid)
            b.outs.append((Out(other, "redeemed", {"cti": list(ctis), "rid": rid}), None))
            b.counts.append("redeemed_sent")
            b.logs.append("redeemed -> %s %d coupon(s) from %s" % (other, len(ctis),
                                                                   dev))

    def _answer(self, dev, result, arrived):
        with self._lock:
            self._counts["results_sent"] += 1
            self._latency.append(time.monotonic() - arrived)
        seq = self.send(dev, "charge_result", result)
        self.log("charge_result -> %s cid=%s %s seq=%d" % (dev, result["cid"].hex(),
                                                            result["st"], seq))

    # ------------------------------------------------------------ host outbox

    def _drain_outbox(self):
        """Publishes what services and command lines pushed (service.push): device messages
        sealed with reserved seqs, fleet lists retained. A row that cannot be sent (a device
        no longer registered) is logged and dropped, never retried for ever."""
        try:
            while self._drain_outbox_once() >= OUTBOX_TAKE:
                pass
        except Exception as e:  # noqa: BLE001 - the worker must survive anything
            self._count("errors")
            self.log("error publishing the host outbox: %r" % (e,))

    def _drain_outbox_once(self):
        with self.store.read() as tx:
            if tx.execute("SELECT id FROM host_outbox LIMIT 1").fetchone() is None:
                return 0
        if self.store.kind != "postgres":
            # SQLite: one writer at a time, so the rows are taken (deleted) in their own
            # transaction; a host killed before publishing them loses them.
            with self.store.transaction() as tx:
                rows = service.take_outbox(tx, OUTBOX_TAKE)
            self._publish_outbox(rows)
            return len(rows)
        # PostgreSQL, several workers: rows are claimed FOR UPDATE SKIP LOCKED on a second
        # connection whose transaction stays open until they are published and acknowledged,
        # then deleted; a worker killed before that leaves them to another one (at least once:
        # what the outbox carries is idempotent at the terminal: config, redeemed by rid,
        # lists by version).
        if self._claims is None:
            self._claims = open_store(self.store.where)
        with self._claims.transaction() as ctx:
            rows = service.take_outbox(ctx, OUTBOX_TAKE)
            self._publish_outbox(rows)
        return len(rows)

    def _publish_outbox(self, rows):
        outs, lists, skipped = [], [], []
        for dev, mtype, body in rows:
            if dev is FLEET:
                lists.append((mtype, body))
            elif self.registry.lookup(dev) is None:
                skipped.append((dev, mtype))
            else:
                outs.append(Out(dev, mtype, body))
        for dev, mtype in skipped:
            self.log("outbox: %s for unknown device %s dropped" % (mtype, dev))
        infos = []
        for mtype, data in lists:
            try:
                topic = topics.fleet(self.root, mtype)
            except ValueError as e:
                self.log("outbox: fleet %s dropped: %s" % (mtype, e))
                continue
            infos.append(self.client.publish(topic, data, qos=1, retain=True))
            self.log("outbox: published %s (%d bytes, retained)" % (mtype, len(data)))
            self._remember_list(mtype, data)
        self._wait_acked(infos)
        sealed = self._deliver(outs)
        for (_, _, seq), out in zip(sealed, outs, strict=True):
            self.log("outbox: %s -> %s seq=%d" % (out.mtype, out.device_id, seq))
        with self._lock:
            self._counts["outbox_sent"] += len(outs) + len(lists)

    def _tick(self):
        """Each service's tick(now), about once every TICK_S, from this worker (between
        batches): the service opens its own transactions (a day rolling over...)."""
        t = time.monotonic()
        if t < self._next_tick:
            return
        self._next_tick = t + TICK_S
        for svc in self.services:
            fn = getattr(svc, "tick", None)
            if fn is None:
                continue
            try:
                fn(int(self.clock()))
            except Exception as e:  # noqa: BLE001 - the worker must survive anything
                self._count("errors")
                self.log("error in the %s tick: %r" % (getattr(svc, "name", "service"), e))

    # ------------------------------------------------------------ observation

    def _count(self, key):
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1

    def connected(self):
        return self._connected

    def waiting(self):
        """Messages received and not yet taken by the worker (no database access)."""
        return self._inbox.size()

    def metrics(self):
        """drops (persisted, per device and reason), processed messages per type, charge
        counters of this run, batches as taken by the worker (count, messages, largest,
        fallbacks to one transaction per message) and answer latency in ms (arrival to publish)."""
        with self._lock:
            lat = sorted(self._latency)
            out = {"processed": dict(self._processed), "charges": dict(self._counts),
                   "batches": dict(self._batches), "connected": self._connected,
                   "outage": self.outage, "latency_s": self.latency_s}
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


class _Batch:
    """What handling a batch produced, kept until its transaction has committed: answers
    [(Out, arrival time or None)], log lines, counter keys, handled types, delayed answers."""

    def __init__(self):
        self.outs = []
        self.logs = []
        self.counts = []
        self.processed = []
        self.later = []
        self.lists = []  # (name, COSE bytes): fleet lists to publish again (retained)
        self.devices = {}  # device id -> (secret, last_seq, store_id), looked up once
        self.windows = {}  # device id -> its seq window (registry.seq_window_of), read once
        self.taken = set()  # the devices whose window took a seq: written before the commit
        self.stores = {}   # store id -> its device ids, read once
        self.seqs = {}     # device id -> the highest seq accepted in this batch

    def add(self, outs, svc):
        for o in outs or ():
            if not isinstance(o, Out):
                raise HostError("service %s answered %r, not an Out"
                                % (getattr(svc, "name", svc), o))
            self.outs.append((o, None))


class _Inbox:
    """paho thread -> worker: take() gives every item waiting, up to `most`."""

    def __init__(self):
        self._cv = threading.Condition()
        self._items = deque()
        self._open = False

    def open(self):
        with self._cv:
            self._open = True

    def put(self, item):
        with self._cv:
            if not self._open:
                return False
            self._items.append(item)
            self._cv.notify()
            return True

    def take(self, most, timeout):
        """Up to `most` items ([] after timeout with none); None once closed and empty."""
        with self._cv:
            if not self._items and self._open:
                self._cv.wait(timeout)
            if not self._items:
                return [] if self._open else None
            n = min(most, len(self._items))
            return [self._items.popleft() for _ in range(n)]

    def size(self):
        with self._cv:
            return len(self._items)

    def close(self):
        with self._cv:
            self._open = False
            self._cv.notify_all()


def _service_handlers(svc):
    """[(mtype, handler(tx, batch, msg, arrived))] of a service's `up` map."""
    out = []
    for mtype, fn in (getattr(svc, "up", None) or {}).items():
        if isinstance(fn, str):
            fn = getattr(svc, fn)
        elif not inspect.ismethod(fn):
            fn = fn.__get__(svc)  # a function of a class-level dict
        out.append((mtype, _wrap(svc, fn)))
    return out


def _wrap(svc, fn):
    def handle(tx, b, msg, arrived):
        outs = fn(tx, msg)
        b.add(outs, svc)
        b.logs.append("%s %s -> %s: %d answer(s)" % (msg.mtype, msg.device_id,
                                                     getattr(svc, "name", "service"),
                                                     len(outs or ())))
        b.logs.extend(o.note for o in outs or () if getattr(o, "note", None))
    return handle


def _list_ver(data):
    """The `ver` of a signed fleet list (COSE_Sign1, maybe tagged 18), or None."""
    try:
        msg = cbor.loads(data)
        if isinstance(msg, cbor.Tag):
            msg = msg.value
        ver = cbor.loads(msg[2]).get("ver")
    except Exception:  # noqa: BLE001 - not ours to judge here: the terminals check lists
        return None
    return ver if type(ver) is int and 0 <= ver < SEQ_END else None


def _redeemed_id(device_id, cid):
    return hashlib.sha256(b"redeemed|%s|" % device_id.encode() + cid).digest()[:16]


def _nodelay(client):
    # PLATFORM_NOTES 2026-12-02: without it a PUBLISH behind a PUBACK waits ~40 ms for the
    # peer's delayed ACK.
    sock = client.socket()
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


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
