"""Member cards end to end (SPEC 8.1, issue 9 and the counter side of issue 10) on both runtimes:
real mosquitto, the host in this process with its store services (tests/support/shop.py
Shop.run_host: outage and `config` at will), member accounts, cards and app codes made by
`python -m host_sim members` (Shop.members), a real terminal process driven through its keypad
and scanner ptys, its network behind a relay (host_sim/netcut.py).

At the counter, online:
- the balance is shown on idle (member_query -> member_info);
- F3 tops the balance up and the receipt prints the new balance from the charge_result;
- F2 pays from the balance with an app code; a payment the balance does not cover is declined
  `insufficient_balance` and shown as a declined charge (the notice);
- F4 then 1 sells VIP tier 1 of the host's `vip_tiers` (the members service approves it for a
  known member; the tier discount of `tier_disc` applies to an ordinary sale);
- a member payment sent twice (results withheld, then a power cut: the terminal sends it again
  after the restart) moves the balance once.
Offline and the loss report:
- balance payments only within offline_member_max / offline_member_total, refused with the
  reason, the member's total kept across a power cut;
- `members block` on a running, online terminal: the old card is refused within 2 s;
- `members reissue`: the new card (epoch + 1) and its app codes work at once.
"""
import json
import os
import subprocess
import sys
import time

import pytest

from device.screens import messages
from host_sim.netcut import NetCut
from tests.support.shop import BAD_SCAN, DAY, MERCHANT, SYNC
from tests.support.terminal import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MID = "M-0001"
BLOCK_WITHIN_S = 2.0


class Rig:
    def __init__(self, shop, runtime, limits=None):
        self.shop = shop
        self.relay = NetCut(shop.broker.port)
        try:
            shop.ks.create_issuer(MERCHANT, nbf=int(time.time()) - DAY)
            shop.publish()
            self.host = shop.run_host()
            [out] = shop.members("add", MID, "--name", "Ada Lovelace", "--tier", "gold",
                                 "--balance", "50000")
            self.card = out["card"]
            cfg = {"status_interval_s": 1}
            if limits:
                cfg["limits"] = limits
            self.t = shop.terminal("T-M", runtime, port=self.relay.port, **cfg)
            self.t.wait_status(lambda s: s["online"] and s["trust_ver"] == shop.ks.trust_ver,
                               30)
        except BaseException:
            self.relay.close()
            raise

    def close(self):
        self.relay.close()

    # -- host side ----------------------------------------------------------------------------
    def code(self):
        """A fresh app code of the member (the host issues and records it)."""
        return self.shop.members("code", MID, "--valid-s", "900")[0]["code"]

    def balance(self):
        return self.shop.members("show", MID)[0]["member"]["bal"]

    def config(self, **body):
        self.host.send(self.t.device_id, "config", body)
        path = os.path.join(self.t.data_dir, "host_settings.json")

        def applied():
            try:
                with open(path) as f:
                    saved = json.load(f)
            except (OSError, ValueError):
                return False
            return all(saved.get(k) == v for k, v in body.items())
        wait_until(applied, 10, self.t.tail)

    # -- the counter ----------------------------------------------------------------------------
    def frame_after(self, action, pred, timeout=10):
        mark = len(self.t.read_frames())
        action()
        return self.t.wait_frame(pred, timeout, mark)

    def to_idle(self):
        """Back to idle, and seen there (keypad and scanner are read in no fixed order: a key
        still on its way could land after a scan)."""
        frames = self.t.read_frames()
        if frames and frames[-1]["screen"] != "idle":
            self.frame_after(lambda: self.t.press("CANCEL"), lambda f: f["screen"] == "idle")

    def on_idle(self, token, pred):
        """Scans token on idle; the `member` frame that satisfies pred."""
        t = self.t
        self.to_idle()
        return self.frame_after(lambda: t.scanner.write(BAD_SCAN + token.encode() + b"\r\n"),
                                lambda f: f["screen"] == "member" and pred(f))

    def attach(self, amount, token, want=messages.MEMBER_ATTACHED):
        self.t.open_sale(amount)
        f = self.t.sale_check(token)
        assert f["lines"][-1] == want, f
        return f

    def key(self, name, pred, timeout=10):
        return self.frame_after(lambda: self.t.press(name), pred, timeout)

    def pay(self, amount, code, want_screen="committed"):
        self.attach(amount, code, messages.APP_CODE_ATTACHED)
        f = self.key("F2", lambda f: f["screen"] in ("committed", "refused"))
        assert f["screen"] == want_screen, f
        return f

    def printed(self):
        with open(self.t.printer_path, "rb") as f:
            return f.read()


def _final(f):
    """A `committed` frame once the host's answer (or its absence) is on it."""
    return f["screen"] == "committed" and any(
        line in (messages.APPROVED, messages.HOST_SLOW) or line.startswith("DECLINED:")
        for line in f["lines"])


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_member_at_the_counter_online(shop, runtime):
    rig = Rig(shop, runtime)
    try:
        _online(rig)
    finally:
        rig.close()


def _online(rig):
    t = rig.t
    # The balance on idle, from the host.
    f = rig.on_idle(rig.card, lambda f: any(x.startswith("Balance") or x ==
                                           messages.BALANCE_OFFLINE for x in f["lines"]))
    assert f["lines"][:5] == ["Member " + MID, "Ada Lovelace", "Tier gold",
                              "Balance 500.00 CNY", "Points 0"], f
    assert t.status()["queue"]["pending"] == 0

    # F3: a top-up of 100.00; the receipt waits for the new balance.
    rig.attach(10000, rig.card)
    f = rig.key("F3", _final)
    assert f["lines"] == ["Top-up 100.00 CNY", messages.APPROVED, "Balance 600.00 CNY"], f
    wait_until(lambda: b"600.00 CNY" in rig.printed(), 5, t.tail)
    assert b"Member balance top-up" in rig.printed()
    assert rig.balance() == 60000

    # F2: 30.00 from the balance with a fresh app code; the code pays once.
    code = rig.code()
    rig.pay(3000, code)
    f = t.wait_frame(_final, 10, len(t.frames) - 1)
    assert f["lines"] == ["Balance pay 30.00 CNY", messages.APPROVED, "Balance 570.00 CNY"], f
    assert rig.balance() == 57000
    t.open_sale(100)
    assert t.sale_check(code)["lines"][-1] == messages.APP_CODE_USED
    t.press("CANCEL")

    # The tier discount of the host's config on an ordinary sale, then F4 1: VIP tier 1 (the
    # host's VIP engine knows the tier: host_sim/vip.py decides the vip charge).
    out = subprocess.run([sys.executable, "-m", "host_sim", "vip", "--db", rig.shop.db, "tier",
                          "gold-club", "--fee", "9900", "--cycle", "month"], cwd=ROOT,
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rig.config(tier_disc={"gold": 10}, vip_tiers=[
        {"name": "gold-club", "fee": 9900, "cycle": "month"}])
    f = rig.attach(10000, rig.card)
    assert "Total 90.00 CNY" in f["lines"] and "Tier -10% -10.00" in f["lines"], f
    f = t.commit()
    assert f["lines"][:2] == ["Paid 90.00 CNY", messages.SENT], f
    rig.attach(1, rig.card)
    rig.key("F4", lambda f: f["lines"][-1] == messages.vip_pick(1))
    f = rig.key("1", lambda f: f["screen"] == "committed" and messages.APPROVED in f["lines"])
    assert f["lines"][0] == "VIP 99.00 CNY" and f["lines"][-1].startswith("VIP until "), f
    t.wait_status(lambda s: s["queue"]["pending"] == 0, 10)
    decided = [c[1:] for c in rig.shop.charges(t.device_id)]
    assert (9900, "approved") in decided, decided
    # The receipt waited for the host's answer: the tier and the period it paid.
    assert b"VIP tier" in rig.printed() and b"gold-club" in rig.printed()
    assert b"VIP period" in rig.printed()

    # Sent twice, moved once: the host decides but withholds its answer, the terminal loses
    # power, comes back and sends the charge again; the host answers the repeat with the
    # original decision. (The gold tier's 10 % applies to balance payments too: 20.00 -> 18.00.)
    rig.host.outage = True
    before = len(rig.shop.charges(t.device_id))
    rig.pay(2000, rig.code())
    f = t.wait_frame(_final, 10, len(t.frames) - 1)
    assert f["lines"] == ["Balance pay 18.00 CNY", messages.HOST_SLOW], f
    wait_until(lambda: len(rig.shop.charges(t.device_id)) == before + 1, 10, t.tail)
    t.kill()
    rig.host.outage = False
    t.start()
    t.wait_status(lambda s: s["online"] and s["queue"]["pending"] == 0, 30)
    repeats = [line for line in rig.shop.host_log().splitlines()
               if " amt=1800 " in line and "(repeat)" in line]
    assert repeats, rig.shop.host_log()[-3000:]
    assert set(rig.shop.fresh_applies().values()) == {1}
    assert rig.balance() == 57000 - 1800
    paid = [h for h in rig.shop.members("history", MID) if h["kind"] == "member"]
    assert [h["bal_delta"] for h in paid] == [-3000, -1800]

    # More than the balance holds: declined by the host, shown as a declined charge.
    rig.pay(100000, rig.code())
    f = t.wait_frame(_final, 10, len(t.frames) - 1)
    assert "DECLINED: insufficient_balance" in f["lines"], f
    assert messages.NO_RECEIPT in f["lines"]
    idle = rig.frame_after(lambda: t.press("CLEAR"), lambda f: f["screen"] == "idle")
    assert idle["lines"][:2] == ["DECLINED x1: 900.00",
                                 "code insufficient_balance - see supervisor"[:32]], idle
    assert rig.balance() == 55200
    assert t.status()["declined_unseen"] == 1


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_offline_limits_loss_report_and_replacement_card(shop, runtime):
    rig = Rig(shop, runtime, limits={"offline_member_max": 5000, "offline_member_total": 8000})
    try:
        _offline_and_loss(rig)
    finally:
        rig.close()


def _refused(rig, amount, code, lines):
    size = os.path.getsize(os.path.join(rig.t.data_dir, "queue.log"))
    f = rig.pay(amount, code, "refused")
    assert f["lines"] == [messages.SALE_REFUSED] + lines + [messages.NOT_SAVED], f
    assert os.path.getsize(os.path.join(rig.t.data_dir, "queue.log")) == size


def _offline_and_loss(rig):
    t = rig.t
    codes = [rig.code() for _ in range(3)]
    rig.relay.cut()
    t.wait_status(lambda s: not s["online"], 20)
    f = rig.on_idle(rig.card, lambda f: messages.BALANCE_OFFLINE in f["lines"])
    assert f["lines"][:3] == ["Member " + MID, "Ada Lovelace", "Tier gold"], f

    _refused(rig, 6000, codes[0], ["over offline member max", "over by 10.00 CNY"])
    f = rig.pay(5000, codes[0])
    assert f["lines"][:2] == ["Paid 50.00 CNY", messages.QUEUED], f
    _refused(rig, 4000, codes[1], ["member offline total limit", "over by 10.00 CNY"])
    # A power cut does not reset the member's offline total.
    t.kill()
    t.start()
    _refused(rig, 4000, codes[1], ["member offline total limit", "over by 10.00 CNY"])
    rig.pay(3000, codes[1])
    # A sale paid otherwise is not limited by it.
    rig.attach(9000, rig.card)
    assert t.commit()["lines"][:2] == ["Paid 90.00 CNY", messages.QUEUED]
    assert t.status()["queue"]["pending"] == 3

    rig.relay.restore()
    t.wait_status(lambda s: s["online"] and s["queue"]["pending"] == 0, 30)
    assert rig.balance() == 50000 - 8000

    # Loss report on a running terminal: the card is refused within 2 s.
    t.open_sale(100)
    mark = len(t.read_frames())
    feeder = _Feeder(t, rig.card)
    feeder.start()
    try:
        wait_until(lambda: any(f["lines"][-1] == messages.MEMBER_ATTACHED
                               for f in t.read_frames()[mark:]), 10, t.tail)
        since = time.time()
        rig.shop.members("block", MID)
        blocked = t.wait_frame(lambda f: f["at"] >= since and f["lines"][-1] ==
                               messages.MEMBER_VERDICT_TEXT["blocked"], 10, mark)
    finally:
        feeder.stop()
    delay = blocked["at"] - since
    print("\nloss report on %s: old card refused %.0f ms after `members block` started"
          % (t.runtime, delay * 1000))
    assert delay < BLOCK_WITHIN_S, delay
    f = rig.on_idle(rig.card, lambda f: True)
    assert f["lines"] == [messages.MEMBER_VERDICT_TEXT["blocked"], "Member " + MID], f
    t.open_sale(100)
    assert t.sale_check(codes[2])["lines"][-1] == messages.MEMBER_VERDICT_TEXT["blocked"]
    t.press("CANCEL")

    # The replacement card (epoch 2) and its app codes work at once.
    [out] = rig.shop.members("reissue", MID)
    assert out["member"]["ep"] == 2
    f = rig.on_idle(out["card"], lambda f: any(x.startswith("Balance") for x in f["lines"]))
    assert "Balance 420.00 CNY" in f["lines"], f
    rig.pay(1500, rig.code())
    f = t.wait_frame(_final, 10, len(t.frames) - 1)
    assert f["lines"] == ["Balance pay 15.00 CNY", messages.APPROVED, "Balance 405.00 CNY"], f


class _Feeder:
    """Scans token on the open sale every 30 ms, alternating with an unreadable code so that
    each check draws a frame; stop() scans SYNC and waits for its answer."""

    def __init__(self, terminal, token):
        import threading

        self.t = terminal
        self.token = token.encode() + b"\r\n"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.t.scanner.write(self.token)
            self._stop.wait(0.015)
            self.t.scanner.write(BAD_SCAN)
            self._stop.wait(0.015)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        mark = len(self.t.read_frames())
        self.t.scan(SYNC)
        self.t.wait_frame(lambda f: f["screen"] == "sale" and f["lines"][-1] ==
                          messages.VERDICT_TEXT["malformed"], 10, mark)
