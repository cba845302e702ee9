# Uplink: seals a body into the SPEC 3.1 envelope with the next persisted seq and publishes it on
# the device's up topic. The link is attached once it exists (the agent may start offline).
from device import crypto
from protocol import cbor, envelope, topics


class Uplink:
    def __init__(self, device_id, secret, root, counters, clock, metrics):
        self.device_id = device_id
        self.secret = secret
        self.root = root
        self.counters = counters
        self.clock = clock
        self.metrics = metrics
        self.link = None

    @property
    def online(self):
        return self.link is not None and self.link.connected

    def seal(self, mtype, body):
        return envelope.seal(self.secret, self.device_id, mtype, self.counters.next_seq(),
                             self.clock.now(), body, crypto.random_bytes(16))

    async def send(self, mtype, body, retain=False):
        """Publishes one message; returns on PUBACK, raises LinkError when it cannot."""
        await self.link.publish(topics.up(self.root, self.device_id, mtype),
                                self.seal(mtype, body), retain=retain)
        self.metrics.inc("sent_" + mtype)

    async def send_many(self, messages):
        """Publishes [(mtype, body), ...] together (link.publish_many), each sealed with its
        own seq in this order; returns [None or LinkError, ...] per message (None: the broker
        has it). Raises LinkError when the link is offline."""
        up = topics.up
        sealed = [(up(self.root, self.device_id, mtype), self.seal(mtype, body))
                  for mtype, body in messages]
        errors = await self.link.publish_many(sealed)
        for i, (mtype, _) in enumerate(messages):
            if errors[i] is None:
                self.metrics.inc("sent_" + mtype)
        return errors

    def state_topic(self):
        return topics.state(self.root, self.device_id)

    def state_payload(self, online):
        return cbor.dumps({"online": online, "at": self.clock.now()})
