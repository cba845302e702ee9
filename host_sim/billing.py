# The billing engine: recurring subscriptions charged once per period (SPEC 8.2 VIP
# memberships, SPEC 8.5 the store's service licence). One engine, one set of tables; what
# differs per kind of subscription is in a Kind (reminder lead times, whether the member's
# stored balance may pay, what happens when a period is paid).
#
# A subscription has an owner (member id, device id), a plan, an anchor and a cycle (periods:
# host_sim/periods.py), a fee fixed when it starts, an auto-renew flag and a state (active,
# lapsed, ended). `next_n` is its first unpaid period: periods 0..next_n-1 are paid, in order.
#
# Exactly once: each period that is charged has one row in billing_periods, keyed
# (sub, start). A payment attempt is claimed by a conditional update of that row
# (st due|failed -> charging, tries = tries + 1) committed before the payment method is asked;
# the outcome is written by a second conditional update that names the claim. Two schedulers on
# the same database therefore never attempt the same try twice, and a period already paid is
# never claimed again. The stored balance is debited in the same transaction as the claim and
# the paid mark. A claim left by a scheduler that died is taken over after STALE_CLAIM_S of wall
# time, at once when its scheduler ran on this machine and its process is gone (a claim names
# its machine and process), and the payment method is asked again with the same attempt key,
# which a payment method answers idempotently (the simulator's answer is a function of the key).
import hashlib
import os
import socket
import time

from host_sim import periods

HOUR = 3600
DAY = 86400
# The retry schedule of an unpaid period, counted from its first try: at most 8 tries within 14
# days (SPEC 8.2), then the lapse. A tick that comes late (a host that was down, ticks a day
# apart) makes one try, in the latest slot whose time has come, never a burst for the slots it
# missed; so the lapse comes 13 days after the first try however the ticks fall, and a host
# back after the 14 days lapses the period without a late try.
RETRY_SLOTS = (0, HOUR, 6 * HOUR, DAY, 2 * DAY, 4 * DAY, 7 * DAY, 13 * DAY)
RETRY_WINDOW_S = 14 * DAY  # SPEC 8.2: at most 8 tries in 14 days from the first, then a lapse
STALE_CLAIM_S = 120
BATCH = 500
MAX_PASSES = 100000  # a tick that has not settled after this many batches is a bug, not a loop

SCHEMA = """
CREATE TABLE IF NOT EXISTS billing_plans (
    kind   TEXT NOT NULL,
    name   TEXT NOT NULL,
    fee    INTEGER NOT NULL,
    cycle  TEXT NOT NULL,
    grace  INTEGER NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS billing_ids (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS billing_subs (
    id       INTEGER PRIMARY KEY,
    kind     TEXT NOT NULL,
    owner    TEXT NOT NULL,
    gen      INTEGER NOT NULL,
    plan     TEXT NOT NULL,
    anchor   INTEGER NOT NULL,
    cycle    TEXT NOT NULL,
    fee      INTEGER NOT NULL,
    auto     INTEGER NOT NULL,
    state    TEXT NOT NULL,
    next_n   INTEGER NOT NULL,
    rem_done INTEGER NOT NULL,
    paid_end INTEGER,
    due_at   INTEGER,
    claim    TEXT,
    claim_at INTEGER,
    created  INTEGER NOT NULL,
    UNIQUE (kind, owner, gen)
);
CREATE INDEX IF NOT EXISTS billing_subs_due ON billing_subs(kind, due_at);
CREATE TABLE IF NOT EXISTS billing_periods (
    sub       INTEGER NOT NULL,
    start     INTEGER NOT NULL,
    n         INTEGER NOT NULL,
    end_at    INTEGER NOT NULL,
    st        TEXT NOT NULL,
    tries     INTEGER NOT NULL,
    slot      INTEGER NOT NULL,
    first_try INTEGER,
    try_at    INTEGER,
    amt       INTEGER NOT NULL,
    src       TEXT,
    ref       TEXT UNIQUE,
    claim     TEXT,
    paid_at   INTEGER,
    PRIMARY KEY (sub, start)
);
CREATE TABLE IF NOT EXISTS billing_attempts (
    sub   INTEGER NOT NULL,
    start INTEGER NOT NULL,
    try   INTEGER NOT NULL,
    at    INTEGER NOT NULL,
    src   TEXT NOT NULL,
    amt   INTEGER NOT NULL,
    ok    INTEGER NOT NULL,
    PRIMARY KEY (sub, start, try)
);
CREATE TABLE IF NOT EXISTS billing_reminders (
    sub   INTEGER NOT NULL,
    start INTEGER NOT NULL,
    lead  INTEGER NOT NULL,
    at    INTEGER NOT NULL,
    PRIMARY KEY (sub, start, lead)
);
"""

# Payment sources as recorded on a period and an attempt.
BALANCE = "balance"    # the member's stored balance (members table)
GATEWAY = "gateway"    # the payment method on file (the simulator's gateway)
COUNTER = "counter"    # paid at a terminal (a charge of kind vip)
MANUAL = "manual"      # paid by an operator's command (licence renew)

_SUB_COLS = ("id", "kind", "owner", "gen", "plan", "anchor", "cycle", "fee", "auto", "state",
             "next_n", "rem_done", "paid_end", "due_at", "claim", "claim_at", "created")
_SUB_SELECT = "SELECT " + ", ".join(_SUB_COLS) + " FROM billing_subs"
_PERIOD_COLS = ("sub", "start", "n", "end_at", "st", "tries", "slot", "first_try", "try_at",
                "amt", "src", "ref", "claim", "paid_at")


class BillingError(ValueError):
    """A refused operation; .code is stable (decline codes of on_charge among them)."""

    def __init__(self, code, message):
        super().__init__("%s: %s" % (code, message))
        self.code = code
        self.message = message


class Kind:
    """What differs between kinds of subscription.

    leads: seconds before each renewal at which the owner is reminded, largest first.
    balance(tx, sub, start, now) -> bool: pays the period from the owner's stored balance when
        it is enough (True), in the claim's transaction; None: the gateway only. Asked only
        where the members table exists (host_sim/members.py).
    on_paid(tx, sub, start, end, now): runs in the transaction that marks a period paid.
    """

    def __init__(self, name, leads, balance=None, on_paid=None):
        self.name = name
        self.leads = tuple(sorted(leads, reverse=True))
        self.balance = balance
        self.on_paid = on_paid


class Gateway:
    """The simulator's payment method on file: a share `fail_rate` of attempts fail, drawn from
    SHA-256 of the seed and the attempt key, so an attempt asked twice (a claim taken over) gets
    the same answer and a given seed fails the same attempts on every run."""

    def __init__(self, fail_rate=0.0, seed=0, latency_s=0.0):
        if not isinstance(fail_rate, (int, float)) or not 0.0 <= fail_rate <= 1.0:
            raise BillingError("bad_argument", "fail rate must be within 0..1")
        self.fail_rate = float(fail_rate)
        self.seed = seed
        self.latency_s = latency_s  # a real gateway answers in tens of milliseconds
        self.calls = 0

    def pay(self, key, amt):
        self.calls += 1
        if self.latency_s:
            time.sleep(self.latency_s)
        if self.fail_rate <= 0.0:
            return True
        h = hashlib.sha256(("gateway|%s|%s" % (self.seed, key)).encode()).digest()
        return int.from_bytes(h[:8], "big") / float(1 << 64) >= self.fail_rate


class Sub:
    """One billing_subs row."""

    __slots__ = _SUB_COLS

    def __init__(self, row):
        for k, v in zip(_SUB_COLS, row, strict=True):
            setattr(self, k, v)

    def start(self, n):
        return periods.start(self.anchor, self.cycle, n)

    def to_dict(self):
        return {k: getattr(self, k) for k in _SUB_COLS}


class Claim:
    """A gateway attempt claimed in the database, to be asked and then settled."""

    __slots__ = ("sub", "start", "try_no", "slot", "amt", "token", "at", "key", "ok")

    def __init__(self, sub, start, try_no, slot, amt, token, at):
        self.sub = sub
        self.start = start
        self.try_no = try_no
        self.slot = slot
        self.amt = amt
        self.token = token
        self.at = at  # when the attempt was claimed: its time in the ledger
        self.key = "%s/%d/%d/%d" % (sub.kind, sub.id, start, try_no)
        self.ok = None


def next_try(first_try, slot):
    """When the try after the one of schedule slot `slot` is due (the period's first try was
    at first_try)."""
    return first_try + RETRY_SLOTS[slot + 1]


def slot_at(first_try, now):
    """The latest schedule slot whose time has come at now."""
    i = 0
    while i + 1 < len(RETRY_SLOTS) and first_try + RETRY_SLOTS[i + 1] <= now:
        i += 1
    return i


def _lapse(sub, start, now, tries, events):
    """The period from `start` stays unpaid: the subscription lapses (its last try failed, or
    the 14 days of tries are over)."""
    sub.state, sub.due_at = "lapsed", None
    events.append(_event("lapsed", sub, start, now, tries=tries))


def _token():
    """A claim's token: this machine, this process, then random."""
    return "%s/%d/%s" % (socket.gethostname(), os.getpid(), os.urandom(8).hex())


def _process_gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: someone else's process, alive
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:  # a zombie is dead too (Linux)
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def owner_dead(token):
    """True when the scheduler that claimed with token ran on this machine and its process is
    gone; False when it lives, ran elsewhere or the token says nothing (an older claim)."""
    parts = token.split("/") if type(token) is str else []
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    return pid != os.getpid() and _process_gone(pid)


def _event(act, sub, start, now, **extra):
    ev = {"act": act, "kind": sub.kind, "owner": sub.owner, "plan": sub.plan, "start": start,
          "at": now}
    ev.update(extra)
    return ev


class Engine:
    """Subscriptions of the given kinds over one Store."""

    def __init__(self, store, kinds, wall=time.time, batch=BATCH):
        self.store = store
        self.kinds = {k.name: k for k in kinds}
        self.wall = wall
        self.batch = batch
        store.schema(SCHEMA)
        self.members = False

    # ------------------------------------------------------------ plans

    def set_plan(self, tx, kind, name, fee, cycle, grace=0):
        """Adds or changes a plan; running subscriptions keep the fee and cycle they began
        with."""
        self._kind(kind)
        if type(name) is not str or not 1 <= len(name) <= 32:
            raise BillingError("bad_plan", "name must be text of 1..32 characters")
        if type(fee) is not int or fee < 0:
            raise BillingError("bad_plan", "fee must be an amount >= 0 in minor units")
        if cycle not in periods.CYCLES:
            raise BillingError("bad_plan", "cycle must be one of %s" % "|".join(periods.CYCLES))
        if type(grace) is not int or grace < 0:
            raise BillingError("bad_plan", "grace must be seconds >= 0")
        tx.execute("INSERT INTO billing_plans (kind, name, fee, cycle, grace)"
                   " VALUES (?, ?, ?, ?, ?) ON CONFLICT (kind, name) DO UPDATE SET"
                   " fee = excluded.fee, cycle = excluded.cycle, grace = excluded.grace",
                   (kind, name, fee, cycle, grace))
        return {"name": name, "fee": fee, "cycle": cycle, "grace": grace}

    def plan(self, tx, kind, name):
        row = tx.execute("SELECT name, fee, cycle, grace FROM billing_plans"
                         " WHERE kind=? AND name=?", (kind, name)).fetchone()
        if row is None:
            return None
        return {"name": row[0], "fee": row[1], "cycle": row[2], "grace": row[3]}

    def plans(self, tx, kind):
        rows = tx.execute("SELECT name, fee, cycle, grace FROM billing_plans WHERE kind=?"
                          " ORDER BY name", (kind,)).fetchall()
        return [{"name": r[0], "fee": r[1], "cycle": r[2], "grace": r[3]} for r in rows]

    # ------------------------------------------------------------ subscriptions

    def _kind(self, name):
        try:
            return self.kinds[name]
        except KeyError:
            raise BillingError("bad_kind", "no subscription kind %r here" % (name,))

    def current(self, tx, kind, owner, lock=False):
        """The owner's latest subscription of a kind (None when there never was one)."""
        row = tx.execute(_SUB_SELECT + " WHERE kind=? AND owner=? ORDER BY gen DESC LIMIT 1"
                         + (" FOR UPDATE" if lock else ""), (kind, owner)).fetchone()
        return Sub(row) if row else None

    def sub(self, tx, sub_id, lock=False):
        row = tx.execute(_SUB_SELECT + " WHERE id=?" + (" FOR UPDATE" if lock else ""),
                         (sub_id,)).fetchone()
        return Sub(row) if row else None

    def create(self, tx, kind, owner, plan, anchor, auto=True, now=None, prepaid=False):
        """A new subscription of owner to a plan (a dict from plan()), anchored at anchor.
        Period 0 is due at once (enrolment) unless prepaid: then the time up to the anchor
        was granted and period 0 is the first renewal (a licence issued with an expiry)."""
        k = self._kind(kind)
        if type(owner) is not str or not 1 <= len(owner) <= 64:
            raise BillingError("bad_owner", "owner must be text of 1..64 characters")
        if type(anchor) is not int or anchor < 0:
            raise BillingError("bad_time", "the anchor must be a Unix time")
        row = tx.execute("SELECT gen FROM billing_subs WHERE kind=? AND owner=?"
                         " ORDER BY gen DESC LIMIT 1", (kind, owner)).fetchone()
        gen = (row[0] if row else 0) + 1
        sid = tx.execute("INSERT INTO billing_ids (name, value) VALUES ('sub', 1)"
                         " ON CONFLICT (name) DO UPDATE SET value = billing_ids.value + 1"
                         " RETURNING value").fetchone()[0]
        # The first period of an enrolment is charged at once: no reminder before it. A grant
        # skips the reminders whose time was already past when it was made.
        made = anchor if now is None else now
        rem_done = sum(1 for lead in k.leads if anchor - lead < made) if prepaid \
            else len(k.leads)
        sub = Sub((sid, kind, owner, gen, plan["name"], anchor, plan["cycle"], plan["fee"],
                   1 if auto else 0, "active", 0, rem_done, anchor if prepaid else None, None,
                   None, None, made))
        sub.due_at = self._due(sub)
        tx.execute("INSERT INTO billing_subs (" + ", ".join(_SUB_COLS) + ") VALUES ("
                   + ", ".join("?" * len(_SUB_COLS)) + ")",
                   tuple(getattr(sub, c) for c in _SUB_COLS))
        return sub

    def set_auto(self, tx, sub, auto):
        """Auto-renewal on or off; off: the paid period runs out and nothing more is
        charged (not even a retry of a period still unpaid). Off before anything was paid
        ends the subscription at once."""
        sub.auto = 1 if auto else 0
        if not auto and sub.paid_end is None:
            sub.state = "ended"
        sub.due_at = self._due(sub) if sub.state == "active" else None
        self._write(tx, sub)
        return sub

    def end(self, tx, sub):
        """Closes a subscription now (replaced by a new one): nothing more is charged."""
        sub.auto = 0
        sub.state = "ended"
        sub.due_at = None
        self._write(tx, sub)

    def _write(self, tx, sub):
        tx.execute("UPDATE billing_subs SET auto=?, state=?, next_n=?, rem_done=?, paid_end=?,"
                   " due_at=?, claim=?, claim_at=? WHERE id=?",
                   (sub.auto, sub.state, sub.next_n, sub.rem_done, sub.paid_end, sub.due_at,
                    sub.claim, sub.claim_at, sub.id))

    @staticmethod
    def _runs_out(sub):
        # Auto-renewal off stops renewals; the first period of an enrolment is still charged.
        return not sub.auto and sub.paid_end is not None

    def _due(self, sub, row=None):
        """When the scheduler next has something to do for an active subscription: the next
        reminder, the next period's start, or the next retry of the unpaid one (row)."""
        s = sub.start(sub.next_n)
        if self._runs_out(sub):
            return s  # the paid time runs out: the subscription ends then
        if row is not None and row["first_try"] is not None:
            return next_try(row["first_try"], row["slot"])
        leads = self.kinds[sub.kind].leads
        if sub.rem_done < len(leads):
            return s - leads[sub.rem_done]
        return s

    # ------------------------------------------------------------ periods

    def _period(self, tx, sub_id, start):
        row = tx.execute("SELECT " + ", ".join(_PERIOD_COLS) + " FROM billing_periods"
                         " WHERE sub=? AND start=?", (sub_id, start)).fetchone()
        return dict(zip(_PERIOD_COLS, row, strict=True)) if row else None

    def _advance(self, tx, sub, start, now, events, src, tries, amt):
        """Period next_n is paid: the subscription moves on to the next one."""
        end = sub.start(sub.next_n + 1)
        sub.next_n += 1
        sub.paid_end = end
        sub.rem_done = 0
        sub.due_at = self._due(sub)
        k = self.kinds[sub.kind]
        if k.on_paid is not None:
            k.on_paid(tx, sub, start, end, now)
        events.append(_event("paid", sub, start, now, end=end, src=src, tries=tries, amt=amt))

    def pay_now(self, tx, sub, src, now, amt=None, ref=None):
        """Pays the next unpaid period of sub at once (a counter charge, an operator's renew),
        in the caller's transaction; returns (start, end). ref (unique: a terminal's charge)
        names what paid it. A period whose gateway attempt is in flight is refused
        (renewal_in_progress): paying it twice is what must not happen."""
        if sub.state != "active":
            raise BillingError("not_active", "the subscription is %s" % sub.state)
        k = sub.next_n
        start = sub.start(k)
        end = sub.start(k + 1)
        amt = sub.fee if amt is None else amt
        row = self._period(tx, sub.id, start)
        if row is None:
            tx.execute("INSERT INTO billing_periods (sub, start, n, end_at, st, tries, slot,"
                       " first_try, try_at, amt, src, ref, claim, paid_at)"
                       " VALUES (?, ?, ?, ?, 'paid', 1, -1, ?, ?, ?, ?, ?, NULL, ?)",
                       (sub.id, start, k, end, now, now, amt, src, ref, now))
            tries = 1
        else:
            done = tx.execute("UPDATE billing_periods SET st='paid', tries=tries+1, src=?,"
                              " ref=?, amt=?, try_at=?, paid_at=? WHERE sub=? AND start=?"
                              " AND st IN ('due', 'failed')",
                              (src, ref, amt, now, now, sub.id, start)).rowcount
            if done != 1:
                raise BillingError("renewal_in_progress",
                                   "a payment of this period is being made right now")
            tries = row["tries"] + 1
        tx.execute("INSERT INTO billing_attempts (sub, start, try, at, src, amt, ok)"
                   " VALUES (?, ?, ?, ?, ?, ?, 1)", (sub.id, start, tries, now, src, amt))
        events = []
        self._advance(tx, sub, start, now, events, src, tries, amt)
        self._write(tx, sub)
        return start, end

    def period_by_ref(self, tx, ref):
        """(sub, start, end) of the period that `ref` paid, or None."""
        row = tx.execute("SELECT sub, start, end_at FROM billing_periods WHERE ref=?",
                         (ref,)).fetchone()
        return (row[0], row[1], row[2]) if row else None

    # ------------------------------------------------------------ the scheduler

    def tick(self, kind, now, gateway, only=None):
        """Does everything due at `now` for every active subscription of a kind (or only the
        subscription `only`): reminders, charges of periods that have started, retries,
        lapses and ends. Returns the events, in the order they happened."""
        self._kind(kind)
        # The stored balance pays only where host_sim/members.py made its table.
        self.members = "bal" in self.store.columns("members")
        events = []
        self._release_dead_claims(kind, now)
        for _ in range(MAX_PASSES):
            claims = []
            with self.store.transaction() as tx:
                sql = _SUB_SELECT + " WHERE kind=? AND due_at <= ?" \
                    " AND (claim IS NULL OR claim_at < ?)"
                args = [kind, now, int(self.wall()) - STALE_CLAIM_S]
                if only is not None:
                    sql += " AND id=?"
                    args.append(only)
                sql += " ORDER BY due_at, id LIMIT ? FOR UPDATE SKIP LOCKED"
                args.append(self.batch)
                subs = [Sub(r) for r in tx.execute(sql, args).fetchall()]
                for sub in subs:
                    self._step(tx, sub, now, claims, events)
                    self._write(tx, sub)
            if not subs:
                return events
            for c in claims:
                c.ok = bool(gateway.pay(c.key, c.amt))
            if claims:
                with self.store.transaction() as tx:
                    for c in claims:
                        self._settle(tx, c, now, events)
        raise BillingError("stuck", "the tick did not settle after %d batches" % MAX_PASSES)

    def _release_dead_claims(self, kind, now):
        """Marks stale the claims of schedulers on this machine whose process is gone (killed
        between a claim and its outcome), so this tick takes them over now."""
        with self.store.transaction() as tx:
            rows = tx.execute("SELECT id, claim FROM billing_subs WHERE kind=? AND due_at <= ?"
                              " AND claim IS NOT NULL FOR UPDATE SKIP LOCKED",
                              (kind, now)).fetchall()
            for sid, token in rows:
                if owner_dead(token):
                    tx.execute("UPDATE billing_subs SET claim_at=0 WHERE id=? AND claim=?",
                               (sid, token))

    def _step(self, tx, sub, now, claims, events):
        """Moves one subscription on as far as `now` allows without asking the gateway; a
        gateway attempt is claimed and left in `claims`."""
        kind = self.kinds[sub.kind]
        while True:
            k = sub.next_n
            start = sub.start(k)
            if sub.claim is not None:
                # Only a stale claim is selected: its scheduler died between claim and outcome.
                row = self._period(tx, sub.id, start)
                if row is not None and row["st"] == "charging":
                    token = _token()
                    tx.execute("UPDATE billing_periods SET claim=? WHERE sub=? AND start=?"
                               " AND st='charging' AND claim=?",
                               (token, sub.id, start, row["claim"]))
                    sub.claim, sub.claim_at = token, int(self.wall())
                    claims.append(Claim(sub, start, row["tries"], row["slot"], row["amt"],
                                        token, row["try_at"]))
                    return
                sub.claim = sub.claim_at = None
            if self._runs_out(sub):
                if start <= now:
                    sub.state, sub.due_at = "ended", None
                    events.append(_event("ended", sub, start, now))
                else:
                    sub.due_at = start
                return
            leads = kind.leads
            while sub.rem_done < len(leads) and start - leads[sub.rem_done] <= now:
                lead = leads[sub.rem_done]
                if tx.execute("INSERT INTO billing_reminders (sub, start, lead, at)"
                              " VALUES (?, ?, ?, ?) ON CONFLICT (sub, start, lead) DO NOTHING",
                              (sub.id, start, lead, now)).rowcount:
                    events.append(_event("reminder", sub, start, now, lead=lead))
                sub.rem_done += 1
            if start > now:
                sub.due_at = self._due(sub)
                return
            token = _token()
            # The first try of a period: inserting its row, already claimed, is the claim (the
            # key (sub, start) admits one). A row that exists is a retry: claimed below.
            if tx.execute("INSERT INTO billing_periods (sub, start, n, end_at, st, tries, slot,"
                          " first_try, try_at, amt, src, ref, claim, paid_at) VALUES"
                          " (?, ?, ?, ?, 'charging', 1, 0, ?, ?, ?, NULL, NULL, ?, NULL)"
                          " ON CONFLICT (sub, start) DO NOTHING",
                          (sub.id, start, k, sub.start(k + 1), now, now, sub.fee,
                           token)).rowcount == 1:
                tries, slot = 1, 0
            else:
                row = self._period(tx, sub.id, start)
                if row["st"] not in ("due", "failed"):
                    raise BillingError("inconsistent", "subscription %d period %d is %s"
                                       % (sub.id, start, row["st"]))
                first = row["first_try"]
                if first is None:
                    first, slot = now, row["slot"] + 1
                else:
                    if next_try(first, row["slot"]) > now:
                        sub.due_at = self._due(sub, row)
                        return
                    if now - first >= RETRY_WINDOW_S:
                        # a host back after the 14 days makes no late try: the period lapses
                        _lapse(sub, start, now, row["tries"], events)
                        return
                    slot = slot_at(first, now)  # the slots a late tick missed are not made up
                tries = row["tries"] + 1
                if tx.execute("UPDATE billing_periods SET st='charging', claim=?, tries=?,"
                              " slot=?, first_try=?, try_at=? WHERE sub=? AND start=?"
                              " AND st IN ('due', 'failed') AND tries=?",
                              (token, tries, slot, first, now, sub.id, start,
                               row["tries"])).rowcount != 1:
                    raise BillingError("inconsistent", "lost the claim of subscription %d"
                                       " period %d" % (sub.id, start))
            if kind.balance is not None and self.members and kind.balance(tx, sub, start, now):
                tx.execute("UPDATE billing_periods SET st='paid', claim=NULL, src=?, paid_at=?"
                           " WHERE sub=? AND start=? AND claim=?",
                           (BALANCE, now, sub.id, start, token))
                tx.execute("INSERT INTO billing_attempts (sub, start, try, at, src, amt, ok)"
                           " VALUES (?, ?, ?, ?, ?, ?, 1)",
                           (sub.id, start, tries, now, BALANCE, sub.fee))
                self._advance(tx, sub, start, now, events, BALANCE, tries, sub.fee)
                continue
            sub.claim, sub.claim_at = token, int(self.wall())
            claims.append(Claim(sub, start, tries, slot, sub.fee, token, now))
            return

    def _settle(self, tx, c, now, events):
        """Writes a gateway attempt's outcome, if the claim is still ours."""
        st = "paid" if c.ok else "failed"
        done = tx.execute("UPDATE billing_periods SET st=?, claim=NULL, src=?, paid_at=?"
                          " WHERE sub=? AND start=? AND st='charging' AND claim=?",
                          (st, GATEWAY, c.at if c.ok else None, c.sub.id, c.start,
                           c.token)).rowcount
        if done != 1:
            return  # taken over by another scheduler after we stalled: its outcome counts
        tx.execute("INSERT INTO billing_attempts (sub, start, try, at, src, amt, ok)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sub, start, try) DO NOTHING",
                   (c.sub.id, c.start, c.try_no, c.at, GATEWAY, c.amt, int(c.ok)))
        sub = self.sub(tx, c.sub.id, lock=True)
        sub.claim = sub.claim_at = None
        if c.ok:
            self._advance(tx, sub, c.start, now, events, GATEWAY, c.try_no, c.amt)
        else:
            events.append(_event("failed", sub, c.start, now, tries=c.try_no, amt=c.amt))
            if c.slot + 1 >= len(RETRY_SLOTS):
                _lapse(sub, c.start, now, c.try_no, events)
            else:
                row = self._period(tx, sub.id, c.start)
                sub.due_at = self._due(sub, row)
        self._write(tx, sub)

    # ------------------------------------------------------------ reports

    def ledger(self, tx, kind, owner=None):
        """Every charged period of a kind, by owner then start: [{owner, plan, start, end, st,
        tries, amt, src, paid_at}] with st paid | failed | due (due also while an attempt is in
        flight)."""
        sql = ("SELECT s.owner, s.plan, p.start, p.end_at, p.st, p.tries, p.amt, p.src,"
               " p.paid_at, s.id FROM billing_periods p JOIN billing_subs s ON s.id = p.sub"
               " WHERE s.kind=?")
        args = [kind]
        if owner is not None:
            sql += " AND s.owner=?"
            args.append(owner)
        out = []
        for r in tx.execute(sql + " ORDER BY s.owner, p.start, s.id", args).fetchall():
            st = r[4] if r[4] in ("paid", "failed") else "due"
            out.append({"owner": r[0], "plan": r[1], "start": r[2], "end": r[3], "st": st,
                        "tries": r[5], "amt": r[6], "src": r[7], "paid_at": r[8], "sub": r[9]})
        return out

    def reminders(self, tx, kind, owner=None):
        """Every reminder recorded: [{owner, start, lead, at}] by owner, start, lead first."""
        sql = ("SELECT s.owner, r.start, r.lead, r.at FROM billing_reminders r"
               " JOIN billing_subs s ON s.id = r.sub WHERE s.kind=?")
        args = [kind]
        if owner is not None:
            sql += " AND s.owner=?"
            args.append(owner)
        rows = tx.execute(sql + " ORDER BY s.owner, r.start, r.lead DESC", args).fetchall()
        return [{"owner": r[0], "start": r[1], "lead": r[2], "at": r[3]} for r in rows]

    def attempts(self, tx, kind):
        """Every payment attempt: [{sub, owner, start, try, at, src, amt, ok}]."""
        rows = tx.execute("SELECT a.sub, s.owner, a.start, a.try, a.at, a.src, a.amt, a.ok"
                          " FROM billing_attempts a JOIN billing_subs s ON s.id = a.sub"
                          " WHERE s.kind=? ORDER BY a.sub, a.start, a.try", (kind,)).fetchall()
        return [{"sub": r[0], "owner": r[1], "start": r[2], "try": r[3], "at": r[4],
                 "src": r[5], "amt": r[6], "ok": bool(r[7])} for r in rows]

    def subs(self, tx, kind, owner=None):
        sql = _SUB_SELECT + " WHERE kind=?"
        args = [kind]
        if owner is not None:
            sql += " AND owner=?"
            args.append(owner)
        return [Sub(r) for r in tx.execute(sql + " ORDER BY owner, gen", args).fetchall()]
