"""Power cuts on a real terminal process (issue 4, acceptance): `-m device run` on each runtime,
`python -m host_sim serve` and a real mosquitto. Sales are typed on the keypad pty (amount,
ENTER, ENTER) and the process is SIGKILLed at random moments: right after the commit key (before,
during or after the fsync and the `committed` frame), while its charges are being forwarded and
answered (the host answers after a latency, so results are often in flight), or mid-typing.
Half the rounds run with the terminal's network cut (a relay, host_sim/netcut.py): those
sales exist only in the journal, so a commit that was not durable would be lost for good.
After each cut it boots again and selling goes on; at the end it drains.

Every sale whose `committed` frame was written must be at the host exactly once. Each sale has
its own amount, so a frame ("Paid 12.34 CNY") names one charge. A sale cut after its record was
durable but before its frame was written is legitimately charged (the clerk saw nothing): only
the sale being committed at a cut may be such an extra, so there is at most one per cut, and
their number is reported. The host never applies a cid twice (its table and its own log).
"""
import random
import re
import time

import pytest

from device.sales.escpos import format_amount
from host_sim.netcut import NetCut
from tests.support.shop import CUR

RUNS = {  # committed sales at least, cuts at least
    "cpython": (30, 12),
    "micropython": (15, 8),
}
HOST_LATENCY_S = 0.15  # results come back this late: cuts catch charges waiting for them


class PowerCuts:
    """Sales and cuts on one terminal: distinct amounts, and what the screen confirmed."""

    def __init__(self, terminal, relay, rng):
        self.t = terminal
        self.relay = relay
        self.rng = rng
        self.offline_rounds = 0
        self.next_amount = 1001
        self.confirmed = set()   # amounts whose committed frame was written
        self.at_cut = []         # per cut: the amount being committed then, or None
        self.never = set()       # amounts typed but never committed (cut before ENTER, ENTER)
        self.modes = {}

    def amount(self):
        a = self.next_amount
        self.next_amount += 13 + self.rng.randrange(7)
        return a

    def sell(self):
        a = self.amount()
        self.t.open_sale(a)
        f = self.t.commit()
        assert f["screen"] == "committed", f
        return a

    def cut_after(self, delay):
        time.sleep(delay)
        self.t.kill()

    def round(self):
        """Boot, a few whole sales, then one cut of a random kind. Half the rounds run with
        the network cut: their charges then live only in the journal until a later round."""
        if self.rng.random() < 0.5:
            self.relay.cut()
            self.offline_rounds += 1
        else:
            self.relay.restore()
        self.t.start()
        for _ in range(self.rng.randrange(4)):
            self.sell()
        mode = self.rng.choice(["commit", "commit", "commit", "forward", "typing"])
        self.modes[mode] = self.modes.get(mode, 0) + 1
        pending = None
        if mode == "commit":
            # Cut within 0..2 ms, 0..20 ms or 0..300 ms of the commit key: before, during or
            # after the append and fsync, the frame, the receipt and the first send.
            pending = self.amount()
            self.t.open_sale(pending)
            self.t.press("ENTER")
            self.cut_after(self.rng.choice([0.002, 0.02, 0.3]) * self.rng.random())
        elif mode == "forward":
            self.sell()
            self.cut_after(self.rng.random() * 0.6)
        else:
            # Digits typed, maybe the sale screen open: nothing may be recorded.
            a = self.amount()
            keys = list(str(a)) + (["ENTER"] if self.rng.random() < 0.5 else [])
            self.t.press("CLEAR", *keys)
            self.cut_after(self.rng.random() * 0.1)
            self.never.add(a)
        self.at_cut.append(pending)
        self.read_confirmed()

    def read_confirmed(self):
        shown = {f["lines"][0] for f in self.t.read_frames() if f["screen"] == "committed"}
        for a in range(1001, self.next_amount):
            if "Paid " + format_amount(a, CUR) in shown:
                self.confirmed.add(a)


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_every_confirmed_sale_reaches_the_host_once_across_power_cuts(shop, runtime):
    want_sales, want_cuts = RUNS[runtime]
    seed = random.randrange(1 << 30)
    shop.start_host("--latency", HOST_LATENCY_S)
    relay = NetCut(shop.broker.port)
    try:
        t = shop.terminal("T-P", runtime, port=relay.port, start=False)
        till = PowerCuts(t, relay, random.Random(seed))
        started = time.monotonic()
        while len(till.confirmed) < want_sales or len(till.at_cut) < want_cuts:
            till.round()
            assert len(till.at_cut) < 4 * want_cuts, "too few sales confirmed (seed %d)" % seed
        # The last boot, online, drains everything.
        relay.restore()
        t.start()
        t.wait_status(lambda s: s["online"] and s["queue"]["pending"] == 0, 60)
    finally:
        relay.close()
    elapsed = time.monotonic() - started

    rows = shop.charges("T-P")
    amounts = [amt for _, amt, _ in rows]
    per_amount = {a: amounts.count(a) for a in set(amounts)}
    context = "seed %d, confirmed %s, at cuts %s, host %s" % (
        seed, sorted(till.confirmed), till.at_cut, sorted(amounts))
    # Every confirmed sale exactly once.
    for a in till.confirmed:
        assert per_amount.get(a) == 1, (a, context)
    # Nothing else but a sale that was being committed at a cut; none twice.
    extras = set(per_amount) - till.confirmed
    assert extras <= set(a for a in till.at_cut if a is not None), context
    assert all(n == 1 for n in per_amount.values()), context
    assert not extras & till.never, context
    # The host applied each cid once: its table and its own log agree.
    fresh = shop.fresh_applies()
    assert sorted(fresh) == sorted(cid.hex() for cid, _, _ in rows), context
    assert all(n == 1 for n in fresh.values()), context
    rep = shop.report()
    assert rep["approved"]["count"] == len(rows)
    assert rep["approved"]["amount"] == {CUR: sum(amounts)}

    # How often a boot found charges still unresolved, and how often the host answered a resend.
    log = shop.host_log()
    boots_with_queue = len(re.findall(r" hello T-P .* queue=[1-9]", log))
    print("\npower cuts on %s: %d confirmed sales, %d cuts %s, %d extra charge(s) cut between "
          "the durable commit and the frame, %d charges at the host, %d rounds offline, %d "
          "boots with charges unresolved, %d resends answered again, %.0f s (seed %d)" % (
              runtime, len(till.confirmed), len(till.at_cut), till.modes, len(extras),
              len(rows), till.offline_rounds, boots_with_queue, log.count("(repeat)"), elapsed,
              seed))
