# The technician console (SPEC 6) on both runtimes: provisioning (also cut mid-write), login and
# the lockout (also across a restart), list loading (rollback and rogue lists refused), coupon
# checks, the queue, selftest, config, log, reboot, factory reset, and malformed input.
import json

from device import config
from device.agent import Agent
from device.console import commands as technician
from device.console.commands import EXIT_REBOOT, Commands
from device.console.coupon_args import split_total
from device.console.factory_reset import finish_factory_reset
from device.console.lines import MAX_LINE, Console
from device.ports.clock import FixedClock
from device.ports.storage import PosixFS
from device.sales.sale import make_sale
from device.staff import pins
from tests.both.util import tmpdir

NOW = 1795400000
TECH = pins.hash_pin("2468", b"tech-salt-000001", 1000)

_fx = []


def fx():
    if not _fx:
        with open("tests/both/fixtures/coupon_cases.json") as f:
            _fx.append(json.load(f))
    return _fx[0]


class Quiet:
    def write(self, text):
        pass


class Clock(FixedClock):
    def __init__(self, t=NOW):
        FixedClock.__init__(self, t, build_time=1700000000)


def cfg_obj(d, **kw):
    obj = {"device_id": "T-0100", "store_id": fx()["store"], "merchant_id": "M-ACME",
           "currency": fx()["currency"], "secret_hex": "ab" * 32,
           "root_keys": [fx()["root_pub_hex"]], "data_dir": d + "/data",
           "pins": {"tech": TECH}}
    obj.update(kw)
    return obj


def new_agent(cfg, clock, fs=None):
    return Agent(cfg, fs or PosixFS(), clock, log_out=Quiet())


class Rig:
    """A console on a provisioned terminal: its config file, data dir and a settable clock."""

    def __init__(self, tag, clock=None, d=None, **kw):
        self.d = d or tmpdir(tag)
        self.path = self.d + "/device.json"
        self.clock = clock or Clock()
        if not PosixFS().exists(self.path):
            PosixFS().write_atomic(self.path, json.dumps(cfg_obj(self.d, **kw)).encode())
        self.agent = new_agent(config.load(self.path), self.clock)
        self.cmds = Commands(self.agent.view, self.path, clock=self.clock, log_out=Quiet())
        self.con = Console(self.cmds)

    def raw(self, data):
        return [json.loads(line.decode()) for line in self.con.feed(data)]

    def __call__(self, line):
        out = self.raw(line.encode() + b"\n")
        assert len(out) == 1, out
        return out[0]

    def login(self):
        rep = self("login 2468")
        assert rep["ok"], rep
        return rep


def err(rep, code):
    assert rep["ok"] is False and rep["error"] == code, rep
    assert type(rep["message"]) is str and rep["message"]
    return rep


# -- unprovisioned and provisioning --------------------------------------------------------------
def unprovisioned(tag, fs=None):
    d = tmpdir(tag)
    path = d + "/device.json"
    clock = Clock()
    started = []

    def start(cfg):
        a = new_agent(cfg, clock, fs)
        started.append(a)
        return a

    cmds = Commands(None, path, fs=fs or PosixFS(), clock=clock,
                    console_cfg={"driver": "serial", "port": "/dev/ttyS9"},
                    on_provisioned=start, log_out=Quiet())
    con = Console(cmds)

    def call(line):
        out = con.feed(line.encode() + b"\n")
        assert len(out) == 1, out
        return json.loads(out[0].decode())
    return d, path, cmds, call, started


def test_unprovisioned_offers_only_status_and_provision():
    d, path, cmds, call, _ = unprovisioned("con-unprov")
    st = call("status")
    assert st["ok"] and st["provisioned"] is False and st["device_id"] is None
    assert st["queue"] == {"pending": 0, "amount": 0, "oldest_at": None} and st["rt"]
    for line in ("login 2468", "queue list", "trust load PT1:", "selftest", "reboot",
                 "factory-reset", "config get", "log tail 3", "coupon check PC1:X"):
        err(call(line), "not_provisioned")
    err(call("frobnicate"), "unknown_command")
    assert not PosixFS().exists(path)


def test_unprovisioned_status_carries_lic_none():
    # SPEC 8.5: `status` (console and heartbeat) carries `lic`; an unprovisioned terminal was
    # never licensed.
    st = unprovisioned("con-unprov-lic")[3]("status")
    assert st["ok"] and st["lic"] == {"st": "none", "exp": None, "days": None}, st


def test_provision_checks_then_writes_and_starts_the_agent():
    d, path, cmds, call, started = unprovisioned("con-prov")
    err(call("provision"), "bad_json")
    err(call("provision {nope"), "bad_json")
    assert err(call("provision [1]"), "bad_config")["key"] == "config"
    bad = cfg_obj(d, currency="cny")
    assert err(call("provision " + json.dumps(bad)), "bad_config")["key"] == "currency"
    no_tech = cfg_obj(d, pins={})
    assert err(call("provision " + json.dumps(no_tech)), "bad_config")["key"] == "pins.tech"
    assert not PosixFS().exists(path) and not started
    rep = call("provision " + json.dumps(cfg_obj(d)))
    assert rep["ok"] and rep["device_id"] == "T-0100" and rep["reboot_needed"] is False
    saved = config.load(path)
    assert saved["device_id"] == "T-0100"
    # The console the terminal was provisioned on stays its console.
    assert saved["console"] == {"driver": "serial", "port": "/dev/ttyS9"}
    assert len(started) == 1 and cmds.started is started[0]
    # Now provisioned: status tells so, the rest wants a login, provision too.
    assert call("status")["provisioned"] is True
    err(call("queue list"), "login_required")
    err(call("provision " + json.dumps(cfg_obj(d))), "login_required")
    assert call("login 2468")["ok"]
    assert call("queue list")["ok"]


def test_reprovision_needs_login_and_refuses_to_strand_pending_charges():
    r = Rig("con-reprov")
    other = cfg_obj(r.d, device_id="T-0101")
    err(r("provision " + json.dumps(other)), "login_required")
    r.login()
    r.agent.queue.commit(make_sale(b"\x01" * 16, 1, 500, [], "CNY", NOW, True, "clerk"))
    rep = err(r("provision " + json.dumps(other)), "pending_charges")
    assert rep["pending"] == 1 and config.load(r.path)["device_id"] == "T-0100"
    # Same identity, other settings: fine, and it applies at the next boot.
    same = cfg_obj(r.d, limits={"offline_max_charge": 100})
    rep = r("provision " + json.dumps(same))
    assert rep["ok"] and rep["reboot_needed"] is True
    assert config.load(r.path)["limits"]["offline_max_charge"] == 100


class CrashFS(PosixFS):
    """PosixFS with a power cut inside write_atomic: after `keep` bytes of the temp file
    (torn), or after the whole temp file but before the rename."""

    def __init__(self, keep=None):
        self.keep = keep
        self.armed = False

    def write_atomic(self, path, data):
        if not self.armed:
            return PosixFS.write_atomic(self, path, data)
        self.armed = False
        with open(path + ".tmp", "wb") as f:
            f.write(data if self.keep is None else data[:self.keep])
        raise OSError(5, "power cut")


def test_provisioning_is_atomic_when_cut_mid_write():
    for keep in (0, 1, 57, None):
        fs = CrashFS(keep)
        d, path, cmds, call, started = unprovisioned("con-atomic", fs)
        fs.armed = True
        err(call("provision " + json.dumps(cfg_obj(d))), "storage")
        # Cut before the rename: no config (still unprovisioned), never a broken one.
        assert not fs.exists(path) and cmds.started is None and not started
        assert call("status")["provisioned"] is False
        assert call("provision " + json.dumps(cfg_obj(d)))["ok"]
        old = config.load(path)
        # Re-provisioning cut mid-write leaves the old config whole.
        call("login 2468")
        fs.armed = True
        new = cfg_obj(d, limits={"offline_max_charge": 7})
        err(call("provision " + json.dumps(new)), "storage")
        assert config.load(path) == old
        assert call("provision " + json.dumps(new))["ok"]
        assert config.load(path)["limits"]["offline_max_charge"] == 7


# -- login and the lockout -----------------------------------------------------------------------
def test_login_lockout_survives_a_restart():
    r = Rig("con-lock")
    for left in (4, 3, 2, 1):
        assert err(r("login 0000"), "wrong_pin")["attempts_left"] == left
    rep = err(r("login 0000"), "wrong_pin")
    assert rep["locked_for"] == 300 and rep["attempts_left"] == 0
    assert err(r("login 2468"), "locked")["retry_in"] == 300
    err(r("queue list"), "login_required")
    assert r("status")["locked_for"] == 300  # status stays open
    # Restart: a new agent and console on the same data.
    r.clock.t += 60
    r2 = Rig("con-lock", clock=r.clock, d=r.d)
    assert err(r2("login 2468"), "locked")["retry_in"] == 240
    r2.clock.t += 240
    assert r2.login()["role"] == "tech"
    assert r2("queue list")["ok"]


def test_session_times_out_and_logout_ends_it():
    r = Rig("con-session")
    err(r("login"), "bad_argument")
    r.login()
    assert r("status")["session"] is True
    r.clock.t += 599
    assert r("queue list")["ok"]  # activity renews the session
    r.clock.t += 599
    assert r("queue list")["ok"]
    r.clock.t += 600
    err(r("queue list"), "login_required")
    r.login()
    assert r("logout")["ok"]
    err(r("selftest"), "login_required")
    # A failed login ends a session too.
    r.login()
    err(r("login 1"), "wrong_pin")
    err(r("selftest"), "login_required")


def test_every_command_but_status_and_login_needs_a_login():
    # SPEC 6: "Every command but `status` and `login` needs a technician login once
    # provisioned" (`help` and the services' commands included).
    r = Rig("con-needs-login")
    for line in ("help", "logout", "queue list", "selftest", "trust load PT1:X",
                 "revocations load PR1:X", "coupon check PC1:X", "journal show",
                 "config get", "log tail", "licence show", "licence load PL1:X",
                 "provision {}", "reboot", "factory-reset"):
        err(r(line), "login_required")
    assert r("status")["ok"]
    r.login()
    assert r("help")["ok"] and r("licence show")["ok"]


def test_no_tech_pin_configured():
    r = Rig("con-nopin", pins={})
    err(r("login 2468"), "no_pin")
    err(r("queue list"), "login_required")


# -- lists and coupons ---------------------------------------------------------------------------
def test_trust_and_revocation_lists_rollback_and_rogue_refused():
    r = Rig("con-lists")
    t = fx()["trust"]
    err(r("trust load " + t["tl_v1"]), "login_required")
    r.login()
    assert r("trust load " + t["tl_v2"]) == {"ok": True, "ver": 2, "keys": 2}
    err(r("trust load " + t["tl_v1"]), "rollback")
    err(r("trust load " + t["tl_v2"]), "rollback")
    err(r("trust load " + t["tl_rogue"]), "unknown_root")
    err(r("trust load " + t["tl_forged_root_kid"]), "bad_signature")
    err(r("trust load " + t["rl_v1"]), "wrong_kind")
    err(r("trust load PT1:not base45!"), "malformed")
    err(r("trust load"), "bad_argument")
    rep = r("revocations load " + t["rl_v1"])
    assert rep["ok"] and rep["ver"] == 1 and rep["revoked"] > 0
    err(r("revocations load " + t["rl_v1_other"]), "rollback")
    err(r("revocations load " + t["rl_rogue"]), "unknown_root")
    err(r("revocations load " + t["tl_v2"]), "wrong_kind")
    st = r("status")
    assert (st["trust_ver"], st["rev_ver"]) == (2, 1)
    # Installed for good: a restart loads them again.
    r2 = Rig("con-lists", d=r.d)
    assert (r2.agent.trust.trust_ver, r2.agent.trust.rev_ver) == (2, 1)


def _case(name):
    for c in fx()["cases"]:
        if c["name"] == name:
            return c
    raise KeyError(name)


def test_coupon_check_gives_the_stateful_verdict():
    r = Rig("con-coupon", clock=Clock(fx()["now"]))
    r.login()
    assert r("trust load " + fx()["trustlist"])["ok"]
    assert r("revocations load " + fx()["revocations"])["ok"]
    n = 0
    for c in fx()["cases"]:
        if c["uses"] not in (None, 0) or not c["clock_trusted"] or "stateless" in c["name"]:
            continue
        if "\n" in c["token"] or "\r" in c["token"]:
            continue  # one console line cannot carry a line end
        rep = r("coupon check %s %d" % (c["token"], c["total"]))
        assert rep["ok"] and rep["verdict"] == c["verdict"], (c["name"], rep)
        if c["verdict"] != "malformed":  # a broken token is all token (see split_total)
            assert rep["total"] == c["total"], (c["name"], rep)
        if c["verdict"] == "ok":
            assert rep["discount"] == c["discount"] and len(rep["cti"]) >= 2
        n += 1
    assert n > 40
    # Checked only: nothing was redeemed.
    assert len(r.agent.queue.ledger) == 0 and r.agent.queue.pending == []
    # Redeemed at another terminal: the console sees it (stateful).
    ok = _case("stateful_ok")
    cti = bytes.fromhex(r("coupon check %s 10000" % ok["token"])["cti"])
    r.agent.queue.add_redeemed([cti], fx()["now"])
    assert r("coupon check %s 10000" % ok["token"])["verdict"] == "already_redeemed"
    # Without TOTAL there is no cart (as on the clerk's idle screen): no discount, no min spend.
    rep = r("coupon check " + _case("ed_pct_ok")["token"])
    assert rep["verdict"] == "ok" and rep["total"] is None and rep["discount"] is None
    assert r("coupon check " + _case("below_min_spend")["token"])["verdict"] == "ok"
    assert r("coupon check %s 2999" % _case("below_min_spend")["token"])["verdict"] == \
        "below_min_spend"
    assert r("coupon check PC1:nonsense 100")["verdict"] == "malformed"
    assert r("coupon check hello")["verdict"] == "malformed"
    err(r("coupon check"), "bad_argument")


def test_clock_untrusted_coupon_check_says_clock_unset():
    r = Rig("con-coupon-clock", clock=FixedClock(fx()["now"], build_time=fx()["now"] + 1))
    r.login()
    r("trust load " + fx()["trustlist"])
    rep = r("coupon check %s 10000" % _case("ed_pct_ok")["token"])
    assert rep["verdict"] == "clock_unset" and rep["clock_trusted"] is False


def test_total_split_respects_spaces_in_tokens():
    tok = _case("ed_pct_ok")["token"]
    assert " " in tok
    assert split_total(tok + " 250") == (tok, 250)
    assert split_total(tok) == (tok, None)
    # A token whose last base45 word is all digits is not cut.
    cut = tok.rfind(" ")
    assert split_total(tok[:cut] + " 123") == (tok[:cut] + " 123", None)
    assert split_total("PC1:AB 12") == ("PC1:AB 12", None)
    assert split_total(tok + " 1234567890123") == (tok + " 1234567890123", None)


# -- queue, selftest, config, log ----------------------------------------------------------------
def test_queue_list_shows_pending_and_declined():
    r = Rig("con-queue")
    q = r.agent.queue
    for i in (1, 2, 3):
        q.commit(make_sale(bytes([i]) * 16, q.take_receipt_no(), 100 * i, [], "CNY", NOW + i,
                           True, "clerk-ab12"))
    q.on_result({"cid": b"\x02" * 16, "st": "declined", "code": "limit", "cpn": []}, NOW + 9)
    q.on_result({"cid": b"\x03" * 16, "st": "approved", "cpn": []}, NOW + 9)
    r.login()
    rep = r("queue list")
    assert rep["pending_count"] == 1 and rep["pending_amount"] == 100
    assert rep["pending"][0]["cid"] == "01" * 16 and rep["pending"][0]["clerk"] == "clerk-ab12"
    assert rep["oldest_at"] == NOW + 1 and rep["declined_unseen"] == 1
    assert len(rep["declined"]) == 1
    dec = rep["declined"][0]
    assert (dec["cid"], dec["amt"], dec["code"], dec["acked"]) == ("02" * 16, 200, "limit", False)
    q.acknowledge(b"\x02" * 16, "supervisor", NOW + 10)
    rep = r("queue list")
    assert rep["declined"][0]["acked"] is True and rep["declined_unseen"] == 0


def test_selftest_reports_storage_clock_and_lists():
    r = Rig("con-selftest")
    r.login()
    rep = r("selftest")
    assert rep["ok"] and rep["passed"] is True and rep["failures"] == []
    assert rep["storage"] == {"writable": True, "error": None}
    assert rep["clock"]["trusted"] is True and rep["link"] == {"connected": False}
    assert "link" in rep["warnings"] and "trustlist" in rep["warnings"]
    assert rep["drivers"]["scanner"] == {"configured": False}
    assert not PosixFS().exists(r.agent.data_dir + "/selftest.tmp")
    r.clock.build_time = NOW + 1
    rep = r("selftest")
    assert rep["passed"] is False and rep["failures"] == ["clock"]


def test_config_get_hides_secrets_and_set_is_checked_and_atomic():
    r = Rig("con-config", broker={"password": "hunter2"})
    r.login()
    whole = r("config get")["value"]
    assert whole["secret_hex"] == "<set>" and whole["pins"] == {"tech": "<set>"}
    assert whole["broker"]["password"] == "<set>"
    assert "hunter2" not in json.dumps(r("config get broker")) and "ab" * 32 not in json.dumps(
        whole)
    assert r("config get broker.port")["value"] == 1883
    err(r("config get broker.nope"), "unknown_key")
    rep = r("config set broker.port 8883")
    assert rep["ok"] and rep["reboot_needed"] is True
    assert config.load(r.path)["broker"]["port"] == 8883
    rep = r("config get broker.port")
    assert rep["value"] == 1883 and rep["next_boot"] == 8883
    assert r("config set broker.host mqtt.shop.lan")["ok"]
    assert config.load(r.path)["broker"]["host"] == "mqtt.shop.lan"
    assert r("config set broker.password s3cret")["value"] == "<set>"
    err(r("config set broker.port 0"), "bad_value")
    err(r("config set broker.port eighty"), "bad_value")
    err(r("config set broker.tls 1"), "bad_value")
    err(r("config set device_id T-9"), "not_settable")
    err(r("config set secret_hex " + "00" * 32), "not_settable")
    err(r("config set pins.tech x"), "not_settable")
    err(r("config set broker.evil 1"), "not_settable")
    err(r("config set limits.bogus 1"), "not_settable")
    err(r("config set broker.port"), "bad_argument")
    err(r("config set console null"), "refused")
    err(r("config set scanner.port /dev/ttyS1"), "bad_value")  # scanner is not configured
    assert r('config set scanner {"driver": "serial", "port": "/dev/ttyS1"}')["ok"]
    assert r("config set scanner.baud 19200")["ok"]
    assert config.load(r.path)["scanner"] == {"driver": "serial", "port": "/dev/ttyS1",
                                              "baud": 19200}
    # A driver file the console points somewhere stays inside data_dir (or /dev/).
    err(r('config set printer {"driver": "file", "path": "/tmp/x.bin"}'), "bad_value")
    err(r('config set display {"driver": "jsonl", "path": "../../screen.jsonl"}'), "bad_value")
    assert r('config set printer {"driver": "file", "path": "%s/p.bin"}'
             % r.agent.data_dir)["ok"]
    # Limits apply at once.
    rep = r("config set limits.offline_max_charge 100")
    assert rep["ok"] and rep["reboot_needed"] is False
    assert r.agent.settings.limits()["offline_max_charge"] == 100
    assert r("config set status_interval_s 5")["ok"]
    assert r.agent.settings.status_interval_s() == 5
    # Nothing half-written: every save parsed whole.
    assert config.load(r.path)["device_id"] == "T-0100"


def test_config_set_limits_outlive_saved_host_settings():
    r = Rig("con-config-host")
    r.agent.settings.apply({"limits": {"offline_max_charge": 999}})
    r.login()
    assert r("config set limits.offline_max_charge 123")["ok"]
    r2 = Rig("con-config-host", d=r.d)
    assert r2.agent.settings.limits()["offline_max_charge"] == 123


def test_config_set_member_and_refund_limits():
    # docs/operations.md: `limits.<name>` is settable; the member limits of SPEC 8.1 and
    # refund_pin_over are limits keys like the others (device.json or the host's config).
    r = Rig("con-config-member")
    r.login()
    for key, value in (("offline_member_max", 5000), ("offline_member_total", 8000),
                       ("refund_pin_over", 20000)):
        rep = r("config set limits.%s %d" % (key, value))
        assert rep["ok"] and rep["reboot_needed"] is False, rep
        assert r.agent.settings.limits()[key] == value
        assert config.load(r.path)["limits"][key] == value
    err(r("config set limits.offline_member_max -1"), "bad_value")
    err(r("config set limits.refund_pin_over.x 1"), "not_settable")


def test_log_tail():
    r = Rig("con-log")
    r.login()
    for i in range(30):
        r.agent.log("event %d" % i)
    rep = r("log tail 3")
    assert [line.split(" ", 1)[1] for line in rep["lines"]] == ["event 27", "event 28",
                                                                 "event 29"]
    assert rep["lines"][0].startswith("2026-") and rep["total"] >= 31
    assert len(r("log tail")["lines"]) == 20
    assert len(r("log tail 100000")["lines"]) == 31  # the login and the 30 events
    for bad in ("0", "-1", "x", "1.5", "9999999"):
        err(r("log tail " + bad), "bad_argument")


def test_eventlog_ring_is_bounded():
    from device.eventlog import EventLog
    ev = EventLog(3)
    assert ev.tail(5) == []
    for i in range(7):
        ev.add(NOW, "x%d" % i if i != 6 else "y" * 500)
    assert len(ev) == 3 and ev.total == 7
    tail = ev.tail(10)
    assert [t.split(" ", 1)[1][:2] for t in tail] == ["x4", "x5", "yy"]
    assert len(tail[-1]) < 200 and tail[-1].endswith("...")


# -- reboot and factory reset --------------------------------------------------------------------
def test_reboot_replies_then_drops_the_rest():
    r = Rig("con-reboot")
    r.login()
    out = r.raw(b"reboot\nstatus\nstatus\n")
    assert out == [{"ok": True, "rebooting": True}] and r.cmds.exit_code == EXIT_REBOOT
    assert r.raw(b"status\n") == []


def test_factory_reset_confirms_twice_with_pending_charges_then_wipes():
    r = Rig("con-reset")
    r.login()
    r.agent.queue.commit(make_sale(b"\x07" * 16, 1, 900, [], "CNY", NOW, True, "clerk"))
    first = err(r("factory-reset"), "confirm")
    code = first["confirm"]
    assert code.startswith("CONFIRM-") and code in first["message"]
    err(r("factory-reset CONFIRM-000000"), "bad_confirmation")
    err(r("factory-reset " + code), "bad_confirmation")  # a code is good once
    code = r("factory-reset")["confirm"]
    second = err(r("factory-reset " + code), "pending_charges")
    assert second["pending"] == 1 and second["amount"] == 900
    assert second["confirm"].startswith("DISCARD-1-CHARGES-")
    err(r("factory-reset " + code), "bad_confirmation")  # the first code does not do it
    code = r("factory-reset")["confirm"]
    disc = r("factory-reset " + code)["confirm"]
    r.clock.t += 61
    err(r("factory-reset " + disc), "bad_confirmation")  # expired
    code = r("factory-reset")["confirm"]
    disc = r("factory-reset " + code)["confirm"]
    rep = r("factory-reset " + disc)
    assert rep == {"ok": True, "reset": True, "discarded": 1, "rebooting": True}
    assert r.cmds.exit_code == EXIT_REBOOT
    # Carried out once the agent has stopped (device/main.py, at exit and at every start).
    fs = PosixFS()
    assert fs.exists(r.path + ".reset")
    assert finish_factory_reset(fs, r.path) is True
    assert not fs.exists(r.path) and not fs.exists(r.path + ".reset")
    assert not fs.exists(r.agent.data_dir) and fs.exists(r.d)
    assert finish_factory_reset(fs, r.path) is False


def test_factory_reset_without_pending_needs_one_confirmation():
    r = Rig("con-reset1")
    err(r("factory-reset"), "login_required")
    r.login()
    code = r("factory-reset")["confirm"]
    assert r("factory-reset " + code)["discarded"] == 0


def test_unsafe_data_dirs_are_never_wiped():
    for bad in ("", "/", ".", "./", "//", "var/../..", "..", None):
        assert technician.unsafe_dir(bad), bad
    for good in ("var/T-0001", "/var/lib/pos/T-1", "data"):
        assert not technician.unsafe_dir(good), good


# -- malformed input -----------------------------------------------------------------------------
def test_malformed_lines_get_error_codes():
    r = Rig("con-bad")
    err(r.raw(b"\xff\xfe status\n")[0], "bad_encoding")
    err(r.raw(b"sta\x01tus\n")[0], "bad_characters")
    err(r.raw(b"x" * (MAX_LINE + 5) + b"\n")[0], "line_too_long")
    assert r.raw(b"\n\r\n   \n") == []
    assert [x["ok"] for x in r.raw(b"status\r\nSTATUS\rstatus\n")] == [True, True, True]
    for line in ("bogus", "status;reboot", "cmd_status", "__init__", "trust", "trust bogus x",
                 "queue", "log", "config frob", "coupon", "1234", "login-2468"):
        rep = r(line)
        assert rep["ok"] is False and rep["error"] in ("unknown_command", "bad_argument"), line
    err(r("trust"), "bad_argument")
    # Split across reads, the line is still one command.
    assert r.raw(b"sta") == [] and r.raw(b"tus\n")[0]["ok"]
    # SPEC 7: each is counted in the metrics, by its code
    err(r("login 0000"), "wrong_pin")
    m = r("status")["metrics"]
    assert (m["console_bad_encoding"], m["console_bad_characters"], m["console_line_too_long"],
            m["console_wrong_pin"]) == (1, 1, 1, 1)
    assert m["console_unknown_command"] + m["console_bad_argument"] == 13


def test_garbage_never_crashes_and_every_reply_is_one_json_line():
    r = Rig("con-garbage")
    r.login()
    seed = 12345
    words = [b"status", b"login", b"trust load", b"coupon check", b"config set", b"config get",
             b"log tail", b"factory-reset", b"queue list", b"provision", b"selftest", b"PT1:",
             b"PC1:", b"{", b"}", b"\"", b" ", b"\x00", b"\xc3", b"9999999999999999999999", b"."]
    data = bytearray()
    for _ in range(600):
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        if seed % 7 == 0:
            data += b"\n"
        else:
            data += words[seed % len(words)]
    data += b"\nstatus\n"
    out = r.con.feed(bytes(data))
    assert out
    for line in out:
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        rep = json.loads(line.decode())
        assert rep["ok"] in (True, False)
        if not rep["ok"]:
            assert rep["error"] != "internal", rep
    assert json.loads(out[-1].decode())["device_id"] == "T-0100"


# -- tls install ---------------------------------------------------------------------------------
def _tls_rig(tag):
    from tests.both.test_tls import CERT_A, CERT_B, KEY_A
    d = tmpdir(tag)
    tls = d + "/data/tls/"
    r = Rig(tag, d=d, broker={"host": "127.0.0.1", "port": 8883, "tls": True,
                              "username": "T-0100", "password": "pw", "root": "pos/v1",
                              "ca": tls + "ca.pem", "cert": tls + "cert.pem",
                              "key": tls + "key.pem"})
    bundle = {"ca": CERT_B.decode(), "cert": CERT_A.decode(), "key": KEY_A.decode()}
    return r, tls, bundle


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _pem(label, der):
    import binascii
    return "-----BEGIN %s-----\n%s-----END %s-----\n" % (
        label, binascii.b2a_base64(der).decode(), label)


def test_tls_install_writes_pem_and_der_twins_the_link_can_load():
    import os

    from device.ports import runtime as rt
    from device.ports.tls import pem_to_der, tls_context
    r, tls, bundle = _tls_rig("con-tls")
    err(r("tls install " + json.dumps(bundle)), "login_required")
    r.login()
    # CRLF line ends (a Windows laptop) are fine; the files come out canonical.
    sent = dict(bundle, ca=bundle["ca"].replace("\n", "\r\n"))
    rep = r("tls install " + json.dumps(sent))
    assert rep["ok"] and rep["reboot_needed"] is True and rep["configured"] is True, rep
    names = ["ca.pem", "ca.der", "cert.pem", "cert.der", "key.pem", "key.der"]
    assert rep["files"] == [tls + n for n in names]
    assert rep["paths"] == {"ca": tls + "ca.pem", "cert": tls + "cert.pem",
                            "key": tls + "key.pem"}
    assert sorted(os.listdir(tls[:-1])) == sorted(names)  # no staging copies left behind
    for key, kind in (("ca", b"CERTIFICATE"), ("cert", b"CERTIFICATE"), ("key", b"PRIVATE KEY")):
        der = pem_to_der(bundle[key].encode(), kind)[0]
        assert _read(tls + key + ".der") == der
        assert pem_to_der(_read(tls + key + ".pem"), kind) == [der]
        assert _read(tls + key + ".pem") == bundle[key].encode()  # already canonical
    if rt.MICROPYTHON:
        assert rep["key_mode"] is None and "cannot set file modes" in rep["key_note"]
    else:
        assert rep["key_mode"] == "0600" and rep["key_note"] is None
        for n in names:
            mode = os.stat(tls + n).st_mode & 0o777
            assert mode == (0o600 if n.startswith("key.") else mode & 0o644), (n, oct(mode))
        assert os.stat(tls[:-1]).st_mode & 0o777 == 0o700
    # What the link will do at the next start (MicroPython: from the DER twins).
    assert tls_context(r.agent.cfg["broker"]) is not None
    # Installing again replaces them (a renewed certificate).
    from tests.both.test_tls import CERT_B
    rep = r("tls install " + json.dumps(dict(bundle, ca=bundle["cert"], cert=bundle["cert"])))
    assert rep["ok"], rep
    assert _read(tls + "ca.der") == pem_to_der(bundle["cert"].encode())[0]
    assert _read(tls + "ca.der") != pem_to_der(CERT_B)[0]


def test_tls_install_not_configured_when_the_broker_points_elsewhere():
    r = Rig("con-tls-elsewhere")  # plain broker
    r.login()
    from tests.both.test_tls import CERT_A, CERT_B, KEY_A
    rep = r("tls install " + json.dumps({"ca": CERT_B.decode(), "cert": CERT_A.decode(),
                                         "key": KEY_A.decode()}))
    assert rep["ok"] and rep["configured"] is False, rep


def test_tls_install_refuses_what_is_not_one_pem_block_of_its_kind():
    from tests.both.test_tls import EC_KEY_A
    r, tls, bundle = _tls_rig("con-tls-bad")
    r.login()
    assert r("tls install " + json.dumps(bundle))["ok"]
    before = {n: _read(tls + n) for n in ("ca.pem", "ca.der", "key.pem", "key.der")}
    cert, key = bundle["cert"], bundle["key"]
    err(r("tls install"), "bad_json")
    err(r("tls install {\"ca\": "), "bad_json")
    err(r("tls install []"), "bad_argument")
    err(r("tls install " + json.dumps({"ca": cert, "cert": cert})), "bad_argument")
    err(r("tls install " + json.dumps(dict(bundle, extra=1))), "bad_argument")
    body = key.split("\n")[1:-2]
    bad = {
        "ca": [key, 5, "", "x" * 20000, cert + cert, "hello\n" + cert, cert[:-20],
               cert.replace("MIIB", "MI!B"), cert.replace("-----END", "-----END X"),
               _pem("CERTIFICATE", b"\x30\x05\x02\x01\x01"),  # DER length wrong
               _pem("CERTIFICATE", b"\x02\x01\x01")],  # not a SEQUENCE
        "cert": [key, "-----BEGIN X509 CRL-----\n" + cert.split("\n", 1)[1]],
        "key": [cert, "-----BEGIN ENCRYPTED PRIVATE KEY-----\n" + "\n".join(body)
                + "\n-----END ENCRYPTED PRIVATE KEY-----\n",
                "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n" + "\n".join(body)
                + "\n-----END EC PRIVATE KEY-----\n"],
    }
    for field, texts in bad.items():
        for text in texts:
            rep = err(r("tls install " + json.dumps(dict(bundle, **{field: text}))), "bad_pem")
            assert rep["key"] == field and rep["message"].startswith(field + ": "), rep
    rep = r("tls install " + json.dumps(dict(bundle, key=bundle["key"].replace(
        "PRIVATE", "ENCRYPTED PRIVATE"))))
    assert "encrypted keys are not supported" in err(rep, "bad_pem")["message"]
    # A SEQUENCE that is no certificate passes the shape check but not the TLS stack:
    # refused from the staging copy, and the installed files stay as they were.
    junk = _pem("CERTIFICATE", b"\x30\x03\x02\x01\x01")
    rep = err(r("tls install " + json.dumps(dict(bundle, ca=junk))), "tls_unusable")
    assert "nothing changed" in rep["message"]
    assert {n: _read(tls + n) for n in before} == before
    import os
    assert not [n for n in os.listdir(tls[:-1]) if n.startswith("new-")]
    # The SEC1 key form is a key too.
    assert r("tls install " + json.dumps(dict(bundle, key=EC_KEY_A.decode())))["ok"]


def test_tls_install_refuses_a_key_that_is_not_the_certificates_on_cpython():
    from device.ports import runtime as rt
    if rt.MICROPYTHON:
        return  # Mbed TLS loads a mismatched pair; the broker's handshake refuses it
    from tests.both.test_tls import CERT_B
    r, tls, bundle = _tls_rig("con-tls-pair")
    r.login()
    rep = err(r("tls install " + json.dumps(dict(bundle, cert=CERT_B.decode()))),
              "tls_unusable")
    assert "mismatch" in rep["message"].lower()
    import os
    assert not os.path.exists(tls + "cert.pem") and not os.path.exists(tls + "new-cert.pem")


def test_tls_install_needs_a_provisioned_terminal():
    d, path, cmds, call, _ = unprovisioned("con-tls-unprov")
    err(call("tls install {}"), "not_provisioned")
    err(call("tls"), "bad_argument")


def test_a_console_builds_only_what_it_uses():
    # No agent: the queue, a lockout and the PINs in force are all `queue list` and `login` use.
    from device.console.commands import ConsoleView
    from device.ports.storage import RecordLog
    from device.sales.queue import ChargeQueue
    from device.staff.pins import Lockout

    class Pins:
        def pins(self):
            return {"tech": TECH}

    d = tmpdir("con-view")
    q = ChargeQueue(RecordLog(PosixFS(), d + "/q.log")).open()
    q.commit(make_sale(b"\x05" * 16, q.take_receipt_no(), 700, [], "CNY", NOW, True, "c"))
    view = ConsoleView(queue=q, settings=Pins(), lockout=Lockout(PosixFS(), d + "/lock",
                                                                 Clock()).open())
    con = Console(Commands(view, clock=Clock(), log_out=Quiet()))

    def call(line):
        return json.loads(con.feed(line.encode() + b"\n")[0].decode())
    assert call("login 2468")["ok"]
    rep = call("queue list")
    assert rep["pending_count"] == 1 and rep["pending"][0]["amt"] == 700
