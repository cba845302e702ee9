# Delivery of the broker's messages in groups (docs/decisions.md, 2026-12-04 "Answers in
# groups"): the messages that arrive together (one read from the broker) all go through the
# downlink gate, the journal records they cause (answers, host redemptions) are written with
# ONE append and ONE sync, and only then may their PUBACKs leave. A drain's answers come in
# bursts (the host answers a batch at a time), so this is one fsync per burst instead of one
# per answer, and the link still never acknowledges a message whose effect is not on flash.
#
# The link delivers one message per on_message call and writes the PUBACKs of a read right
# after the last call; it has no "end of the read" hook yet (the interface asked of the link:
# `make_link(..., on_messages=fn)`, fn(list of (topic, payload)) called once per read before
# any of their PUBACKs is written). Until it has, attach() puts the grouping where the link's
# session turns a read into events: protocol/mqtt_session.py queues each PUBACK after its
# event and the link writes them only once every event was acted on, so whatever runs inside
# Session.receive() runs before those PUBACKs. on_message stays the path for anything else
# the link delivers (and for a link without a session: one message, one sync).


class GroupedDelivery:
    def __init__(self, receive, queue, metrics, log):
        self.receive = receive  # the downlink gate: receive(topic, payload), never raises
        self.queue = queue
        self.metrics = metrics
        self.log = log

    def one(self, topic, payload):
        """The link's on_message: one message, its effect durable before this returns."""
        self.many([(topic, payload)])

    def many(self, messages):
        """Every message through the gate, then one append + sync for what they recorded.
        A failed write applies none of the group (the host answers again when asked)."""
        q = self.queue
        q.begin_group()
        try:
            for topic, payload in messages:
                self.receive(topic, payload)
        finally:
            try:
                n = q.end_group()
            except Exception as e:  # a full or failing disk: counted, the link goes on
                self.metrics.inc("answers_not_recorded")
                self.log("answers not recorded (the host is asked again): %s" % (e,))
                n = 0
        if n:
            self.metrics.inc("answer_groups")      # one append + one sync each
            self.metrics.inc("answers_grouped", n)

    def attach(self, link):
        """Delivers each read's messages from inside the link's session as one group."""
        session = getattr(link, "session", None)
        if session is None or not hasattr(session, "receive"):
            return False
        inner = session.receive

        def receive(data, now):
            events = inner(data, now)
            messages = [(e[1], e[2]) for e in events if e[0] == "message"]
            if not messages:
                return events
            self.many(messages)
            return [e for e in events if e[0] != "message"]

        session.receive = receive
        return True
