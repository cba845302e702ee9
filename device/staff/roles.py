# Roles on the terminal's keypad (SPEC 4 and 5.2): the supervisor PIN acknowledges and prints
# declined charges; the clerk PIN, when one is configured, must be typed before selling, and
# names the clerk on every charge. Built on the agent: its config (PINs), queue and clock.
#
# Clerk ids: SPEC 5.2 holds one hash per role, so the id names the role and the credential:
# "clerk" when no clerk PIN is configured (nobody logs in), else "<role>-<4 hex>" where the hex is
# the start of SHA-256 of the PIN hash in force ("clerk-3fa9", or "supervisor-07c2" when a
# supervisor rings sales). When the host rotates a PIN the id changes, so the host can tell
# charges made under the old credential from the new.
from device import crypto
from device.eventlog import stamp
from device.sales.escpos import Receipt, format_amount
from device.sales.sale import receipt_no
from device.staff import pins

LOCK_FILE = "/keypad_lock.json"
ANONYMOUS = "clerk"
LINE = 32  # the screens' width


class Supervisor:
    def __init__(self, agent):
        self.agent = agent
        self.lockout = pins.Lockout(agent.fs, agent.data_dir + LOCK_FILE, agent.clock).open()
        self.clerk = None  # id of the clerk logged in on the keypad, None when nobody is

    # -- PINs ------------------------------------------------------------------------------------
    def check_pin(self, role, pin):
        """pins.OK / WRONG / LOCKED / NO_PIN for a PIN typed on the keypad. Wrong PINs of every
        role count towards one lock (5 wrong, 300 s), which survives a restart."""
        verdict = pins.check(self.agent.cfg["pins"], role, pin, self.lockout)
        if verdict == pins.WRONG:
            self.agent.metrics.inc("keypad_wrong_pin")
            self.agent.log("wrong %s PIN on the keypad%s" % (
                role, " (keypad locked)" if self.lockout.locked_for() else ""))
        elif verdict == pins.OK:
            self.agent.log("%s PIN accepted" % role)
        return verdict

    def locked_for(self):
        return self.lockout.locked_for()

    # -- clerk -----------------------------------------------------------------------------------
    def clerk_login_required(self):
        """A clerk PIN is configured and nobody has logged in with it (or a supervisor's)."""
        return "clerk" in self.agent.cfg["pins"] and self.clerk is None

    def clerk_login(self, pin):
        """Logs a clerk in with the clerk PIN, or a supervisor with theirs; returns the verdict
        of the last PIN tried (one attempt counted, whichever role it matches)."""
        if self.lockout.locked_for():
            return pins.LOCKED
        cfg_pins = self.agent.cfg["pins"]
        for role in ("clerk", "supervisor"):
            stored = cfg_pins.get(role)
            try:
                good = stored is not None and pins.verify_pin(stored, pin)
            except pins.PinError:
                good = False
            if good:
                self.lockout.succeeded()
                self.clerk = _clerk_id(role, stored)
                self.agent.log("clerk %s logged in" % self.clerk)
                return pins.OK
        self.lockout.failed()
        self.agent.metrics.inc("keypad_wrong_pin")
        self.agent.log("wrong clerk PIN on the keypad")
        return pins.WRONG

    def clerk_logout(self):
        if self.clerk is not None:
            self.agent.log("clerk %s logged out" % self.clerk)
        self.clerk = None

    def clerk_id(self):
        """The "clerk" field of the next charge."""
        if self.clerk is not None:
            return self.clerk
        return ANONYMOUS

    # -- declined charges ------------------------------------------------------------------------
    def _declined(self):
        return [p for p in self.agent.queue.declined() if p is not None]

    def declined_lines(self):
        """One screen line per unacknowledged declined charge: receipt no, amount, code."""
        out = []
        for sale, result in self._declined():
            line = "%s %s %s" % (receipt_no(sale), format_amount(sale["amt"]),
                                 result.get("code") or "declined")
            out.append(line[:LINE])
        return out

    def ack_declined(self):
        """Acknowledges every declined charge shown; returns how many were recorded."""
        a = self.agent
        done = 0
        who = self.clerk if self.clerk is not None and self.clerk.startswith("supervisor") \
            else "supervisor"
        for sale, _ in self._declined():
            try:
                a.queue.acknowledge(sale["cid"], who, a.clock.now())
            except Exception as e:  # a full disk: the notice simply stays
                a.metrics.inc("ack_failed")
                a.log("decline ack not recorded: %s" % e)
                break
            done += 1
        if done:
            a.log("supervisor acknowledged %d declined charge(s)" % done)
        return done

    def print_declined(self):
        """The list of unacknowledged declined charges as an ESC/POS job, or None if empty."""
        declined = self._declined()
        if not declined:
            return None
        a = self.agent
        cfg = a.cfg
        r = Receipt(42)
        r.align("center").bold(True).text("DECLINED CHARGES").bold(False)
        r.text("Store %s  Terminal %s" % (cfg["store_id"], cfg["device_id"]))
        r.text("printed " + stamp(a.clock.now())).align("left").text("-" * 42)
        total = 0
        for sale, result in declined:
            total += sale["amt"]
            r.columns("Receipt %s" % receipt_no(sale), format_amount(sale["amt"], sale["cur"]))
            r.columns("  sold", stamp(sale["at"]))
            r.columns("  declined", stamp(result.get("at") or 0))
            r.columns("  clerk", str(sale["clerk"])[:30])
            r.columns("  code", str(result.get("code") or "-")[:30])
        r.text("-" * 42).bold(True).columns("%d declined" % len(declined),
                                             format_amount(total, cfg["currency"])).bold(False)
        r.text("Collect payment or void; then a supervisor").text("acknowledges on the terminal.")
        r.feed(3).cut()
        return r.bytes()


def _clerk_id(role, stored):
    return "%s-%s" % (role, crypto.sha256(stored.encode())[:2].hex())
