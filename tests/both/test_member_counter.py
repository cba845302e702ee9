# Members at the counter (SPEC 8.1) on both runtimes, through a whole Agent (real journal, till,
# clerk screens, downlink gate) driven by keys and scans: the `member` screen on idle with the
# balance query, the member attached on `sale` with the tier discount, F2 pay from balance (the
# app code pays once), F3 top-up, F4 VIP, the offline limits of balance payments (kept across a
# restart), receipts that wait for the host's balance, and a declined payment as a notice.
# Member codes are the public vectors of tests/fixtures/member_codes.json at their `now`.
import asyncio
import json

from device import config
from device.agent import Agent
from device.ports.clock import FixedClock
from device.ports.storage import PosixFS
from device.sales.sale import charge_body
from device.screens import messages
from device.trust import lists as trust
from protocol import envelope, topics
from protocol import messages as wire
from tests.both.util import tmpdir

FIXTURE = "tests/fixtures/member_codes.json"
_fx = []


def fx():
    if not _fx:
        with open(FIXTURE) as f:
            _fx.append(json.load(f))
    return _fx[0]


def token(name):
    for c in fx()["cases"]:
        if c["name"] == name:
            return c["token"]
    raise AssertionError(name)


CARD = "static_card_ok"             # M-0001, tier gold, epoch 1
CODE_A = "dynamic_ok"               # M-0001 app codes, three different ctis
CODE_B = "dynamic_es256_ok"
CODE_C = "dynamic_exp_now_plus_1_ok"
OTHER = "other_member_same_epoch_ok"  # M-0002
LOST = "lost_card_blocked"          # M-LOST epoch 2, blocked
SECRET = "ab" * 32


class Quiet:
    def write(self, text):
        pass


class FakeLink:
    """The MQTT link, connected: what the agent publishes is kept."""

    connected = True

    def __init__(self):
        self.sent = []

    async def publish(self, topic, payload, retain=False):
        self.sent.append((topic, payload))


class Till:
    """One terminal and the keys, scans and host messages of a test."""

    def __init__(self, tag=None, limits=None, d=None):
        self.d = d or tmpdir(tag)
        self.limits = limits or {}
        self.clock = FixedClock(fx()["now"], build_time=fx()["now"] - 86400)
        self.open()
        self.host_seq = 0
        self.printed = []

    def open(self):
        cfg = config.parse({
            "device_id": "T-0300", "store_id": "S-001", "merchant_id": "M-ACME",
            "currency": "CNY", "secret_hex": SECRET, "root_keys": [fx()["root_key"]],
            "data_dir": self.d + "/data", "limits": self.limits})
        self.agent = Agent(cfg, PosixFS(), self.clock, log_out=Quiet())
        t = self.agent.trust
        if not t.trust_ver:
            t.install_text(fx()["trustlist"], trust.TRUST)
            t.install_text(fx()["revocations"], trust.REVOCATIONS)
        self.clerk = self.agent.clerk
        return self

    def reopen(self):
        self.agent.queue.log.close()
        return self.open()

    def online(self):
        self.link = FakeLink()
        self.agent.uplink.link = self.link
        return self.link

    def _frame(self, actions):
        shows = []
        for a in actions:
            if a[0] == "print":
                self.printed.append(a[1])
            else:
                shows.append(a)
        return (shows[-1][1], shows[-1][2]) if shows else None

    def keys(self, *names):
        out = None
        for k in names:
            out = self._frame(self.clerk.key(k, self.clock.now()))
        return out

    def scan(self, name):
        return self._frame(self.clerk.scan(token(name), self.clock.now()))

    def tick(self, later=0):
        self.clock.t += later
        return self._frame(self.clerk.tick(self.clock.now()))

    def sale(self, amount):
        f = self.keys("CLEAR", *(list(str(amount)) + ["ENTER"]))
        assert f[0] == "sale", f
        return f

    def host(self, mtype, body):
        """A down message from the host through the agent's downlink gate."""
        self.host_seq += 1
        dev = self.agent.device_id
        data = envelope.seal(bytes.fromhex(SECRET), dev, mtype, self.host_seq,
                             self.clock.now(), body, bytes(16))
        self.agent.downlink.receive(topics.down(self.agent.uplink.root, dev, mtype), data)

    def config(self, **body):
        self.host("config", body)

    def last_record(self):
        rec = self.agent.queue.find(self.last_cid)[0]
        return rec

    def records(self):
        return self.agent.queue.count()

    def sent(self, mtype):
        """Bodies of the `mtype` messages published on the fake link."""
        out = []
        for topic, data in self.link.sent:
            if topic.endswith("/up/" + mtype):
                out.append(envelope.open_envelope(bytes.fromhex(SECRET), data,
                                                  self.agent.device_id, mtype)["body"])
        return out


def committed(t, f):
    assert f[0] == "committed", f
    cid = t.clerk._shown["cid"]
    t.last_cid = cid
    return t.agent.queue.find(cid)[0]


def assert_charge_ok(rec):
    """The record's charge body passes the wire schema (the host would take it)."""
    wire.check("charge", charge_body(rec))


# ---------------------------------------------------------------- the `member` screen on idle

def test_idle_scan_offline_shows_the_member_and_balance_offline_records_nothing():
    t = Till("mem-idle-off")
    before = PosixFS().read(t.d + "/data/queue.log")
    f = t.scan(CARD)
    assert f == ("member", ["Member M-0001", "Ada Lovelace", "Tier gold",
                            messages.BALANCE_OFFLINE, messages.HINT_MEMBER]), f
    assert t.records() == 0 and PosixFS().read(t.d + "/data/queue.log") == before
    # a digit starts a sale from there, another key goes back
    assert t.keys("5") == ("amount", ["Amount 0.05 CNY", messages.HINT_AMOUNT])
    t.keys("CANCEL")
    t.scan(CARD)
    assert t.keys("CLEAR")[0] == "idle"


def test_idle_scan_of_a_bad_code_shows_its_verdict():
    t = Till("mem-idle-bad")
    assert t.scan(LOST) == ("member", [messages.MEMBER_VERDICT_TEXT["blocked"], "Member M-LOST"])
    assert t.scan("forged_signature") == ("member", [
        messages.MEMBER_VERDICT_TEXT["bad_signature"]])
    assert t.scan("dynamic_expired")[1][0] == messages.MEMBER_VERDICT_TEXT["expired"]
    t.clock.build_time = t.clock.t + 1  # the clock is not trusted: an app code cannot be judged
    assert t.scan(CODE_A)[1][0] == messages.MEMBER_VERDICT_TEXT["clock_unset"]
    assert t.scan(CARD)[1][0] == "Member M-0001"  # a printed card needs no clock
    assert t.records() == 0


def _online_query():
    t = Till("mem-idle-on")
    t.online()

    async def scenario():
        f = t.scan(CARD)
        assert f[1][3] == messages.BALANCE_ASKING, f
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        [q] = t.sent("member_query")
        assert q["mid"] == "M-0001" and len(q["qid"]) == 16
        wire.check("member_query", q)
        # an answer to another question is a stranger
        t.host("member_info", {"qid": bytes(16), "mid": "M-0001", "bal": 1, "pts": 1,
                               "tier": "gold", "vip_exp": None, "st": "active"})
        assert t.tick() is None and t.agent.metrics.snapshot()["member_info_unmatched"] == 1
        t.host("member_info", {"qid": q["qid"], "mid": "M-0001", "bal": 50000, "pts": 37,
                               "tier": "platinum", "vip_exp": 1800000000, "st": "active",
                               "nm": "Ada Lovelace"})
        f = t.tick()
        # the code's tier (SPEC 8.1), then the host's where it differs
        assert f == ("member", ["Member M-0001", "Ada Lovelace", "Tier gold",
                                "Host tier platinum", "Balance 500.00 CNY", "Points 37",
                                "VIP until 2027-01-15",
                                messages.HINT_MEMBER]), f
        # a blocked account and an unknown member
        t.keys("CLEAR")
        t.scan(OTHER)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        q = t.sent("member_query")[-1]
        t.host("member_info", {"qid": q["qid"], "mid": "M-0002", "bal": 700, "pts": 0,
                               "tier": "gold", "vip_exp": None, "st": "blocked"})
        f = t.tick()
        assert f[1][2:6] == ["Tier gold", messages.MEMBER_BLOCKED, "Balance 7.00 CNY",
                             "Points 0"], f
        assert f[1][6] == messages.NO_VIP
        t.keys("CLEAR")
        t.scan(CARD)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        q = t.sent("member_query")[-1]
        t.host("member_info", {"qid": q["qid"], "mid": "M-0001", "bal": 0, "pts": 0,
                               "tier": "", "vip_exp": None, "st": "unknown"})
        assert t.tick()[1][2:4] == ["Tier gold", messages.MEMBER_UNKNOWN]
        assert t.records() == 0
    asyncio.run(scenario())


def test_idle_scan_online_asks_the_host_and_shows_its_answer():
    _online_query()


def test_no_answer_within_3_s_shows_balance_offline():
    t = Till("mem-idle-slow")
    t.online()

    async def scenario():
        assert t.scan(CARD)[1][3] == messages.BALANCE_ASKING
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert len(t.sent("member_query")) == 1
        assert t.tick(2) is None
        f = t.tick(1)
        assert f[1][3] == messages.BALANCE_OFFLINE, f
        # an answer that comes later is still shown: the host did answer
        q = t.sent("member_query")[0]
        t.host("member_info", {"qid": q["qid"], "mid": "M-0001", "bal": 5, "pts": 0,
                               "tier": "gold", "vip_exp": None, "st": "active"})
        assert t.clerk.refresh(t.clock.now())[0][2][3] == "Balance 0.05 CNY"
    asyncio.run(scenario())


# ---------------------------------------------------------------- the member on `sale`

def test_member_attached_on_sale_with_the_tier_discount_enter_pays_as_usual():
    t = Till("mem-sale")
    t.config(tier_disc={"gold": 10, "silver": 5})
    t.sale(10000)
    f = t.scan(CARD)
    assert f == ("sale", ["Total 90.00 CNY", "Member M-0001 gold", "Tier -10% -10.00",
                          messages.HINT_MEMBER_SALE, messages.HINT_SALE,
                          messages.MEMBER_ATTACHED]), f
    assert t.scan(OTHER)[1][-1] == messages.ONE_MEMBER
    assert t.scan(LOST)[1][-1] == messages.MEMBER_VERDICT_TEXT["blocked"]
    assert t.scan("mid_missing")[1][-1] == messages.MEMBER_VERDICT_TEXT["malformed"]
    rec = committed(t, t.keys("ENTER"))
    assert (rec["kind"], rec["gross"], rec["amt"], rec["mem"], rec["mdisc"], rec["off"]) == \
        ("sale", 10000, 9000, "M-0001", 1000, True)
    assert_charge_ok(rec)
    receipt = t.printed[-1]
    assert b"Member discount" in receipt and b"Ada Lovelace M-0001" in receipt


def test_f_keys_need_a_member_and_f2_needs_the_app_code():
    t = Till("mem-fkeys", limits={"offline_member_max": 5000, "offline_member_total": 8000})
    t.sale(3000)
    for k in ("F2", "F3", "F4"):
        assert t.keys(k)[1][-1] == messages.SCAN_MEMBER_FIRST
    t.scan(CARD)
    assert t.keys("F2")[1][-1] == messages.SCAN_APP_CODE
    assert t.scan(CODE_A)[1][-1] == messages.APP_CODE_ATTACHED
    t.scan(CARD)  # the printed card after the app code keeps the app code
    rec = committed(t, t.keys("F2"))
    assert (rec["kind"], rec["amt"], rec["mem"], rec["off"]) == ("member", 3000, "M-0001", True)
    assert rec["mcti"] == bytes.fromhex("0000000000004d05") and rec["mexp"] == fx()["now"] + 90
    assert_charge_ok(rec)
    assert b"Paid from member balance" in t.printed[-1]  # offline: printed at once
    # the app code paid: refused on the next sale, and after a restart
    t.sale(100)
    assert t.scan(CODE_A)[1][-1] == messages.APP_CODE_USED
    t.reopen()
    t.sale(100)
    assert t.scan(CODE_A)[1][-1] == messages.APP_CODE_USED
    # an app code that runs out between the scan and F2
    t.scan(CODE_C)
    t.clock.t += 1
    assert t.keys("F2")[1][-1] == messages.MEMBER_VERDICT_TEXT["expired"]
    assert t.records() == 1


def test_offline_balance_payments_within_the_limits_kept_across_a_restart():
    t = Till("mem-limits", limits={"offline_member_max": 5000, "offline_member_total": 8000})

    def pay(amount, code):
        t.sale(amount)
        t.scan(code)
        return t.keys("F2")

    f = pay(6000, CODE_A)
    assert f == ("refused", [messages.SALE_REFUSED, "over offline member max",
                             "over by 10.00 CNY", messages.NOT_SAVED]), f
    assert t.records() == 0
    rec_a = committed(t, pay(5000, CODE_A))
    f = pay(4000, CODE_B)
    assert f[1][1:3] == ["member offline total limit", "over by 10.00 CNY"], f
    m = t.agent.metrics.snapshot()
    assert m["refused_offline_member_max"] == 1 and m["refused_offline_member_total"] == 1
    # a power cut does not reset the member's offline total
    t.reopen()
    f = pay(4000, CODE_B)
    assert f[1][1:3] == ["member offline total limit", "over by 10.00 CNY"], f
    committed(t, pay(3000, CODE_B))
    assert t.records() == 2
    # another member has a total of its own; a sale paid otherwise is not limited by it
    t.sale(9000)
    t.scan(CARD)
    committed(t, t.keys("ENTER"))
    # the host answers the first payment: it no longer counts
    t.host("charge_result", {"cid": rec_a["cid"], "st": "approved", "auth": "A1", "cpn": [],
                             "bal": 1000, "pts": 50})
    t.reopen()
    committed(t, pay(5000, CODE_C))


def test_no_offline_balance_payments_without_limits():
    t = Till("mem-nolimits")
    t.sale(100)
    t.scan(CODE_A)
    f = t.keys("F2")
    assert f[1][1:3] == [messages.MEMBER_LIMIT_TEXT["offline_member_none"],
                         messages.MEMBER_LIMIT_NONE_DETAIL], f
    assert t.records() == 0
    t.online()  # online, the host decides
    t.sale(100)
    t.scan(CODE_A)
    committed(t, t.keys("F2"))


def test_online_payment_prints_its_receipt_with_the_balance_from_the_answer():
    t = Till("mem-receipt")
    t.online()
    t.sale(3000)
    t.scan(CODE_A)
    n = len(t.printed)
    f = t.keys("F2")
    assert f == ("committed", ["Balance pay 30.00 CNY", messages.WAITING_FOR_HOST]), f
    rec = committed(t, f)
    assert len(t.printed) == n and t.tick() is None
    t.host("charge_result", {"cid": rec["cid"], "st": "approved", "auth": "A7", "cpn": [],
                             "bal": 47000, "pts": 30})
    f = t.tick()
    assert f == ("committed", ["Balance pay 30.00 CNY", messages.APPROVED,
                               "Balance 470.00 CNY"]), f
    assert len(t.printed) == n + 1
    assert b"Balance" in t.printed[-1] and b"470.00 CNY" in t.printed[-1]
    assert b"Points" in t.printed[-1] and b"Sent to host" in t.printed[-1]
    # no answer: printed without the balance after 3 s
    t.keys("CLEAR")
    t.sale(1000)
    t.scan(CARD)
    f = t.keys("F3")
    assert f == ("committed", ["Top-up 10.00 CNY", messages.WAITING_FOR_HOST]), f
    assert t.tick(2) is None and len(t.printed) == n + 1
    f = t.tick(1)
    assert f == ("committed", ["Top-up 10.00 CNY", messages.HOST_SLOW]), f
    assert len(t.printed) == n + 2 and b"Member balance top-up" in t.printed[-1]
    assert b"Balance" not in t.printed[-1]


def test_declined_payment_prints_nothing_and_is_a_notice():
    t = Till("mem-declined")
    t.online()
    t.sale(90000)
    t.scan(CODE_A)
    rec = committed(t, t.keys("F2"))
    n = len(t.printed)
    t.host("charge_result", {"cid": rec["cid"], "st": "declined",
                             "code": "insufficient_balance", "cpn": []})
    f = t.tick()
    assert f[1][-3:] == ["Balance pay 900.00 CNY", "DECLINED: insufficient_balance",
                         messages.NO_RECEIPT], f
    assert len(t.printed) == n
    idle = t.keys("CLEAR")
    assert idle[0] == "idle"
    assert idle[1][:2] == ["DECLINED x1: 900.00",
                           "code insufficient_balance - see supervisor"[:32]]


def test_top_up_takes_the_typed_amount_whole():
    t = Till("mem-topup")
    t.config(tier_disc={"gold": 10})
    t.sale(20000)
    t.scan(CARD)
    rec = committed(t, t.keys("F3"))
    assert (rec["kind"], rec["gross"], rec["amt"], rec["mem"], rec["cpn"]) == \
        ("topup", 20000, 20000, "M-0001", [])
    assert "mdisc" not in rec and "mcti" not in rec
    assert_charge_ok(rec)
    assert b"Member balance top-up" in t.printed[-1]


def test_vip_sale_takes_the_tier_fee():
    t = Till("mem-vip")
    t.sale(1)
    t.scan(CARD)
    assert t.keys("F4")[1][-1] == messages.NO_VIP_TIERS
    t.config(vip_tiers=[{"name": "silver", "fee": 4900, "cycle": "month"},
                        {"name": "gold", "fee": 9900, "cycle": "year"}])
    f = t.keys("F4")
    assert f[1] == ["Total 0.01 CNY", "Member M-0001 gold", "1 silver 49.00/month",
                    "2 gold 99.00/year", messages.HINT_SALE, messages.vip_pick(2)], f
    assert t.keys("ENTER")[1][-1] == messages.vip_pick(2)
    assert t.keys("3")[1][-1] == messages.no_such_tier(3)
    assert t.keys("CLEAR")[1][-1] == messages.VIP_CANCELLED
    assert t.records() == 0
    t.keys("F4")
    rec = committed(t, t.keys("2"))
    assert (rec["kind"], rec["gross"], rec["amt"], rec["tier"], rec["mem"]) == \
        ("vip", 9900, 9900, "gold", "M-0001")
    assert_charge_ok(rec)
    assert b"VIP tier" in t.printed[-1]


# ---------------------------------------------------------------- times far ahead (SPEC 7)

FAR = (1 << 64) - 1  # the largest uint the schemas let through for vip_exp and vip.end


def test_a_vip_expiry_far_ahead_is_shown_never_a_crash():
    # member_info's vip_exp is any uint: gmtime raised on CPython (OverflowError) and killed
    # the MicroPython agent (segfault) past about 2^56 before the date was bounded.
    t = Till("mem-far-vip")
    t.online()

    async def scenario():
        t.scan(CARD)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        [q] = t.sent("member_query")
        t.host("member_info", {"qid": q["qid"], "mid": "M-0001", "bal": 1, "pts": 2,
                               "tier": "gold", "vip_exp": FAR, "st": "active"})
        f = t.tick()
        assert f[1][-2] == "VIP until 9999-12-31", f
    asyncio.run(scenario())


def test_a_vip_period_far_ahead_prints_its_receipt():
    t = Till("mem-far-period")
    t.online()
    t.config(vip_tiers=[{"name": "gold", "fee": 9900, "cycle": "year"}])
    t.sale(1)
    t.scan(CARD)
    t.keys("F4")
    rec = committed(t, t.keys("1"))
    n = len(t.printed)
    t.host("charge_result", {"cid": rec["cid"], "st": "approved", "cpn": [],
                             "vip": {"tier": "gold", "start": FAR, "end": FAR}})
    f = t.tick()
    assert f[1][-1] == "VIP until 9999-12-31", f
    assert len(t.printed) == n + 1 and b"9999-12-31 - 9999-12-31" in t.printed[-1]
