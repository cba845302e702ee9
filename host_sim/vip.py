# VIP memberships with auto-renewal (SPEC 8.2) on the billing engine (host_sim/billing.py):
# tiers, enrolment, cancel, the scheduler's tick, the ledger and reminders, the VIP expiry for
# member_info, and the `vip` charge of a terminal (F4 at the counter). Rules for shop owners:
# docs/vip.md.
#
#   python -m host_sim vip --db PATH tier NAME --fee MINOR --cycle month|quarter|year
#   python -m host_sim vip --db PATH enrol MID TIER --start UNIX [--no-auto]
#   python -m host_sim vip --db PATH cancel MID
#   python -m host_sim vip --db PATH tick --now UNIX [--fail-rate P --seed N]
#   python -m host_sim vip --db PATH ledger     # {"mid","tier","start","end","st","tries","amt"}
#   python -m host_sim vip --db PATH reminders  # {"mid","start","at"}
# JSON lines out; exit 0, 1 on failure (message on stderr), 2 on bad arguments.
import json
import sys
import time

from host_sim import billing, cli, members, periods, service
from host_sim.billing import BillingError, Gateway
from protocol.messages import MAX_VIP_TIERS

KIND = "vip"
REMINDER_LEAD = 5 * billing.DAY


def pay_from_balance(tx, sub, start, now):
    """A renewal from the member's stored balance when it covers the fee: the debit and its
    history row (host_sim/members.py) in the claim's transaction. A blocked or unknown member
    pays through the gateway."""
    m = members.member(tx, sub.owner, lock=True)
    if m is None or m["st"] != members.ACTIVE or m["bal"] < sub.fee:
        return False
    members.record(tx, m, now, "vip", bal=-sub.fee,
                   note="VIP %s from %s" % (sub.plan, periods.iso(start)))
    return True


def engine(store, **kw):
    return billing.Engine(store, [billing.Kind(KIND, (REMINDER_LEAD,),
                                               balance=pay_from_balance)], **kw)


def vip_expiry(tx, mid):
    """The end of the member's last paid VIP period (member_info's vip_exp), None when the
    member never paid one."""
    row = tx.execute("SELECT MAX(paid_end) FROM billing_subs WHERE kind=? AND owner=?",
                     (KIND, mid)).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def vip_tiers(tx):
    """The tiers for the terminals' `config` key vip_tiers, cheapest first (F4 then 1..9)."""
    rows = tx.execute("SELECT name, fee, cycle FROM billing_plans WHERE kind=?"
                      " ORDER BY fee, name", (KIND,)).fetchall()
    return [{"name": r[0], "fee": r[1], "cycle": r[2]} for r in rows]


def set_tier(eng, store, name, fee, cycle, now):
    """Adds or changes a tier and sends every registered terminal the new `vip_tiers` list
    (a `config` through the host outbox, in the same transaction). At most 9 tiers: F4 then a
    digit picks one."""
    has_devices = "device_id" in store.columns("devices")
    if has_devices:
        store.schema(service.OUTBOX_SCHEMA)
    with store.transaction() as tx:
        if eng.plan(tx, KIND, name) is None and len(eng.plans(tx, KIND)) >= MAX_VIP_TIERS:
            raise BillingError("too_many_tiers", "a till offers at most %d tiers"
                               % MAX_VIP_TIERS)
        plan = eng.set_plan(tx, KIND, name, fee, cycle)
        body = {"vip_tiers": vip_tiers(tx)}
        if has_devices:
            for (dev,) in tx.execute("SELECT device_id FROM devices ORDER BY device_id"):
                service.push(tx, dev, "config", body, now)
    return plan


def membership(eng, sub, start, end):
    return {"tier": sub.plan, "start": start, "end": end}


def enrol(eng, store, mid, tier, start, auto=True, gateway=None):
    """Enrols mid in a tier anchored at `start` and charges the first period at once (at
    `start`). A member whose auto-renewing membership is still running must cancel first;
    a cancelled one still running is replaced. Returns (sub, events)."""
    with store.transaction() as tx:
        plan = eng.plan(tx, KIND, tier)
        if plan is None:
            raise BillingError("unknown_tier", "no VIP tier %r" % (tier,))
        cur = eng.current(tx, KIND, mid, lock=True)
        if cur is not None and cur.state == "active":
            if cur.auto:
                raise BillingError("already_member", "%s is a %s member renewing on %s:"
                                   " cancel first" % (mid, cur.plan,
                                                      periods.iso(cur.start(cur.next_n))))
            eng.end(tx, cur)
        sub = eng.create(tx, KIND, mid, plan, start, auto=auto)
    events = eng.tick(KIND, start, gateway or Gateway(), only=sub.id)
    return sub, events


def cancel(eng, store, mid):
    """Auto-renewal off: the paid period runs out, nothing more is charged. Returns the sub."""
    with store.transaction() as tx:
        cur = eng.current(tx, KIND, mid, lock=True)
        if cur is None or cur.state != "active":
            raise BillingError("not_member", "%s has no running VIP membership" % (mid,))
        return eng.set_auto(tx, cur, False)


class Vip:
    """The VIP service (host_sim/service.py shape): decides `vip` charges from terminals."""

    name = "vip"
    SCHEMA = billing.SCHEMA
    up = {}

    def __init__(self, ctx):
        self.engine = engine(getattr(ctx, "store", ctx))

    def on_hello(self, tx, msg):
        """A terminal that says hello gets the tiers its F4 key offers."""
        tiers = vip_tiers(tx)
        return [service.Out(msg.device_id, "config", {"vip_tiers": tiers})] if tiers else []

    def on_charge(self, tx, charge):
        """A charge of kind vip: mem enrols in or renews tier `tier`, amt = the tier's fee.
        Enrolment (no running membership) anchors a new one at the charge time; renewal pays
        the next unpaid period of the running one; another tier starts a new membership when
        the paid time of the running one ends. Declines: unknown_tier, wrong_fee,
        renewal_in_progress. A repeat of a charge (same cid) pays nothing again."""
        # charge: the dict the charge processor decides (device_id, store_id, cid, body, now).
        body = charge["body"]
        if body.get("kind") != KIND:
            return None, {}
        eng = self.engine
        plan = eng.plan(tx, KIND, body["tier"])
        if plan is None:
            return "unknown_tier", {}
        if body["amt"] != plan["fee"]:
            return "wrong_fee", {}
        # The charge's key is (device, cid), as in the charges table.
        ref = "%s/%s" % (charge["device_id"], bytes(body["cid"]).hex())
        seen = eng.period_by_ref(tx, ref)
        if seen is not None:
            sub = eng.sub(tx, seen[0])
            return None, {"vip": membership(eng, sub, seen[1], seen[2])}
        mid, at = body["mem"], int(body["at"])
        sub = eng.current(tx, KIND, mid, lock=True)
        if sub is not None and sub.state == "active" and sub.plan != plan["name"]:
            # A change of tier begins when the time already paid for runs out.
            anchor = max(at, sub.paid_end or at)
            eng.set_auto(tx, sub, False)
            sub = eng.create(tx, KIND, mid, plan, anchor, now=at)
        elif sub is None or sub.state != "active":
            sub = eng.create(tx, KIND, mid, plan, at, now=at)
        try:
            start, end = eng.pay_now(tx, sub, billing.COUNTER, at, amt=body["amt"], ref=ref)
        except BillingError as e:
            return e.code, {}
        return None, {"vip": membership(eng, sub, start, end)}


# ---------------------------------------------------------------- command line

def _ledger_line(e):
    return {"mid": e["owner"], "tier": e["plan"], "start": e["start"], "end": e["end"],
            "st": e["st"], "tries": e["tries"], "amt": e["amt"]}


def _event_line(ev):
    out = {"act": ev["act"], "mid": ev["owner"], "tier": ev["plan"]}
    for k, v in ev.items():
        if k not in ("act", "kind", "owner", "plan"):
            out[k] = v
    return out


def _print(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")


def add_parser(sub):
    p = sub.add_parser("vip", help="VIP memberships: tiers, enrol, cancel, tick, ledger")
    cmd = p.add_subparsers(dest="vip_command", required=True)
    t = cmd.add_parser("tier", help="add or change a tier")
    t.add_argument("name")
    t.add_argument("--fee", type=cli.amount, required=True, help="minor units per period")
    t.add_argument("--cycle", choices=periods.CYCLES, required=True)
    e = cmd.add_parser("enrol", help="enrol a member; the first period is charged at once")
    e.add_argument("mid")
    e.add_argument("tier")
    e.add_argument("--start", type=cli.unix_time, required=True, help="the anchor (Unix time)")
    e.add_argument("--no-auto", action="store_true", help="no auto-renewal")
    c = cmd.add_parser("cancel", help="auto-renewal off; the paid period runs out")
    c.add_argument("mid")
    k = cmd.add_parser("tick", help="do what is due at --now")
    k.add_argument("--now", type=cli.unix_time, required=True)
    k.add_argument("--fail-rate", type=cli.rate, default=0.0,
                   help="share of gateway attempts that fail (0..1)")
    k.add_argument("--seed", type=int, default=0)
    cmd.add_parser("ledger", help="every charged period")
    cmd.add_parser("reminders", help="every reminder sent")
    cli.db_anywhere(p, cmd, "SQLite file or postgresql:// URL")
    p.set_defaults(fn=run)
    return p


def run(args):
    from host_sim.store import StoreError, open_store

    missing = cli.no_db("host_sim vip", args)
    if missing is not None:
        return missing
    try:
        store = open_store(args.db)
    except StoreError as e:
        sys.stderr.write("host_sim: %s\n" % e)
        return 1
    try:
        eng = engine(store)
        return _run(eng, store, args)
    except BillingError as e:
        sys.stderr.write("host_sim: vip %s\n" % e)
        return 1
    except UnicodeError:  # a name from the command line that is not valid text
        sys.stderr.write("host_sim: vip: a name is not valid UTF-8 text\n")
        return 1
    except Exception as e:
        if not store.database_error(e):
            raise  # a bug: its traceback
        sys.stderr.write("host_sim: vip: database error: %s\n" % e)  # locked, disk full
        return 1
    finally:
        store.close()


def _run(eng, store, args):
    c = args.vip_command
    if c == "tier":
        p = set_tier(eng, store, args.name, args.fee, args.cycle, int(time.time()))
        _print({"tier": p["name"], "fee": p["fee"], "cycle": p["cycle"]})
    elif c == "enrol":
        sub, _ = enrol(eng, store, args.mid, args.tier, args.start, auto=not args.no_auto)
        with store.read() as tx:
            first = [e for e in eng.ledger(tx, KIND, args.mid) if e["sub"] == sub.id][0]
        line = _ledger_line(first)
        line["auto"] = not args.no_auto
        _print(line)
    elif c == "cancel":
        sub = cancel(eng, store, args.mid)
        _print({"mid": sub.owner, "tier": sub.plan, "auto": False, "paid_end": sub.paid_end})
    elif c == "tick":
        for ev in eng.tick(KIND, args.now, Gateway(args.fail_rate, args.seed)):
            _print(_event_line(ev))
    elif c == "ledger":
        with store.read() as tx:
            for e in eng.ledger(tx, KIND):
                _print(_ledger_line(e))
    elif c == "reminders":
        with store.read() as tx:
            for r in eng.reminders(tx, KIND):
                _print({"mid": r["owner"], "start": r["start"], "at": r["at"]})
    return 0
