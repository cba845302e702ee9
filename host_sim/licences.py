# The store's service licence (SPEC 8.5), host side: plans, one licence per terminal signed by
# the keystore's root key, and the subscription that renews it on the billing engine
# (host_sim/billing.py, the same engine as VIP memberships: exactly once per period, reminders
# 30, 7 and 1 days before expiry). Each new licence is pushed to its terminal through the host
# outbox in the transaction that made it, and again after every hello.
#
# Licence: "PL1:" + base45(COSE_Sign1) by the root key, payload
#   {"ver": uint (only grows per device), "dev": device id, "plan": text, "exp": int,
#    "grace": uint seconds}
#
#   python -m host_sim licence --db DB --keystore DIR plan NAME --price MINOR
#       --cycle month|quarter|year [--grace-s N]
#   python -m host_sim licence --db DB --keystore DIR issue DEV --plan P [--exp UNIX] [--now T]
#   python -m host_sim licence --db DB --keystore DIR show DEV
#   python -m host_sim licence --db DB --keystore DIR renew DEV [--now T]
#   python -m host_sim licence --db DB --keystore DIR tick --now UNIX [--fail-rate P --seed N]
# JSON lines out; exit 0, 1 on failure (message on stderr), 2 on bad arguments.
import json
import sys
import time

import cbor2

from host_sim import billing, cli, periods, service
from host_sim.billing import BillingError, Gateway
from protocol import base45

KIND = "licence"
PREFIX = "PL1:"
LEADS = (30 * billing.DAY, 7 * billing.DAY, 1 * billing.DAY)
DEFAULT_GRACE_S = 7 * billing.DAY

SCHEMA = """
CREATE TABLE IF NOT EXISTS licences (
    dev       TEXT PRIMARY KEY,
    ver       INTEGER NOT NULL,
    plan      TEXT NOT NULL,
    exp       INTEGER NOT NULL,
    grace     INTEGER NOT NULL,
    cose      BLOB NOT NULL,
    issued_at INTEGER NOT NULL
);
"""


def text_form(cose):
    return PREFIX + base45.encode(bytes(cose))


def payload_of(cose):
    """The payload of a licence's COSE_Sign1 (no signature check: for our own outputs)."""
    msg = cbor2.loads(bytes(cose))
    if isinstance(msg, cbor2.CBORTag):
        msg = msg.value
    return cbor2.loads(msg[2])


def current_licence(tx, dev):
    """{"ver", "dev", "plan", "exp", "grace", "cose", "issued_at"} of the device, or None."""
    row = tx.execute("SELECT ver, plan, exp, grace, cose, issued_at FROM licences WHERE dev=?",
                     (dev,)).fetchone()
    if row is None:
        return None
    return {"ver": row[0], "dev": dev, "plan": row[1], "exp": row[2], "grace": row[3],
            "cose": bytes(row[4]), "issued_at": row[5]}


class LicenceBook:
    """Licence plans, subscriptions and issued licences over one Store. The keystore (an
    issuance.Keystore) signs; it is needed only where a licence is made."""

    def __init__(self, store, keystore=None, wall=time.time):
        self.store = store
        self.keystore = keystore
        store.schema(SCHEMA + service.OUTBOX_SCHEMA)
        self.engine = billing.Engine(
            store, [billing.Kind(KIND, LEADS, on_paid=self._on_paid)], wall=wall)

    # ------------------------------------------------------------ plans

    def set_plan(self, name, price, cycle, grace=DEFAULT_GRACE_S):
        with self.store.transaction() as tx:
            return self.engine.set_plan(tx, KIND, name, price, cycle, grace)

    # ------------------------------------------------------------ licences

    def _sign(self, payload):
        if self.keystore is None:
            raise BillingError("no_keystore", "a licence is signed by the keystore's root key:"
                               " give --keystore")
        return self.keystore.sign_with_root(payload)

    def _make(self, tx, dev, plan, exp, grace, now):
        """Signs the device's next licence, stores it and queues its push, in tx."""
        row = tx.execute("SELECT ver FROM licences WHERE dev=? FOR UPDATE", (dev,)).fetchone()
        ver = (row[0] if row else 0) + 1
        cose = self._sign({"ver": ver, "dev": dev, "plan": plan, "exp": exp, "grace": grace})
        done = tx.execute(
            "INSERT INTO licences (dev, ver, plan, exp, grace, cose, issued_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dev) DO UPDATE SET ver = excluded.ver,"
            " plan = excluded.plan, exp = excluded.exp, grace = excluded.grace,"
            " cose = excluded.cose, issued_at = excluded.issued_at"
            " WHERE licences.ver < excluded.ver",
            (dev, ver, plan, exp, grace, cose, now)).rowcount
        if done != 1:
            raise BillingError("busy", "another licence of %s was issued at the same time" % dev)
        service.push(tx, dev, "licence", {"lic": cose}, now)
        return {"ver": ver, "dev": dev, "plan": plan, "exp": exp, "grace": grace, "cose": cose,
                "issued_at": now}

    def _on_paid(self, tx, sub, start, end, now):
        # A paid period: the licence now runs to the end of the time paid for.
        plan = self.engine.plan(tx, KIND, sub.plan)
        grace = plan["grace"] if plan else DEFAULT_GRACE_S
        self._make(tx, sub.owner, sub.plan, end, grace, now)

    def _check_device(self, tx, dev):
        if type(dev) is not str or not 1 <= len(dev) <= 64:
            raise BillingError("bad_device", "device id must be text of 1..64 characters")
        if self.has_devices and tx.execute("SELECT 1 FROM devices WHERE device_id=?",
                                           (dev,)).fetchone() is None:
            raise BillingError("unknown_device", "no registered terminal %r" % (dev,))

    @property
    def has_devices(self):
        return "device_id" in self.store.columns("devices")

    def issue(self, dev, plan_name, now, exp=None, gateway=None):
        """Subscribes a terminal to a plan (replacing its subscription) and issues its licence.
        Without exp the first period is charged at once and the licence runs to its end; with
        exp the time up to exp is granted and renewals begin there. Returns the licence
        (None while its first charge is unpaid)."""
        if self.keystore is None:
            self._sign(None)  # refuses before anything is written
        with self.store.transaction() as tx:
            self._check_device(tx, dev)
            plan = self.engine.plan(tx, KIND, plan_name)
            if plan is None:
                raise BillingError("unknown_plan", "no licence plan %r" % (plan_name,))
            if exp is not None and exp <= now:
                raise BillingError("bad_time", "exp %d is not after now %d" % (exp, now))
            cur = self.engine.current(tx, KIND, dev, lock=True)
            if cur is not None and cur.state == "active":
                self.engine.end(tx, cur)
            if exp is None:
                sub = self.engine.create(tx, KIND, dev, plan, now, now=now)
            else:
                sub = self.engine.create(tx, KIND, dev, plan, exp, now=now, prepaid=True)
                self._make(tx, dev, plan["name"], exp, plan["grace"], now)
        if exp is None:
            self.engine.tick(KIND, now, gateway or Gateway(), only=sub.id)
        with self.store.read() as tx:
            lic = current_licence(tx, dev)
        return lic if lic is not None and lic["plan"] == plan_name else None

    def renew(self, dev, now):
        """An operator's renewal: the next period is paid now (recorded as paid by hand) and a
        licence with the later expiry is issued and pushed."""
        with self.store.transaction() as tx:
            sub = self.engine.current(tx, KIND, dev, lock=True)
            if sub is None or sub.state != "active":
                raise BillingError("not_subscribed", "%s has no running subscription: issue"
                                   " a licence" % (dev,))
            self.engine.pay_now(tx, sub, billing.MANUAL, now)
            return current_licence(tx, dev)

    def tick(self, now, gateway):
        return self.engine.tick(KIND, now, gateway)

    def show(self, dev):
        with self.store.read() as tx:
            lic = current_licence(tx, dev)
            sub = self.engine.current(tx, KIND, dev)
        if lic is None and sub is None:
            raise BillingError("unknown", "%s has no licence" % (dev,))
        out = {"dev": dev}
        if lic is not None:
            out.update(_licence_json(lic))
        if sub is not None:
            out["sub"] = {"plan": sub.plan, "state": sub.state, "auto": bool(sub.auto),
                          "price": sub.fee, "cycle": sub.cycle, "paid_end": sub.paid_end,
                          "renews_at": sub.start(sub.next_n) if sub.state == "active"
                          and sub.auto else None}
        return out


def _licence_json(lic):
    return {"dev": lic["dev"], "ver": lic["ver"], "plan": lic["plan"], "exp": lic["exp"],
            "grace": lic["grace"], "issued_at": lic["issued_at"],
            "text": text_form(lic["cose"])}


class Licences:
    """The licence service (host_sim/service.py shape): a terminal's hello gets its licence."""

    name = "licences"
    SCHEMA = billing.SCHEMA + SCHEMA
    up = {}

    def __init__(self, ctx):
        self.store = getattr(ctx, "store", ctx)

    def on_hello(self, tx, msg):
        lic = current_licence(tx, msg.device_id)
        if lic is None:
            return []
        return [service.Out(msg.device_id, "licence", {"lic": lic["cose"]})]


# ---------------------------------------------------------------- command line

def _print(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")


def add_parser(sub):
    p = sub.add_parser("licence", help="service licences: plans, issue, renew, tick")
    p.add_argument("--keystore", help="the issuer keystore whose root key signs licences")
    cmd = p.add_subparsers(dest="licence_command", required=True)
    pl = cmd.add_parser("plan", help="add or change a plan")
    pl.add_argument("name")
    pl.add_argument("--price", type=cli.amount, required=True, help="minor units per period")
    pl.add_argument("--cycle", choices=periods.CYCLES, required=True)
    pl.add_argument("--grace-s", type=cli.amount, default=DEFAULT_GRACE_S,
                    help="seconds a terminal keeps working past exp (default 7 days)")
    i = cmd.add_parser("issue", help="subscribe a terminal and issue its licence")
    i.add_argument("dev")
    i.add_argument("--plan", required=True)
    i.add_argument("--exp", type=cli.unix_time, help="grant up to this time (no charge now)")
    i.add_argument("--now", type=cli.unix_time, help="the time of issue (default: now)")
    s = cmd.add_parser("show", help="a terminal's licence and subscription")
    s.add_argument("dev")
    r = cmd.add_parser("renew", help="pay the next period now and push the later licence")
    r.add_argument("dev")
    r.add_argument("--now", type=cli.unix_time)
    k = cmd.add_parser("tick", help="auto-renewals, reminders and lapses due at --now")
    k.add_argument("--now", type=cli.unix_time, required=True)
    k.add_argument("--fail-rate", type=cli.rate, default=0.0)
    k.add_argument("--seed", type=int, default=0)
    cli.db_anywhere(p, cmd, "SQLite file or postgresql:// URL")
    p.set_defaults(fn=run, parser=p)
    return p


def run(args):
    from host_sim.issuance import IssuanceError, Keystore
    from host_sim.store import StoreError, open_store

    missing = cli.no_db("host_sim licence", args)
    if missing is not None:
        return missing
    c = args.licence_command
    if c in ("issue", "renew", "tick") and not args.keystore:
        args.parser.error("licence %s needs --keystore (its root key signs licences)" % c)
    ks = None
    try:
        if args.keystore:
            ks = Keystore(args.keystore)
        store = open_store(args.db)
    except (IssuanceError, StoreError) as e:
        sys.stderr.write("host_sim: licence: %s\n" % e)
        return 1
    try:
        book = LicenceBook(store, ks)
        now = getattr(args, "now", None)
        if now is None:
            now = int(time.time())
        if c == "plan":
            p = book.set_plan(args.name, args.price, args.cycle, args.grace_s)
            _print({"plan": p["name"], "price": p["fee"], "cycle": p["cycle"],
                    "grace": p["grace"]})
        elif c == "issue":
            lic = book.issue(args.dev, args.plan, now, exp=args.exp)
            if lic is None:
                raise BillingError("unpaid", "the first period of %s is not paid" % args.dev)
            _print(_licence_json(lic))
        elif c == "show":
            _print(book.show(args.dev))
        elif c == "renew":
            _print(_licence_json(book.renew(args.dev, now)))
        elif c == "tick":
            for ev in book.tick(now, Gateway(args.fail_rate, args.seed)):
                out = {"act": ev["act"], "dev": ev["owner"], "plan": ev["plan"]}
                out.update({k: v for k, v in ev.items()
                            if k not in ("act", "kind", "owner", "plan")})
                _print(out)
        return 0
    except (BillingError, IssuanceError) as e:
        sys.stderr.write("host_sim: licence %s\n" % e)
        return 1
    finally:
        store.close()
        if ks is not None:
            ks.close()
