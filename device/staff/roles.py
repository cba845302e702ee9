# Roles on the terminal's keypad (SPEC 4 and 5.2): the supervisor PIN acknowledges and prints the
# notices (declined charges, rejected refunds...); the clerk PIN, when one is configured, must be
# typed before selling, and names the clerk on every record.
#
# Clerk ids: SPEC 5.2 holds one hash per role, so the id names the role and the credential:
# "clerk" when no clerk PIN is configured (nobody logs in), else "<role>-<4 hex>" where the hex is
# the start of SHA-256 of the PIN hash in force ("clerk-3fa9", or "supervisor-07c2" when a
# supervisor rings sales). When the host rotates a PIN the id changes, so the host can tell
# records made under the old credential from the new.
from device import crypto
from device.eventlog import stamp
from device.sales.escpos import Receipt, format_amount
from device.staff import pins

LOCK_FILE = "/keypad_lock.json"
ANONYMOUS = "clerk"
LINE = 32  # the screens' width


class Roles:
    def __init__(self, settings, lockout, queue, clock, shop, metrics, log):
        """settings: host settings (the PIN hashes in force); lockout: the keypad's
        pins.Lockout; queue: the notices; shop: the ids printed on the notice list."""
        self.settings = settings
        self.lockout = lockout
        self.queue = queue
        self.clock = clock
        self.shop = shop
        self.metrics = metrics
        self.log = log
        self.clerk = None  # id of the clerk logged in on the keypad, None when nobody is

    # -- PINs ------------------------------------------------------------------------------------
    def check_pin(self, role, pin):
        """pins.OK / WRONG / LOCKED / NO_PIN for a PIN typed on the keypad. Wrong PINs of every
        role count towards one lock (5 wrong, 300 s), which survives a restart."""
        verdict = pins.check(self.settings.pins(), role, pin, self.lockout)
        if verdict == pins.WRONG:
            self.metrics.inc("keypad_wrong_pin")
            self.log("wrong %s PIN on the keypad%s" % (
                role, " (keypad locked)" if self.lockout.locked_for() else ""))
        elif verdict == pins.OK:
            self.log("%s PIN accepted" % role)
        return verdict

    def locked_for(self):
        return self.lockout.locked_for()

    # -- clerk -----------------------------------------------------------------------------------
    def clerk_login_required(self):
        """A clerk PIN is configured and nobody has logged in with it (or a supervisor's)."""
        return "clerk" in self.settings.pins() and self.clerk is None

    def clerk_login(self, pin):
        """Logs a clerk in with the clerk PIN, or a supervisor with theirs; returns the verdict
        of the last PIN tried (one attempt counted, whichever role it matches)."""
        if self.lockout.locked_for():
            return pins.LOCKED
        cfg_pins = self.settings.pins()
        for role in ("clerk", "supervisor"):
            stored = cfg_pins.get(role)
            try:
                good = stored is not None and pins.verify_pin(stored, pin)
            except pins.PinError:
                good = False
            if good:
                self.lockout.succeeded()
                self.clerk = _clerk_id(role, stored)
                self.log("clerk %s logged in" % self.clerk)
                return pins.OK
        self.lockout.failed()
        self.metrics.inc("keypad_wrong_pin")
        self.log("wrong clerk PIN on the keypad")
        return pins.WRONG

    def clerk_logout(self):
        if self.clerk is not None:
            self.log("clerk %s logged out" % self.clerk)
        self.clerk = None

    def clerk_id(self):
        """The "clerk" field of the next record."""
        if self.clerk is not None:
            return self.clerk
        return ANONYMOUS

    # -- notices ---------------------------------------------------------------------------------
    def notice(self):
        """The persistent notice while a bad answer waits for a supervisor, else None."""
        notices = self.queue.notices()
        if not notices:
            return None
        kind, rec, answer = notices[0]
        return notice_lines(kind, rec, answer, len(notices))

    def declined_lines(self):
        """One screen line per unacknowledged notice: receipt no, amount, code."""
        return [notice_line(k, rec, answer)[:LINE] for k, rec, answer in self.queue.notices()]

    def waiting_lines(self):
        """One screen line per record the host answered "not decided yet" (a refund in review):
        shown under the notices, cleared by the host's final answer, never acknowledged."""
        q = self.queue
        return [notice_line(q.kinds[rec["r"]], rec, answer)[:LINE] for rec, answer in q.waiting]

    def ack_declined(self):
        """Acknowledges every notice shown; returns how many were recorded."""
        done = 0
        who = self.clerk if self.clerk is not None and self.clerk.startswith("supervisor") \
            else "supervisor"
        for kind, rec, _ in self.queue.notices():
            try:
                self.queue.acknowledge(rec[kind.key], who, self.clock.now())
            except Exception as e:  # a full disk: the notice simply stays
                self.metrics.inc("ack_failed")
                self.log("notice ack not recorded: %s" % e)
                break
            done += 1
        if done:
            self.log("supervisor acknowledged %d notice(s)" % done)
        return done

    def print_declined(self):
        """The list of unacknowledged notices as an ESC/POS job, or None if empty."""
        notices = self.queue.notices()
        if not notices:
            return None
        shop = self.shop
        r = Receipt(42)
        only_sales = all(k.record == "sale" for k, _, _ in notices)
        r.align("center").bold(True).text("DECLINED CHARGES" if only_sales else "NOTICES")
        r.bold(False)
        r.text("Store %s  Terminal %s" % (shop["store_id"], shop["device_id"]))
        r.text("printed " + stamp(self.clock.now())).align("left").text("-" * 42)
        total = 0
        for kind, rec, answer in notices:
            title, amount = notice_title(kind, rec)
            total += amount
            r.columns(title, format_amount(amount, rec.get("cur", "")))
            r.columns("  recorded", stamp(rec["at"]))
            r.columns("  answered", stamp(answer.get("at") or 0))
            r.columns("  clerk", str(rec["clerk"])[:30])
            r.columns("  " + answer.get("st", "-"), str(answer.get("code") or "-")[:30])
        r.text("-" * 42).bold(True).columns(
            "%d %s" % (len(notices), "declined" if only_sales else "to acknowledge"),
            format_amount(total, shop["currency"])).bold(False)
        r.text("Collect payment or void; then a supervisor").text("acknowledges on the terminal.")
        r.feed(3).cut()
        return r.bytes()


def notice_title(kind, rec):
    """("Receipt 000012", amount) or what the kind says of itself."""
    fn = getattr(kind, "title", None)
    if fn is not None:
        return fn(rec)
    return "Receipt %06d" % rec["n"], rec["amt"]


def notice_line(kind, rec, answer):
    title, amount = notice_title(kind, rec)
    return "%s %s %s" % (title.split(" ")[-1], format_amount(amount),
                         answer.get("code") or answer.get("st") or "declined")


def notice_lines(kind, rec, answer, count):
    fn = getattr(kind, "notice", None)
    if fn is not None:
        return fn(rec, answer, count)
    return ["DECLINED x%d: %s" % (count, format_amount(rec["amt"])),
            "code %s - see supervisor" % answer.get("code", "-")]


def _clerk_id(role, stored):
    return "%s-%s" % (role, crypto.sha256(stored.encode())[:2].hex())
