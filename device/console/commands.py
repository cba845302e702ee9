# The technician console's commands (SPEC 6), run against a running terminal (its ConsoleView),
# or against none while the terminal is unprovisioned (then only `status` and `provision` exist).
#
# Access: `status` and `login` are always open once provisioned; every other command needs a
# technician session (tech PIN, SPEC 5.2), which ends on `logout`, on a failed login, or after
# SESSION_IDLE_S without a command. Five wrong PINs lock logins for five minutes, across restarts.
# The work behind some commands lives in its own module: config_rules, coupon_args, selftest,
# tls_files, factory_reset.
import json

from device import config, crypto
from device import firmware as build
from device.console import config_rules, tls_files
from device.console.coupon_args import split_total
from device.console.factory_reset import schedule_factory_reset, unsafe_dir
from device.console.lines import reply_error, reply_ok
from device.eventlog import EventLog
from device.ports import runtime as rt
from device.ports.storage import PosixFS
from device.staff import pins

EXIT_REBOOT = 3        # process exit status meaning "restart me" (desktop; boards reset)
SESSION_IDLE_S = 600
CONFIRM_S = 60         # a factory-reset confirmation code is good for this long
LIST_MAX = 100         # entries per list in `queue list`
LOG_TAIL_DEFAULT = 20

# What `help` lists: command -> (argument, what it does). A command with no argument refuses
# one (a typo must not run the command as if nothing followed).
HELP = (
    ("status", "", "the terminal at a glance (no login needed)"),
    ("login", "PIN", "a technician session (5 wrong PINs lock for 300 s)"),
    ("logout", "", "ends the session"),
    ("help", "", "this list (before provisioning, or logged in)"),
    ("provision", "JSON", "writes the config (SPEC 5), atomically"),
    ("trust load", "PT1:...", "installs a trust list (newer ver only)"),
    ("revocations load", "PR1:...", "installs a revocation list (newer ver only)"),
    ("coupon check", "TOKEN [TOTAL]", "the verdict a sale would get; nothing redeemed"),
    ("queue list", "", "pending, waiting and declined records (recent and unacknowledged)"),
    ("journal show", "", "journal damage found at boot"),
    ("journal ack", "", "acknowledges the journal damage (selftest passes again)"),
    ("selftest", "", "drivers, storage, clock, link, lists, journal"),
    ("config get", "[KEY]", "the running config (secrets hidden), and what the next boot uses"),
    ("config set", "KEY VALUE", "changes a settable key (broker.*, drivers, limits.*, ...)"),
    ("log tail", "[N]", "the last N log lines (default 20)"),
    ("tls install", "JSON", "the broker CA, this terminal's certificate and key"),
    ("reboot", "", "restarts the terminal"),
    ("factory-reset", "[CODE]", "erases config and data, after a confirmation code"),
)
NO_ARGUMENT = [name.replace(" ", "_") for name, arg, _ in HELP if not arg]


class ConsoleView:
    """What the console uses of a running terminal, each part named (device/agent.py builds it;
    a test builds only the parts the commands it runs touch). Services add commands to
    `commands`: name -> fn(arg) -> reply dict (all need a technician login)."""

    def __init__(self, cfg=None, data_dir=None, status=None, settings=None, queue=None,
                 trust=None, till=None, events=None, lockout=None, selftest=None, damage=None,
                 log=None):
        self.cfg = cfg
        self.data_dir = data_dir
        self.status = status
        self.settings = settings
        self.queue = queue
        self.trust = trust
        self.till = till
        self.events = events
        self.lockout = lockout
        self.selftest = selftest
        self.damage = damage
        self.log = log
        self.commands = {}      # name -> fn(arg): commands a service adds
        self.help = []          # (name, argument, what it does) of those, for `help`
        self.no_argument = []   # those that take no argument


class Commands:
    """cmd_<name>(arg) -> reply dict, for device/console/lines.py's Console.

    terminal: the ConsoleView of the running terminal, or None while unprovisioned.
    config_path: the config file that `provision`, `config set` and `factory-reset` write.
    console_cfg: the serial config of the port this console runs on; a provisioned config
    without a console keeps this one. on_provisioned(cfg) -> a started terminal or None: called
    after a first `provision`; when it returns one, its `view` serves the following commands at
    once and `started` holds it for the caller."""

    def __init__(self, terminal=None, config_path=None, fs=None, clock=None, console_cfg=None,
                 on_provisioned=None, log_out=None):
        self.config_path = config_path
        self.console_cfg = console_cfg
        self.on_provisioned = on_provisioned
        self.log_out = log_out
        self.t = None
        self.started = None
        self.fs = fs or PosixFS()
        if clock is None:
            from device.ports.clock import Clock
            clock = Clock()
        self.clock = clock
        self.session_at = None
        self.exit_code = None   # set by reboot / factory-reset: the caller restarts after replying
        self.reset_done = False
        self._confirm = None
        self.events = EventLog(32)  # until a terminal (with its own ring) is attached
        if terminal is not None:
            self.attach(terminal)

    def attach(self, terminal):
        self.t = terminal
        if terminal.events is not None:
            self.events = terminal.events

    def lookup(self, name):
        """The function behind a command name, or None."""
        fn = getattr(self, "cmd_" + name, None)
        if fn is None and self.t is not None:
            fn = self.t.commands.get(name)
        if fn is not None and (name in NO_ARGUMENT or (self.t is not None
                                                       and name in self.t.no_argument)):
            return _no_argument(name, fn)
        return fn

    def cmd_help(self, arg):
        lines = []
        for name, argument, what in HELP:
            lines.append({"command": name, "argument": argument, "does": what})
        if self.t is not None:
            for name, argument, what in self.t.help:
                lines.append({"command": name, "argument": argument, "does": what})
        return reply_ok(commands=lines, provisioned=self.t is not None)

    def groups(self):
        """The two-word command groups services added ("licence" for `licence load`)."""
        if self.t is None:
            return ()
        return [n.split("_")[0] for n in self.t.commands if "_" in n]

    def log(self, text):
        if self.t is not None and self.t.log is not None:
            self.t.log("console: " + text)
            return
        self.events.add(self.clock.now(), "console: " + text)
        line = "[unprovisioned] console: %s" % text
        if self.log_out is None:
            print(line)
        else:
            self.log_out.write(line + "\n")

    # -- access --------------------------------------------------------------------------------
    def gate(self, name):
        if self.t is None:
            if name in ("status", "provision", "help"):
                return None
            return reply_error("not_provisioned",
                               "not provisioned: only status, provision and help are available")
        if name in ("status", "login"):  # SPEC 6: every other command needs a login
            return None
        if self.session_live():
            self.session_at = self.clock.now()
            return None
        return reply_error("login_required", "log in first: login PIN")

    def session_live(self):
        if self.session_at is None:
            return False
        idle = self.clock.now() - self.session_at
        if 0 <= idle < SESSION_IDLE_S:
            return True
        # Timed out, or the clock went back: either way the session is over.
        self.session_at = None
        self.log("session ended after inactivity")
        return False

    def count_error(self, code):
        """Every error reply counts in the terminal's metrics as console_CODE (none while
        unprovisioned: there are no metrics yet)."""
        if self.t is not None and type(code) is str:
            self.t.status.metrics.inc("console_" + code)

    # -- status and login ------------------------------------------------------------------------
    def cmd_status(self, arg):
        t = self.t
        if t is None:
            return reply_ok(provisioned=False, device_id=None, store_id=None, fw=build.FW,
                            rt=rt.NAME, online=False,
                            queue={"pending": 0, "amount": 0, "oldest_at": None},
                            trust_ver=0, rev_ver=0, declined_unseen=0,
                            lic={"st": "none", "exp": None, "days": None})
        fields = t.status.console_fields()
        fields["session"] = self.session_at is not None and self.session_live()
        fields["locked_for"] = t.lockout.locked_for()
        return reply_ok(**fields)

    def cmd_login(self, arg):
        pin = arg.strip(" ")
        if not pin:
            return reply_error("bad_argument", "usage: login PIN")
        lockout = self.t.lockout
        left = lockout.locked_for()
        if left:
            return reply_error("locked", "too many wrong PINs: try again in %d s" % left,
                               retry_in=left)
        verdict = pins.check(self.t.settings.pins(), "tech", pin, lockout)
        if verdict == pins.OK:
            self.session_at = self.clock.now()
            self.log("technician logged in")
            return reply_ok(role="tech", idle_timeout_s=SESSION_IDLE_S)
        self.session_at = None
        if verdict == pins.NO_PIN:
            return reply_error("no_pin", "no technician PIN is configured")
        if verdict == pins.LOCKED:
            left = lockout.locked_for()
            return reply_error("locked", "too many wrong PINs: try again in %d s" % left,
                               retry_in=left)
        locked = lockout.locked_for()
        self.log("wrong technician PIN%s" % (" (console locked)" if locked else ""))
        if locked:
            return reply_error("wrong_pin", "wrong PIN: console locked for %d s" % locked,
                               attempts_left=0, locked_for=locked)
        return reply_error("wrong_pin", "wrong PIN", attempts_left=lockout.attempts_left())

    def cmd_logout(self, arg):
        self.session_at = None
        self.log("technician logged out")
        return reply_ok()

    # -- provisioning ----------------------------------------------------------------------------
    def cmd_provision(self, arg):
        if not self.config_path:
            return reply_error("no_config_path", "this console has no config file to write")
        try:
            obj = json.loads(arg)
        except ValueError:
            return reply_error("bad_json", "usage: provision {config JSON on one line}")
        if not isinstance(obj, dict):
            return reply_error("bad_config", "the config must be a JSON object", key="config")
        obj = dict(obj)
        if obj.get("console") is None and self.console_cfg is not None:
            # The port the technician is talking on stays the console.
            obj["console"] = dict(self.console_cfg)
        try:
            cfg = config.parse(obj)
        except config.ConfigError as e:
            return reply_error("bad_config", str(e), key=e.key)
        if "tech" not in cfg["pins"]:
            return reply_error("bad_config", "pins.tech: a technician PIN hash is required",
                               key="pins.tech")
        t = self.t
        if t is not None and t.queue.count() and any(
                cfg[k] != t.cfg[k] for k in ("device_id", "secret_hex", "data_dir")):
            return reply_error("pending_charges", "%d records not yet sent: they would be "
                               "stranded under the old identity" % t.queue.count(),
                               pending=t.queue.count())
        try:
            self.fs.makedirs(cfg["data_dir"])
            d = _dirname(self.config_path)
            if d:
                self.fs.makedirs(d)
            self.fs.write_atomic(self.config_path, json.dumps(obj).encode())
        except OSError as e:
            return reply_error("storage", "cannot write the config: %s" % e)
        self.log("provisioned as %s (store %s)" % (cfg["device_id"], cfg["store_id"]))
        if t is not None:
            return reply_ok(device_id=cfg["device_id"], provisioned=True, reboot_needed=True)
        started = None
        if self.on_provisioned is not None:
            try:
                started = self.on_provisioned(cfg)
            except Exception as e:
                self.log("cannot start the agent: %s: %s" % (type(e).__name__, e))
                return reply_error("start_failed", "config saved, agent not started: %s" % e,
                                   provisioned=True)
        if started is not None:
            self.started = started
            self.attach(started.view)
        return reply_ok(device_id=cfg["device_id"], provisioned=True,
                        reboot_needed=started is None)

    # -- lists and coupons -----------------------------------------------------------------------
    def _install(self, arg, kind):
        from device.trust.lists import TrustError
        t = self.t.trust
        if not arg:
            return reply_error("bad_argument", "usage: %s load %s..." % (
                "trust" if kind == "trustlist" else "revocations",
                "PT1:" if kind == "trustlist" else "PR1:"))
        try:
            ver = t.install_text(arg, kind)[1]
        except TrustError as e:
            self.log("%s refused: %s" % (kind, e.code))
            return reply_error(e.code, e.message)
        self.log("installed %s ver %d" % (kind, ver))
        if kind == "trustlist":
            return reply_ok(ver=ver, keys=t.keys_count())
        return reply_ok(ver=ver, revoked=t.revoked_count(),
                        blocked_members=t.blocked_members_count())

    def cmd_trust_load(self, arg):
        return self._install(arg, "trustlist")

    def cmd_revocations_load(self, arg):
        return self._install(arg, "revocations")

    def cmd_coupon_check(self, arg):
        if not arg:
            return reply_error("bad_argument", "usage: coupon check TOKEN [TOTAL]")
        token, total = split_total(arg)
        r = self.t.till.check_coupon(token, total, True)
        cti = r.get("cti")
        return reply_ok(verdict=r["verdict"], discount=r.get("discount"),
                        cti=cti.hex() if isinstance(cti, (bytes, bytearray)) else None,
                        campaign=r.get("campaign"), name=r.get("name"), kind=r.get("kind"),
                        val=r.get("val"), sku=r.get("sku"), total=total,
                        clock_trusted=self.clock.trusted())

    # -- broker TLS files ------------------------------------------------------------------------
    def cmd_tls_install(self, arg):
        """`tls install {"ca": PEM, "cert": PEM, "key": PEM}`: the broker's CA, this terminal's
        client certificate and its key, pushed over the console (a terminal shares no disk with
        the technician's laptop). Each must be one PEM block of its kind. They are tried on this
        runtime's TLS stack from a staging copy first, then written atomically to
        <data_dir>/tls/ as ca/cert/key.pem plus the .der twins MicroPython's ssl loads. The
        link reads them when it starts, hence reboot_needed."""
        try:
            obj = json.loads(arg)
        except ValueError:
            return reply_error("bad_json", tls_files.TLS_USAGE)
        if not isinstance(obj, dict) or sorted(obj) != ["ca", "cert", "key"]:
            return reply_error("bad_argument", tls_files.TLS_USAGE)
        try:
            files = tls_files.tls_files(obj)
        except tls_files.TlsFileError as e:
            return reply_error("bad_pem", str(e), key=e.key)
        d = self.t.data_dir + tls_files.TLS_DIR
        try:
            unusable = tls_files.install(self.fs, d, files)
        except OSError as e:
            return reply_error("storage", "cannot write the TLS files: %s" % e)
        if unusable is not None:
            return reply_error("tls_unusable", "the TLS stack refuses them (nothing changed): %s"
                               % unusable)
        paths = {k: d + "/" + k + ".pem" for k in ("ca", "cert", "key")}
        b = self.t.cfg["broker"]
        self.log("TLS files installed in %s" % d)
        chmod = rt.CAN_CHMOD
        return reply_ok(files=[d + "/" + name for name, _ in files], paths=paths,
                        key_mode="0600" if chmod else None,
                        key_note=None if chmod else "this runtime cannot set file modes: the "
                        "key is as private as the filesystem it is on",
                        configured=all(b.get(k) == paths[k] for k in paths) and b.get("tls")
                        is True, reboot_needed=True)

    # -- queue -----------------------------------------------------------------------------------
    def cmd_queue_list(self, arg):
        q = self.t.queue
        count, amount, oldest = q.totals()
        pending = []
        others = []
        for r in q.pending:
            if r["r"] == "sale":
                if len(pending) < LIST_MAX:
                    pending.append(_charge(r))
            elif len(others) < LIST_MAX:
                others.append(_record(q, r, None))
        waiting = [_record(q, rec, answer) for rec, answer in q.waiting[:LIST_MAX]]
        declined = []
        notices = []
        # the bad answers kept in RAM: the unacknowledged ones and those of the recent history
        # (the journal is not read whole for this: it may hold thousands of records)
        seen = {}
        bad = []
        for kind, rec, answer in q.history() + q.notices():
            rid = rec[kind.key]
            if kind.bad(answer) and rid not in seen:
                seen[rid] = True
                bad.append((rec, answer))
        bad.sort(key=lambda p: p[1].get("at", 0))
        unacked = q.unacked
        for rec, answer in bad:
            if rec["r"] == "sale":
                d = _charge(rec)
                d["code"] = answer.get("code")
                d["declined_at"] = answer.get("at")
                d["acked"] = rec["cid"] not in unacked
                declined.append(d)
            else:
                notices.append(_record(q, rec, answer))
        return reply_ok(pending=pending, pending_count=count, pending_amount=amount,
                        oldest_at=oldest, declined=declined[-LIST_MAX:],
                        declined_unseen=len(q.unacked), others=others, waiting=waiting,
                        notices=notices[-LIST_MAX:])

    # -- journal damage --------------------------------------------------------------------------
    def cmd_journal_show(self, arg):
        d = self.t.damage
        return reply_ok(events=d.events, total=d.total, unacknowledged=d.unacknowledged())

    def cmd_journal_ack(self, arg):
        n = self.t.damage.acknowledge()
        self.log("journal damage acknowledged (%d event(s))" % n)
        return reply_ok(acknowledged=n)

    # -- selftest --------------------------------------------------------------------------------
    def cmd_selftest(self, arg):
        return reply_ok(**self.t.selftest())

    # -- config ----------------------------------------------------------------------------------
    def _saved(self):
        """The config file as an object (None when there is none or it does not parse)."""
        if not self.config_path:
            return None
        raw = self.fs.read(self.config_path)
        if raw is None:
            return None
        try:
            obj = json.loads(raw)
        except ValueError:
            return None
        return obj if isinstance(obj, dict) else None

    def cmd_config_get(self, arg):
        key = arg.strip(" ")
        saved = self._saved()
        try:
            saved = config.parse(saved) if saved is not None else None
        except config.ConfigError:
            saved = None
        running = config_rules.redact(self._running())
        saved = config_rules.redact(saved) if saved is not None else None
        if not key:
            rep = reply_ok(value=running)
            if saved is not None and saved != running:
                rep["next_boot"] = saved
            return rep
        value = config_rules.lookup(running, key)
        if value is config_rules.MISSING:
            return reply_error("unknown_key", "no config key %s" % key[:60])
        rep = reply_ok(key=key, value=value)
        if saved is not None:
            nxt = config_rules.lookup(saved, key)
            if nxt != value and nxt is not config_rules.MISSING:
                rep["next_boot"] = nxt
        return rep

    def cmd_config_set(self, arg):
        key, text = _split_word(arg)
        if not key or not text:
            return reply_error("bad_argument", "usage: config set KEY VALUE")
        parts = key.split(".")
        if not config_rules.settable(parts):
            return reply_error("not_settable", "%s cannot be set from the console (settable: "
                               "broker.*, scanner, keypad, display, printer, console and "
                               "their fields, limits.*, status_interval_s)" % key[:60])
        value = config_rules.parse_value(text)
        if parts == ["console"] and value is None:
            return reply_error("refused", "the console cannot be switched off from itself")
        obj = self._saved()
        if obj is None:
            return reply_error("no_config", "no readable config file to change")
        try:
            config_rules.set_path(obj, parts, value)
            # what the console changes may not point a driver's file outside data_dir
            cfg = config.parse(obj, confine=parts[:1])
        except config.ConfigError as e:
            return reply_error("bad_value", str(e), key=e.key)
        except ValueError as e:
            return reply_error("bad_value", str(e), key=key)
        try:
            self.fs.write_atomic(self.config_path, json.dumps(obj).encode())
        except OSError as e:
            return reply_error("storage", "cannot write the config: %s" % e)
        live = parts[0] in config_rules.LIVE_KEYS
        if live:
            self._apply_live(parts[0], cfg)
        shown = config_rules.SECRET if key == "broker.password" and value is not None else value
        self.log("config set %s" % key)
        return reply_ok(key=key, value=shown, reboot_needed=not live)

    def _running(self):
        """The running config with the host-managed keys as they are in force."""
        cfg = dict(self.t.cfg)
        for key in config_rules.LIVE_KEYS + ("pins",):
            cfg[key] = self.t.settings.get(key)
        return cfg

    def _apply_live(self, top, cfg):
        # The technician's value stands until the host sends the key again.
        self.t.settings.set_provisioned(top, cfg[top])

    # -- log, reboot, factory reset --------------------------------------------------------------
    def cmd_log_tail(self, arg):
        arg = arg.strip(" ")
        ev = self.events
        n = LOG_TAIL_DEFAULT
        if arg:
            if not arg.isdigit() or len(arg) > 6 or int(arg) < 1:
                return reply_error("bad_argument", "usage: log tail N (N >= 1)")
            n = int(arg)
        if n > ev.size:
            n = ev.size
        return reply_ok(lines=ev.tail(n), total=ev.total)

    def cmd_reboot(self, arg):
        self.log("reboot requested")
        self.exit_code = EXIT_REBOOT
        return reply_ok(rebooting=True)

    def cmd_factory_reset(self, arg):
        t = self.t
        now = self.clock.now()
        code = arg.strip(" ")
        if not code:
            token = "CONFIRM-" + crypto.random_bytes(3).hex()
            self._confirm = (token, now, "erase")
            return reply_error("confirm", "this erases the config and every record on this "
                               "terminal; to go on send within %d s: factory-reset %s"
                               % (CONFIRM_S, token), confirm=token)
        c = self._confirm
        self._confirm = None
        if c is None or code != c[0] or not 0 <= now - c[1] < CONFIRM_S:
            return reply_error("bad_confirmation", "wrong or expired confirmation code: start "
                               "again with factory-reset")
        pending = t.queue.count()
        if c[2] == "erase" and pending:
            amount = t.queue.totals()[1]
            token = "DISCARD-%d-CHARGES-%s" % (pending, crypto.random_bytes(3).hex())
            self._confirm = (token, now, "discard")
            return reply_error("pending_charges", "%d charges (%d in minor units) have not "
                               "reached the host and would be lost; to erase them anyway send "
                               "within %d s: factory-reset %s" % (pending, amount, CONFIRM_S,
                                                                   token),
                               pending=pending, amount=amount, confirm=token)
        if not self.config_path:
            return reply_error("no_config_path", "this console has no config file to erase")
        if unsafe_dir(t.data_dir):
            return reply_error("unsafe_data_dir", "refusing to wipe data_dir %r" % t.data_dir)
        try:
            schedule_factory_reset(self.fs, self.config_path, t.data_dir)
        except OSError as e:
            return reply_error("storage", "cannot start the reset: %s" % e)
        self.log("factory reset (%d pending charges discarded)" % pending)
        self.reset_done = True
        self.exit_code = EXIT_REBOOT
        return reply_ok(reset=True, discarded=pending, rebooting=True)


# -- helpers -----------------------------------------------------------------------------------
def _dirname(path):
    i = path.rfind("/")
    return path[:i] if i > 0 else ""


def _split_word(text):
    text = text.strip(" ")
    i = text.find(" ")
    if i < 0:
        return text, ""
    return text[:i], text[i + 1:].strip(" ")


def _no_argument(name, fn):
    def call(arg):
        if arg.strip(" \t"):
            return reply_error("bad_argument", "%s takes no argument" % name.replace("_", " "))
        return fn(arg)
    return call


def _record(q, rec, answer):
    """A queued record of a service (refund, booking update) for `queue list`."""
    kind = q.kinds[rec["r"]]
    out = {"kind": rec["r"], "id": rec[kind.key].hex(), "at": rec["at"], "clerk": rec["clerk"]}
    for k in ("amt", "cur", "bid", "op", "reason"):
        if k in rec:
            out[k] = rec[k]
    if "cid" in rec and kind.key != "cid":
        out["cid"] = rec["cid"].hex()
    if answer is not None:
        out["st"] = answer.get("st")
        out["code"] = answer.get("code")
        out["acked"] = rec[kind.key] not in q.unacked
    return out


def _charge(rec):
    return {"cid": rec["cid"].hex(), "n": rec["n"], "kind": rec["kind"], "gross": rec["gross"],
            "amt": rec["amt"], "cur": rec["cur"], "at": rec["at"], "off": rec["off"],
            "clerk": rec["clerk"], "coupons": len(rec["cpn"])}
