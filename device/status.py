# What the terminal says about itself: the `hello` after every connect, the `status` heartbeat
# (SPEC 3.2) and the console's `status` (SPEC 6). Services add facts (the licence's "lic") that
# appear in all three.
from device import firmware
from device.ports import runtime
from device.ports.clock import ticks_diff, ticks_ms

HEARTBEAT_SPREAD = 0.1  # each heartbeat interval is +-10 %: see heartbeat_delay


def heartbeat_delay(interval_s, byte):
    """Seconds to the next heartbeat for a random byte (0-255): within +-HEARTBEAT_SPREAD of the
    interval, so terminals that came up together (a store's power back, a broker restart, a
    simulated fleet) spread their heartbeats instead of reaching the host at once every time."""
    return interval_s * (1 - HEARTBEAT_SPREAD + 2 * HEARTBEAT_SPREAD * byte / 256)


class Status:
    def __init__(self, shop, queue, counters, metrics, trust, link_state, damage):
        self.shop = shop
        self.queue = queue
        self.counters = counters
        self.metrics = metrics
        self.trust = trust
        self.link_state = link_state
        self.damage = damage
        self.started_ms = ticks_ms()
        self._facts = []

    def add(self, name, fn):
        """fn() -> the value of `name` in hello, the heartbeat and the console status."""
        self._facts.append((name, fn))

    def _extend(self, body):
        for name, fn in self._facts:
            body[name] = fn()
        return body

    def uptime(self):
        return ticks_diff(ticks_ms(), self.started_ms) // 1000

    def journal(self):
        """Records the queue could not read back: nonzero means a committed record may be lost
        (docs/formats.md); the selftest fails until a technician acknowledges it."""
        return {"bad_records": self.queue.bad_records,
                "skipped_bytes": self.queue.log.skipped_bytes,
                "damage_events": self.damage.total,
                "unacknowledged": self.damage.unacknowledged()}

    def hello_body(self):
        return self._extend({"fw": firmware.FW, "rt": runtime.NAME, "boot": self.counters.boot,
                             "queue": self.queue.count(), "trust_ver": self.trust.trust_ver,
                             "rev_ver": self.trust.rev_ver})

    def heartbeat_body(self):
        count, amount, oldest = self.queue.totals()
        return self._extend({"queue": self.queue.count(), "queue_amt": amount,
                             "oldest_at": oldest, "drops": self.metrics.drops(),
                             "uptime": self.uptime(),
                             "declined_unseen": len(self.queue.unacked),
                             "journal": self.journal()})

    def console_fields(self):
        count, amount, oldest = self.queue.totals()
        return self._extend({
            "provisioned": True, "device_id": self.shop["device_id"],
            "store_id": self.shop["store_id"], "fw": firmware.FW, "rt": runtime.NAME,
            "online": self.link_state.online,
            "queue": {"pending": count, "amount": amount, "oldest_at": oldest},
            "records": self.queue.count(),
            "trust_ver": self.trust.trust_ver, "rev_ver": self.trust.rev_ver,
            "declined_unseen": len(self.queue.unacked), "boot": self.counters.boot,
            "uptime": self.uptime(), "drops": self.metrics.drops(),
            "journal": self.journal(), "metrics": self.metrics.snapshot(),
            "link": self.link_facts(), "heap": heap()})

    def link_facts(self):
        """What the MQTT link says about itself (None before it exists)."""
        link = getattr(self.link_state, "link", None)
        if link is None:
            return None
        st = link.stats
        return {"connects": st.get("connects"), "drops": st.get("drops"),
                "connect_failures": st.get("connect_failures"),
                "last_error": getattr(link, "last_error", None)}


def heap():
    """The heap now (MicroPython: bytes in use and free after a collection), else None."""
    import gc
    if not hasattr(gc, "mem_free"):
        return None
    gc.collect()
    return {"alloc": gc.mem_alloc(), "free": gc.mem_free()}
