# Up messages from a RabbitMQ queue (the clustered-broker profile, docs/scale.md): terminals
# speak MQTT 3.1.1 to RabbitMQ's MQTT plugin, which publishes every message to the `amq.topic`
# exchange with the topic as routing key ("/" and "." swapped). One durable queue (quorum: it is
# replicated across a cluster) is bound to the device topics; every host worker consumes from it
# over AMQP 0-9-1 (pika), so RabbitMQ gives each message to one worker. A message is
# acknowledged after the transaction that handled it committed; a worker that dies leaves its
# unacknowledged messages to the others (the queue redelivers them at once).
import threading
import time

DEFAULT_QUEUE = "host.up"
PREFETCH = 256


def routing_key(topic):
    """The AMQP routing key RabbitMQ's MQTT plugin gives a topic (and back: the same swap)."""
    return topic.translate(str.maketrans("/.", "./"))


class AmqpInbound:
    def __init__(self, url, root, queue=DEFAULT_QUEUE, prefetch=PREFETCH, quorum=True):
        self.url = url
        self.root = root
        self.queue = queue
        self.prefetch = prefetch
        self.quorum = quorum
        self._conn = self._chan = None
        self._thread = None
        self._ready = threading.Event()
        self._error = None
        self._closing = False

    def __str__(self):
        return "amqp queue %s" % self.queue

    def bindings(self):
        return [routing_key("%s/dev/*/up/#" % self.root), routing_key("%s/dev/*/state"
                                                                       % self.root)]

    def start(self, put, timeout=10.0):
        """Consumes in a thread of its own; put((topic, payload, arrived, delivery tag))."""
        self._put = put
        self._thread = threading.Thread(target=self._run, name="amqp-inbound", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("no AMQP consumer within %.1f s: %s" % (timeout, self._error))
        if self._error:
            raise RuntimeError(self._error)

    def _run(self):
        import pika

        try:
            self._conn = pika.BlockingConnection(pika.URLParameters(self.url))
            ch = self._chan = self._conn.channel()
            args = {"x-queue-type": "quorum"} if self.quorum else None
            ch.queue_declare(self.queue, durable=True, arguments=args)
            for key in self.bindings():
                ch.queue_bind(self.queue, "amq.topic", routing_key=key)
            ch.basic_qos(prefetch_count=self.prefetch)
            ch.basic_consume(self.queue, self._on_message)
        except Exception as e:  # noqa: BLE001 - reported by start()
            self._error = "%s: %s" % (type(e).__name__, e)
            self._ready.set()
            return
        self._ready.set()
        try:
            ch.start_consuming()
            # stopped consuming: acknowledgements of what the worker still handles go out
            while not self._closing:
                self._conn.process_data_events(time_limit=0.1)
            self._conn.close()
        except Exception as e:  # noqa: BLE001 - the connection died: unacked go to others
            self._error = "%s: %s" % (type(e).__name__, e)

    def _on_message(self, ch, method, props, body):
        self._put((routing_key(method.routing_key), body, time.monotonic(), method.delivery_tag))

    def ack(self, tags):
        """Acknowledges handled messages (called by the host's worker thread, in order)."""
        if not tags or self._conn is None:
            return
        last = max(tags)
        try:
            self._conn.add_callback_threadsafe(
                lambda: self._chan.basic_ack(last, multiple=True))
        except Exception:  # noqa: BLE001 - connection gone: the queue redelivers them
            pass

    def stop(self):
        """No more messages; acknowledgements still go out until close()."""
        if self._conn is None:
            return
        try:
            self._conn.add_callback_threadsafe(self._chan.stop_consuming)
        except Exception:  # noqa: BLE001 - already closed
            pass

    def close(self):
        """Closes the connection: anything not acknowledged goes to another worker."""
        self._closing = True
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self._conn = None
