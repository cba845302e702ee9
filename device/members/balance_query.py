# The member's balance on the `member` screen (SPEC 8.1): one `member_query` {qid, mid} sent
# when online, never queued; the `member_info` with the same qid (and mid) is the answer; none
# within WAIT_S seconds, or no link, and the balance is "offline". One question at a time: a new
# one, or leaving the screen, makes any late answer to the old one a stranger (counted).
from device import crypto

WAIT_S = 3

ASKING = "asking"
ANSWERED = "answered"
OFFLINE = "offline"


class BalanceQuery:
    def __init__(self, send, link_state, clock, metrics, random_bytes=crypto.random_bytes):
        """send(body, failed): publishes a member_query without waiting (calls failed(qid) when
        it could not); link_state.online: the uplink; clock.now_f(): the wait's clock."""
        self.send = send
        self.link_state = link_state
        self.clock = clock
        self.metrics = metrics
        self.random_bytes = random_bytes
        self.on_change = None  # fn(): an answer arrived (the screen redraws)
        self._q = None         # {"qid", "mid", "at", "info", "failed"}

    def ask(self, mid):
        self._q = {"qid": None, "mid": mid, "at": self.clock.now_f(), "info": None,
                   "failed": False}
        if not self.link_state.online:
            return
        qid = self.random_bytes(16)
        self._q["qid"] = qid
        self.metrics.inc("member_queries")
        self.send({"qid": qid, "mid": mid}, self._failed)

    def forget(self):
        self._q = None

    def _failed(self, qid):
        q = self._q
        if q is not None and q["qid"] == qid:
            q["failed"] = True
            self._changed()

    def on_info(self, body, seq=None):
        """A member_info downlink (schema checked): kept when it answers the open question."""
        q = self._q
        if q is None or q["qid"] is None or body["qid"] != q["qid"] or body["mid"] != q["mid"]:
            self.metrics.inc("member_info_unmatched")
            return
        q["info"] = body
        self._changed()

    def _changed(self):
        if self.on_change is not None:
            self.on_change()

    def state(self):
        """(ASKING | ANSWERED | OFFLINE, member_info body or None)."""
        q = self._q
        if q is None:
            return OFFLINE, None
        if q["info"] is not None:
            return ANSWERED, q["info"]
        if q["qid"] is None or q["failed"] or self.clock.now_f() - q["at"] >= WAIT_S:
            return OFFLINE, None
        return ASKING, None
