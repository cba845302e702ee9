# Charges in batches on the wire (protocol/batch_messages.py; docs/protocol.md, "Charges in
# batches"): with many records due at once (a drain after an outage) the forwarder sends up to
# `size` charges in one `charges` message and takes their results in one `charge_results`, so
# the MQTT and envelope work of a message is shared by its charges. Only after the host
# answered this connection's hello with `caps`: a host that knows only SPEC 3.2 gets single
# `charge`s. Each record keeps its own retry and its own answer; nothing about exactly-once
# changes (the host decides each cid once, a result resolves one record).
from device.ports.clock import ticks_diff
from protocol import batch_messages, messages

CHARGE = "charge"
# After a connect the forwarder waits this long for the host's `caps` before it sends single
# charges (a SPEC-only host never answers): without it a reconnect in a drain would send the
# whole window one charge a message just before the grant comes.
CAPS_WAIT_MS = 500


class ChargeBatches:
    def __init__(self, most, metrics, log, on_grant=None):
        self.most = min(most, batch_messages.MAX_ITEMS)  # what the hello offers
        self.size = 1  # what the host granted on this connection (1: no batches)
        self.metrics = metrics
        self.log = log
        self.on_grant = on_grant  # fn(): the forwarder may go on
        self._asked = None  # ticks_ms of this connection's offer, None: nothing awaited

    def offer(self, hello_body):
        """Adds the offer to a hello (a key SPEC's hello does not have: ignored by others)."""
        if self.most >= batch_messages.MIN_ITEMS:
            hello_body["batch"] = self.most
        return hello_body

    def reset(self, now_ms):
        """A new connection: single charges until its host answers the hello."""
        self.size = 1
        self._asked = now_ms if self.most >= batch_messages.MIN_ITEMS else None

    def settled(self, now_ms):
        """False while this connection's `caps` may still come (CAPS_WAIT_MS after it)."""
        if self._asked is None:
            return True
        if ticks_diff(now_ms, self._asked) >= CAPS_WAIT_MS:
            self._asked = None
        return self._asked is None

    def on_caps(self, body, seq):
        self.size = max(1, min(self.most, body["batch"]))
        self._asked = None
        if self.on_grant is not None:
            self.on_grant()

    def group(self, due):
        """due: [(rid, mtype, body)] in commit order -> [(mtype, body, [rid, ...])], the
        charges among them in `charges` messages of up to `size`, the rest as they are."""
        out = []
        run = []
        size = self.size
        for rid, mtype, body in due:
            if mtype == CHARGE and size > 1:
                run.append((rid, body))
                if len(run) == size:
                    out.append(_charges(run))
                    run = []
                continue
            if run:
                out.append(_charges(run))
                run = []
            out.append((mtype, body, [rid]))
        if run:
            out.append(_charges(run))
        return out

    def results(self, answer):
        """The `charge_results` handler: answer(body, seq) for each item that is a
        `charge_result`; a bad item is dropped and counted alone."""
        def handle(body, seq):
            for i, item in enumerate(body["items"]):
                try:
                    messages.check("charge_result", item)
                except messages.MessageError as e:
                    self.metrics.inc("drop_bad_body")
                    self.log("bad charge_results item %d: %s" % (i, e))
                    continue
                answer(item, seq)
        return handle


def _charges(run):
    if len(run) == 1:
        rid, body = run[0]
        return (CHARGE, body, [rid])
    return ("charges", {"items": [body for _, body in run]}, [rid for rid, _ in run])
