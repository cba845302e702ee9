"""The four offline limits on a real terminal process (issue 4, SPEC 4 and 5.1): small limits in
the device config, the network cut by a relay (host_sim/netcut.py), the host (host_sim.host.Host,
in this process so the test can withhold its answers and send `config`).

- each limit refuses the sale that would break it with the `refused` screen naming the limit and
  the amount (or count, or seconds) over it; a refused sale records nothing: no journal record,
  no receipt, no charge at the host;
- `offline_max_charge` applies only offline; the other three whatever the link state (a host
  that does not answer strands money just the same: docs/decisions.md);
- while sales are refused, forwarding goes on (the host receives the queued charges), the
  `status` heartbeat reaches the host and the console answers `status`;
- a host `config` raising a limit lets the next sale through; once the host answers, the queue
  drains and the host holds every committed sale once and no refused one.
"""
import json
import os
import time

import pytest

from device.screens import messages
from host_sim.host import Host
from host_sim.netcut import NetCut
from tests.support.shop import CUR
from tests.support.terminal import wait_until

LIMITS = {"offline_max_charge": 5000, "offline_max_total": 12000, "offline_max_count": 3,
          "offline_max_age_s": 3600}


class Rig:
    def __init__(self, shop, runtime):
        self.shop = shop
        self.relay = NetCut(shop.broker.port)
        # The host's log goes where `host_sim serve` would write it (Shop.fresh_applies).
        self._log = open(shop.dir / "host.log", "a", buffering=1)
        self.host = Host(shop.db, broker_port=shop.broker.port, client_id="host-" + shop.dir.name,
                         log=lambda line: self._log.write("%.3f %s\n" % (time.time(), line)))
        try:
            self.host.start()
            self.t = shop.terminal("T-L", runtime, port=self.relay.port, limits=dict(LIMITS),
                                   status_interval_s=1)
        except BaseException:
            self.close()
            raise
        self.journal = os.path.join(self.t.data_dir, "queue.log")

    def close(self):
        self.host.stop()
        self.relay.close()
        self._log.close()

    def footprint(self):
        """What a commit would leave: journal bytes, receipt bytes."""
        return os.path.getsize(self.journal), os.path.getsize(self.t.printer_path)

    def sell(self, amount, sent):
        self.t.open_sale(amount)
        f = self.t.commit()
        assert f["screen"] == "committed", f
        assert f["lines"][:2] == ["Paid %d.%02d %s" % (amount // 100, amount % 100, CUR),
                                  messages.SENT if sent else messages.QUEUED], f
        assert f["lines"][2].startswith("receipt "), f  # the number a refund quotes
        return f

    def refused(self, amount, limit, over):
        before = self.footprint()
        pending = self.t.status()["queue"]["pending"]
        self.t.open_sale(amount)
        f = self.t.commit()
        assert f["screen"] == "refused", f
        assert messages.LIMIT_TEXT[limit] in f["lines"] and messages.NOT_SAVED in f["lines"], f
        over_line = [x for x in f["lines"] if x.startswith("over by ")]
        assert len(over_line) == 1, f
        if over is not None:
            assert over_line == ["over by " + over], f
        # Nothing recorded: no journal record, no receipt, the queue as it was.
        assert self.footprint() == before
        assert self.t.status()["queue"]["pending"] == pending
        self.t.press("CLEAR")  # back to idle
        return f

    def config(self, **limits):
        """The host raises (or lowers) limits; returns once the terminal has them on flash."""
        self.host.send(self.t.device_id, "config", {"limits": limits})
        path = os.path.join(self.t.data_dir, "host_settings.json")

        def applied():
            try:
                with open(path) as f:
                    saved = json.load(f)["limits"]
            except (OSError, ValueError, KeyError):
                return False
            return all(saved.get(k) == v for k, v in limits.items())
        wait_until(applied, 10, self.t.tail)

    def heartbeat(self, pred):
        """Waits for a `status` heartbeat at the host that satisfies pred."""
        def seen():
            last = self.host.registry.device(self.t.device_id)["last_status"]
            return last is not None and pred(last)
        wait_until(seen, 10, self.t.tail)

    def host_amounts(self):
        return sorted(amt for _, amt, _ in self.shop.charges(self.t.device_id))


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_offline_limits_refuse_record_nothing_and_follow_the_host(shop, runtime):
    rig = Rig(shop, runtime)
    try:
        _limits(rig)
    finally:
        rig.close()


def _limits(rig):
    t = rig.t
    t.wait_status(lambda s: s["online"], 30)
    # Online, the per-charge limit does not apply.
    rig.sell(6000, sent=True)
    t.wait_status(lambda s: s["queue"]["pending"] == 0, 20)

    rig.relay.cut()
    t.wait_status(lambda s: not s["online"], 20)
    rig.refused(7000, "offline_max_charge", "20.00 " + CUR)
    rig.sell(5000, sent=False)
    rig.sell(4000, sent=False)
    rig.refused(4500, "offline_max_total", "15.00 " + CUR)    # 9000 + 4500 > 12000
    rig.sell(3000, sent=False)                            # 12000 in 3 charges: at both limits
    rig.refused(150, "offline_max_count", "1")
    st = t.status()
    assert st["online"] is False
    assert st["queue"]["pending"] == 3 and st["queue"]["amount"] == 12000

    # The link is back but the host withholds its answers: the charges are forwarded (the host
    # has them) and stay unresolved on the terminal, so the count and total limits still hold.
    rig.host.outage = True
    rig.relay.restore()
    t.wait_status(lambda s: s["online"], 30)
    wait_until(lambda: rig.host_amounts() == [3000, 4000, 5000, 6000], 30, t.tail)
    assert t.status()["queue"]["pending"] == 3
    rig.refused(150, "offline_max_count", "1")
    # The status heartbeat goes on too, with the stranded queue.
    rig.heartbeat(lambda s: s["queue"] == 3 and s["queue_amt"] == 12000)

    # Raising the count leaves the total in the way; raising that too lets the sale through.
    rig.config(offline_max_count=10)
    rig.refused(160, "offline_max_total", "1.60 " + CUR)
    rig.config(offline_max_total=100000)
    rig.sell(170, sent=True)

    # The age of the oldest unresolved charge.
    rig.config(offline_max_age_s=1)
    oldest = t.status()["queue"]["oldest_at"]
    wait_until(lambda: time.time() - oldest >= 3, 10)
    pressed = int(time.time())
    f = rig.refused(200, "offline_max_age_s", None)
    over = int([x for x in f["lines"] if x.startswith("over by ")][0].split()[2])
    assert pressed - oldest - 1 <= over <= int(time.time()) - oldest - 1, (f, oldest)
    assert f["lines"][-2] == "over by %d s" % over
    rig.config(offline_max_age_s=3600)
    rig.sell(210, sent=True)

    # A higher per-charge limit, sent while online, lets a larger sale through offline.
    rig.config(offline_max_charge=10000)
    rig.relay.cut()
    t.wait_status(lambda s: not s["online"], 20)
    rig.sell(7500, sent=False)
    assert t.status()["queue"]["pending"] == 6

    # The host answers again: everything drains, every committed sale once, no refused one.
    rig.host.outage = False
    rig.relay.restore()
    st = t.wait_status(lambda s: s["online"] and s["queue"]["pending"] == 0, 60)
    assert st["queue"] == {"pending": 0, "amount": 0, "oldest_at": None}
    rig.heartbeat(lambda s: s["queue"] == 0 and s["oldest_at"] is None)
    assert rig.host_amounts() == [170, 210, 3000, 4000, 5000, 6000, 7500]
    assert set(rig.shop.fresh_applies().values()) == {1}
    assert {k: v for k, v in st["metrics"].items() if k.startswith("refused_")} == {
        "refused_offline_max_charge": 1, "refused_offline_max_total": 2,
        "refused_offline_max_count": 2, "refused_offline_max_age_s": 1}
