# One terminal of the fleet simulator: the real device Agent (device/agent.py: till, clerk
# screens, the pending queue journal on files, coupon verifier, trust lists, uplink/downlink
# gates) built from a registered terminal's config, run without peripherals (run(io=False)) over
# the device's own asyncio MQTT client, many per event loop. Sales go through the clerk's keys and
# scans as a person would type them; the queue's listeners time each sale from its commit (on
# flash) to its result (on flash).
import asyncio
import collections
import time

from device.agent import Agent

SALE_KEYS_DONE = "CANCEL"  # on `committed` the next key goes back to idle (and is consumed)


class _Sink:
    """The agent's log: the last lines kept for a failure report, nothing printed."""

    def __init__(self, n=200):
        self.lines = collections.deque(maxlen=n)

    def write(self, text):
        self.lines.append(text)


class FleetTerminal:
    def __init__(self, cfg):
        self.device_id = cfg["device_id"]
        self.sink = _Sink()
        self.agent = Agent(cfg, log_out=self.sink)  # its one asyncio link: hundreds per loop
        self.committed = {}   # cid -> (monotonic commit time, amount, online at commit)
        self.results = {}     # cid -> (monotonic result time, status)
        self.double_results = 0  # a second resolution of one cid (must stay 0)
        self.refused = 0
        self.coupons_used = 0  # coupons the terminal accepted into committed sales
        self._task = None
        self.agent.queue.listen(on_commit=self._on_commit, on_resolve=self._on_resolve)

    def _on_commit(self, kind, rec):
        if kind.record == "sale":
            self.committed[rec["cid"]] = (time.monotonic(), rec["amt"], self.online)
            self.coupons_used += len(rec["cpn"])

    def _on_resolve(self, kind, rec, answer):
        if kind.record != "sale":
            return
        cid = rec["cid"]
        if cid in self.results:
            self.double_results += 1
        self.results[cid] = (time.monotonic(), answer.get("st"))

    @property
    def online(self):
        return self.agent.uplink.online

    def start(self):
        self._task = asyncio.get_event_loop().create_task(self.agent.run(io=False))

    async def stop(self):
        link = self.agent.link
        if link is not None:
            try:
                await asyncio.wait_for(link.close(), 5)
            except Exception:  # noqa: BLE001 - going away anyway
                pass
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except BaseException:  # noqa: BLE001 - cancelled
                pass
        self.agent.queue.log.close()

    def sell(self, amount, coupon=None):
        """Types a sale on the keypad (amount in minor units), scans a coupon if given, commits.
        Returns the cid committed, or None when the till refused (an offline limit)."""
        clerk = self.agent.clerk
        now = self.agent.clock.now()
        for d in str(amount):
            clerk.key(d, now)
        clerk.key("ENTER", now)
        if coupon is not None:
            clerk.scan(coupon, now)  # refused (used here before...) leaves the cart as it was
        before = len(self.committed)
        clerk.key("ENTER", now)
        screen = clerk.screen
        clerk.key(SALE_KEYS_DONE, now)
        if len(self.committed) == before:
            self.refused += 1
            if screen not in ("refused",):
                raise RuntimeError("%s: a sale ended on screen %r" % (self.device_id, screen))
            return None
        return list(self.committed)[-1]

    def pending(self):
        return self.agent.queue.count()
