# Delivery of the broker's messages in groups (docs/decisions.md, 2026-12-04 "Answers in
# groups"): the messages that arrive together (one read from the broker) all go through the
# downlink gate, the journal records they cause (answers, host redemptions) are written with
# ONE append and ONE sync, and only then may their PUBACKs leave. A drain's answers come in
# bursts (the host answers a batch at a time), so this is one fsync per burst instead of one
# per answer, and the link still never acknowledges a message whose effect is not on flash.
#
# The link hands over each read's messages together (make_link(..., on_messages=many)), before
# any of their PUBACKs is written; one() is the one-message form for a caller without it.


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
