# The downlink gate (SPEC 3.1), no I/O: every inbound publish goes through topic -> envelope
# (MAC, device, type) -> seq above the highest accepted -> body schema, and only then to the
# handler a service registered for its type. Nothing a broker or an attacker sends can raise out
# of receive(): each refusal is counted in the metrics (drop_<code>) and logged.
#
# Replays: a handler's effect must not happen twice. Types registered durable=True have their
# seq written to flash before they act (config); the others make their effect idempotent on
# their own (results match a pending id, journal records carry the seq they came with, lists and
# bookings only install a higher version).
from protocol import envelope, messages, topics


class Downlink:
    def __init__(self, device_id, secret, root, counters, metrics, log):
        self.device_id = device_id
        self.secret = secret
        self.root = root
        self.counters = counters
        self.metrics = metrics
        self.log = log
        self.guard = envelope.SeqGuard({"host": counters.host_seq})
        self._handlers = {}   # mtype -> (fn(body, seq), durable)
        self._fleet = {}      # "trustlist" | "revocations" -> fn(payload)

    def on(self, mtype, fn, durable=False):
        """fn(body, seq) handles every authentic, fresh, well-formed `mtype` for this device."""
        if mtype not in messages.DOWN_TYPES:
            raise ValueError("%s is not a down message type" % mtype)
        self._handlers[mtype] = (fn, durable)

    def on_fleet(self, what, fn):
        self._fleet[what] = fn

    def restore_seq(self, seq):
        """A seq found with an effect already on flash (journal records carry theirs)."""
        high = self.guard.highest("host")
        if high is None or seq > high:
            self.guard.accept("host", seq)
            self.counters.accept_host_seq(seq, False)

    def receive(self, topic, payload):
        try:
            kind, dev, mtype = topics.parse(self.root, topic)
        except ValueError:
            self.metrics.inc("drop_bad_topic")
            return
        try:
            if kind == "fleet":
                fn = self._fleet.get(mtype)
                if fn is None:
                    self.metrics.inc("drop_unknown_type")
                else:
                    fn(payload)
            elif kind == "down" and dev == self.device_id:
                self._down(mtype, payload)
            else:
                self.metrics.inc("drop_wrong_topic")
        except Exception as e:  # the link must survive whatever a handler does
            self.metrics.inc("handler_errors")
            self.log("handler error on %s: %s %s" % (topic, type(e).__name__, e))

    def oversized(self, topic, size):
        """The link read and discarded a publish too big for this terminal."""
        self.metrics.inc("drop_oversized")
        # the line docs/operations.md shows (and tests/integration/test_oversized.py reads)
        self.log("oversized message on %s (%d bytes) dropped" % (topic, size))

    def _down(self, mtype, payload):
        try:
            msg = envelope.open_envelope(self.secret, payload, self.device_id, mtype)
            self.guard.check("host", msg["seq"])
        except envelope.EnvelopeError as e:
            self.metrics.inc("drop_" + e.code)
            return
        entry = self._handlers.get(mtype)
        if entry is not None:
            try:
                messages.check(mtype, msg["body"])
            except messages.MessageError as e:
                self.metrics.inc("drop_bad_body")
                self.log("bad %s body: %s" % (mtype, e))
                return
        seq = msg["seq"]
        # Authentic and fresh: the seq counts even for a type this firmware does not know.
        self.guard.accept("host", seq)
        self.counters.accept_host_seq(seq, entry is not None and entry[1])
        if entry is None:
            self.metrics.inc("drop_unknown_type")
            return
        self.metrics.inc("recv_" + mtype)
        entry[0](msg["body"], seq)
