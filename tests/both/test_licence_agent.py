# The service licence on a whole terminal (SPEC 8.5), on both runtimes: an Agent with the
# licence service installed, driven through its clerk screens, till, console, status facts and
# downlink gate. A restricted terminal refuses sales, member payments, top-ups, VIP, refunds and
# redemptions with a clear message and records nothing; forwarding, status, the console,
# licence loading and coupon checks on idle go on.
import json

from device import config
from device.agent import Agent
from device.console.commands import Commands
from device.console.lines import Console
from device.ports.storage import PosixFS
from device.screens import messages
from device.staff import pins
from protocol import envelope, topics
from protocol import messages as wire
from tests.both.test_licence import DAY, Clock, fx, raw, text
from tests.both.util import tmpdir

TECH = pins.hash_pin("2468", b"tech-salt-000001", 1000)
SECRET = b"\xab" * 32


class _Quiet:
    def write(self, text):
        pass


def agent(tag, clock):
    d = tmpdir(tag)
    cfg = config.parse({
        "device_id": fx()["device"], "store_id": "S-001", "merchant_id": "M-ACME",
        "currency": "CNY", "secret_hex": SECRET.hex(),
        "root_keys": [fx()["root_hex"], fx()["root_p256_hex"]], "data_dir": d + "/data",
        "pins": {"tech": TECH}})
    a = Agent(cfg, PosixFS(), clock)
    a.log_out = _Quiet()
    return a


class Host:
    """Seals downlinks for the terminal as the host would."""

    def __init__(self, a):
        self.a = a
        self.seq = 0

    def send(self, mtype, body):
        self.seq += 1
        data = envelope.seal(SECRET, fx()["device"], mtype, self.seq, fx()["now"], body,
                             bytes(16))
        self.a.downlink.receive(topics.down("pos/v1", fx()["device"], mtype), data)


def keys(a, now, *names):
    out = []
    for k in names:
        out = a.clerk.key(k, now)
    return out[-1] if out else None


def shown(a, now):
    """The frame the idle screen draws now."""
    return a.clerk.refresh(now)[-1]


def sell(a, now, amount="1234"):
    keys(a, now, "CLEAR")
    return keys(a, now, *(list(amount) + ["ENTER", "ENTER"]))


def console(a, now):
    cmds = Commands(a.view, None, clock=Clock(now), log_out=_Quiet())
    con = Console(cmds)

    def call(line):
        out = con.feed(line.encode() + b"\n")
        assert len(out) == 1, out
        return json.loads(out[0].decode())
    assert call("login 2468")["ok"]
    return call


def test_none_sells_and_reports_no_licence():
    now = fx()["now"]
    a = agent("lica-none", Clock(now))
    f = sell(a, now)
    assert f[1] == "committed", f
    assert a.status.heartbeat_body()["lic"] == {"st": "none", "exp": None, "days": None}
    call = console(a, now)
    rep = call("licence show")
    assert rep["ok"] and rep["st"] == "none" and rep["ver"] == 0 and rep["exp"] is None
    assert call("status")["lic"]["st"] == "none"


def test_licence_commands_are_in_help_and_show_refuses_an_argument():
    now = fx()["now"]
    a = agent("lica-help", Clock(now))
    call = console(a, now)
    listed = [c["command"] for c in call("help")["commands"]]
    assert "licence load" in listed and "licence show" in listed
    rep = call("licence show now")
    assert not rep["ok"] and rep["error"] == "bad_argument", rep


def test_restricted_refuses_every_selling_action_and_keeps_the_rest():
    now = fx()["now"]
    clock = Clock(now)
    a = agent("lica-restricted", clock)
    call = console(a, now)
    # A sale while the licence is fine, left unforwarded (the terminal is offline).
    rep = call("licence load " + text("grace_v3"))
    assert rep["ok"] and rep["ver"] == 3 and rep["st"] == "grace" and rep["days"] == 1, rep
    f = shown(a, now)
    assert f[1] == "idle" and f[2][-2:] == [messages.LICENCE_EXPIRED, "Sales stop in 1 day"], f
    assert sell(a, now)[1] == "committed"
    assert a.queue.count() == 1
    journal = PosixFS().size(a.data_dir + "/queue.log")
    keys(a, now, "CLEAR")

    clock.t = now + DAY  # exp + grace: restricted
    f = shown(a, clock.t)
    assert f[2][-2:] == [messages.LICENCE_STOPPED, messages.LICENCE_RENEW], f
    # A digit on idle says why at once: no amount typed for nothing.
    f = keys(a, clock.t, "CLEAR", "5")
    assert f[1] == "refused", f
    assert f[2] == [messages.SALE_REFUSED] + messages.LICENCE_REFUSED + [messages.NOT_SAVED], f
    assert keys(a, clock.t, "1")[1] == "idle"  # the next key goes back, consumed
    # Every selling action is refused at the till too, with nothing recorded.
    for kind in ("sale", "member", "topup", "vip"):
        member = {"mid": "M1", "tier": "gold"} if kind != "sale" else None
        extra = {"tier": "gold"} if kind == "vip" else None
        r = a.till.commit_sale(500, [], kind=kind, member=member, extra=extra)
        assert r == {"ok": False, "reason": messages.LICENCE_REFUSED}, (kind, r)
    for action in ("refund", "redeem"):
        assert a.till.refusal(action) == messages.LICENCE_REFUSED
    assert a.till.refusal("bookings") is None
    assert PosixFS().size(a.data_dir + "/queue.log") == journal and a.queue.count() == 1
    assert a.metrics.get("refused_licence") >= 7
    # Forwarding still hands out the queued sale; status, hello and the console still work.
    assert [r["cid"] for r in a.queue.due(0)] == [a.queue.pending[0]["cid"]]
    lic = {"st": "restricted", "exp": now - DAY, "days": 0}
    hb = a.status.heartbeat_body()
    hello = a.status.hello_body()
    assert hb["lic"] == lic and hello["lic"] == lic
    wire.check("status", hb)
    wire.check("hello", hello)
    call = console(a, clock.t)
    assert call("status")["lic"] == lic
    assert call("queue list")["ok"]
    # A coupon scanned on idle is still checked (and only checked).
    f = a.clerk.scan("PC1:NOTACOUPON", clock.t)[-1]
    assert f[1] == "coupon" and f[2][0] == messages.verdict_text("malformed"), f
    keys(a, clock.t, "CLEAR")

    # Renewal from the host: sales go through again at once.
    host = Host(a)
    host.send("licence", {"lic": raw("renewal_v5")})
    assert a.status.heartbeat_body()["lic"] == {"st": "ok", "exp": now + 365 * DAY,
                                                 "days": 364}
    assert shown(a, clock.t)[2][-1] == "queue: 1"  # no licence line while ok
    assert sell(a, clock.t)[1] == "committed" and a.queue.count() == 2
    assert a.metrics.get("licence_installed") == 2


def test_licences_from_the_host_older_or_foreign_are_refused_and_counted():
    now = fx()["now"]
    clock = Clock(now)
    a = agent("lica-host", clock)
    host = Host(a)
    host.send("licence", {"lic": raw("expiring_v2")})
    assert a.status.heartbeat_body()["lic"] == {"st": "expiring", "exp": now + 10 * DAY,
                                                 "days": 10}
    f = shown(a, now)
    assert f[2][-1] == "Licence: 10 days left", f
    host.send("licence", {"lic": raw("expiring_v2")})  # pushed again after every hello
    host.send("licence", {"lic": raw("ok_v1")})
    host.send("licence", {"lic": raw("other_device_v30")})
    host.send("licence", {"lic": raw("rogue_root_v30")})
    host.send("licence", {"lic": b"\x01"})
    host.send("licence", {"lic": "PL1:not bytes"})   # the schema drops it before the handler
    m = a.metrics
    assert m.get("licence_not_newer") == 2
    assert m.get("drop_licence_wrong_device") == 1 and m.get("drop_licence_unknown_root") == 1
    assert m.get("drop_licence_malformed") == 1 and m.get("drop_bad_body") == 1
    assert a.status.heartbeat_body()["lic"]["exp"] == now + 10 * DAY
    # The console gives the codes.
    call = console(a, now)
    for name, want in (("ok_v1", "rollback"), ("other_device_v30", "wrong_device"),
                       ("forged_root_kid_v30", "bad_signature"), ("bad_base45", "malformed")):
        rep = call("licence load " + text(name))
        assert rep["ok"] is False and rep["error"] == want, (name, rep)
    rep = call("licence load")
    assert rep["ok"] is False and rep["error"] == "bad_argument"
    # Reminders step up as the days run out.
    for days, lines in ((7, ["Licence: 7 days left", messages.LICENCE_RENEW_SOON]),
                        (1, ["Licence: 1 day left", messages.LICENCE_RENEW_NOW])):
        clock.t = now + (10 - days) * DAY
        f = shown(a, clock.t)
        assert f[2][-len(lines):] == lines, f


def test_the_licence_and_its_clock_survive_a_restart_with_the_clock_set_back():
    now = fx()["now"]
    clock = Clock(now)
    a = agent("lica-restart", clock)
    Host(a).send("licence", {"lic": raw("zero_grace_v10")})   # exp now - 1, no grace
    assert a.status.heartbeat_body()["lic"]["st"] == "restricted"
    a.flush()   # a stop on purpose
    a.queue.log.close()
    # The same data, the clock a day earlier: the licence would look fine by it.
    b = Agent(a.cfg, PosixFS(), Clock(now - DAY))
    b.log_out = _Quiet()
    assert b.status.hello_body()["lic"] == {"st": "restricted", "exp": now - 1, "days": 0}
    assert keys(b, now - DAY, "7")[1] == "refused"
    call = console(b, now - DAY)
    rep = call("licence show")
    assert rep["ok"] and rep["ver"] == 10 and rep["st"] == "restricted"
    assert rep["clock"] == now and rep["clock_behind"] == DAY


def test_restricted_still_shows_bookings_and_checks_coupons_at_the_console():
    # SPEC 8.5: restricted "never stops ... coupon checks or bookings display".
    now = fx()["now"]
    clock = Clock(now)
    a = agent("lica-keeps", clock)
    assert console(a, now)("licence load " + text("grace_v3"))["ok"]
    clock.t = now + DAY  # exp + grace: restricted
    assert a.status.heartbeat_body()["lic"]["st"] == "restricted"
    f = keys(a, clock.t, "CLEAR", "F2")
    assert f[1] == "bookings", f
    assert keys(a, clock.t, "CANCEL")[1] == "idle"
    rep = console(a, clock.t)("coupon check PC1:NOTACOUPON 500")
    assert rep["ok"] and rep["verdict"] == "malformed", rep
