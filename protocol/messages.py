# Message bodies of SPEC 3.2 and SPEC 8. check(mtype, body) accepts a body or raises MessageError
# naming the first bad field as a path ("cpn[0].cti"). Field rules are in protocol/schema.py;
# optional fields may be absent; unknown extra keys are ignored so newer hosts and devices can
# add fields (the device's host settings count unknown `config` keys: device/host_settings.py).
#
# Each type is registered once with its direction; the SPEC 8 bodies live in
# protocol/store_messages.py, which registers itself below.
from protocol import schema as s
from protocol.schema import MessageError  # noqa: F401 - the error callers catch

RUNTIMES = ("cpython", "micropython")
CHARGE_KINDS = ("sale", "member", "topup", "vip")
RESULT_STATES = ("approved", "declined")
COUPON_STATES = ("ok", "conflict")
LICENCE_STATES = ("none", "ok", "expiring", "grace", "restricted")
PIN_ROLES = ("tech", "supervisor", "clerk")
MIN_STATUS_INTERVAL_S = 5
MAX_STATUS_INTERVAL_S = 86400

UP_TYPES = []
DOWN_TYPES = []
_CHECKS = {}


def register(mtype, direction, fn):
    """Adds a message type: direction "up" (device -> host) or "down"; fn(body) checks it."""
    (UP_TYPES if direction == "up" else DOWN_TYPES).append(mtype)
    _CHECKS[mtype] = fn


def check(mtype, body):
    """Validates the body of a message of type mtype; returns None or raises MessageError."""
    fn = _CHECKS.get(mtype) if type(mtype) is str else None
    if fn is None:
        raise MessageError("t", "unknown type")
    s.mapping(body, "body")
    fn(body)


# ---------------------------------------------------------------- up


def lic_state(v, path):
    """`lic` of hello and status (SPEC 8.5): {"st", "exp": int|null, "days": int|null}."""
    s.mapping(v, path)
    s.choice(s.field(v, "st", path + ".st"), path + ".st", LICENCE_STATES)
    for k in ("exp", "days"):
        x = s.field(v, k, path + "." + k)
        if x is not None:
            s.integer(x, path + "." + k)
    return v


def _hello(b):
    s.req(b, "fw", s.text)
    s.req(b, "rt", s.choice, RUNTIMES)
    for key in ("boot", "queue", "trust_ver", "rev_ver"):
        s.req(b, key, s.uint)
    s.opt(b, "lic", lic_state)


def _coupons(b):
    disc = 0
    for i, c in enumerate(s.req(b, "cpn", s.array)):
        p = "cpn[%d]" % i
        s.mapping(c, p)
        s.cti(s.field(c, "cti", p + ".cti"), p + ".cti")
        s.text(s.field(c, "cmp", p + ".cmp"), p + ".cmp")
        disc += s.amount(s.field(c, "disc", p + ".disc"), p + ".disc")
    return disc


def _charge(b):
    s.req(b, "cid", s.id16)
    kind = s.req(b, "kind", s.choice, CHARGE_KINDS)
    gross = s.req(b, "gross", s.amount)
    amt = s.req(b, "amt", s.amount)
    s.req(b, "cur", s.text, 1, 8)
    s.req(b, "at", s.uint)
    s.req(b, "off", s.boolean)
    s.req(b, "clerk", s.text)
    disc = _coupons(b)
    mem = s.opt(b, "mem", s.text, 1, 64)
    s.opt(b, "ref", s.text)
    s.opt(b, "mcti", s.cti)
    tier = s.opt(b, "tier", s.text, 1, 32)
    mdisc = s.opt(b, "mdisc", s.amount)  # the member's tier discount (SPEC 8.1)
    if mdisc is not s.MISSING:
        disc += mdisc
    if amt > gross:
        raise MessageError("amt", "must not exceed gross (%d > %d)" % (amt, gross))
    if gross - amt != disc:
        raise MessageError("amt", "gross - amt must equal the sum of cpn disc and mdisc"
                           " (%d != %d)"
                           % (gross - amt, disc))
    if kind != "sale" and mem is s.MISSING:
        raise MessageError("mem", "required for a %s charge" % kind)
    if kind == "vip" and tier is s.MISSING:
        raise MessageError("tier", "required for a vip charge")
    if kind in ("topup", "vip") and disc:
        raise MessageError("cpn", "no coupons on a %s charge" % kind)


def journal_state(v, path):
    """`journal` of status: records the device could not read back (docs/formats.md)."""
    s.mapping(v, path)
    for k in ("bad_records", "skipped_bytes"):
        s.uint(s.field(v, k, path + "." + k), path + "." + k)
    return v


def _status(b):
    for key in ("queue", "drops", "uptime", "declined_unseen"):
        s.req(b, key, s.uint)
    s.req(b, "queue_amt", s.amount)
    oldest = s.field(b, "oldest_at", "oldest_at")
    if oldest is not None:
        s.uint(oldest, "oldest_at")
    s.opt(b, "lic", lic_state)
    s.opt(b, "journal", journal_state)


register("hello", "up", _hello)
register("charge", "up", _charge)
register("status", "up", _status)


# ---------------------------------------------------------------- down


def _charge_result(b):
    s.req(b, "cid", s.id16)
    s.req(b, "st", s.choice, RESULT_STATES)
    s.opt(b, "code", s.text)  # SPEC 3.2: text (up to MAX_TEXT; empty too)
    s.opt(b, "auth", s.text)
    for i, c in enumerate(s.req(b, "cpn", s.array)):
        p = "cpn[%d]" % i
        s.mapping(c, p)
        s.cti(s.field(c, "cti", p + ".cti"), p + ".cti")
        s.choice(s.field(c, "st", p + ".st"), p + ".st", COUPON_STATES)
    s.opt(b, "bal", s.amount)
    s.opt(b, "pts", s.amount)
    vip = s.opt(b, "vip", s.mapping)
    if vip is not s.MISSING:
        s.text(s.field(vip, "tier", "vip.tier"), "vip.tier", 1, 32)
        s.uint(s.field(vip, "start", "vip.start"), "vip.start")
        s.uint(s.field(vip, "end", "vip.end"), "vip.end")


def _redeemed(b):
    for i, c in enumerate(s.req(b, "cti", s.array)):
        s.cti(c, "cti[%d]" % i)
    # Redemptions are keyed by this id on the device, so a replay adds nothing (optional for
    # hosts that predate it: then the envelope seq guards alone).
    s.opt(b, "rid", s.id16)


# The host-managed settings (`config` downlink, SPEC 3.2/8): key -> checker. The device keeps
# exactly these (device/host_settings.py); anything else is refused there and counted.
LIMIT_KEYS = ("offline_max_charge", "offline_max_total", "offline_max_count",
              "offline_max_age_s", "offline_member_max", "offline_member_total",
              "refund_pin_over")
VIP_CYCLES = ("month", "quarter", "year")
MAX_VIP_TIERS = 9  # F4 then a digit 1..9 picks one


def _limits(v, path):
    s.mapping(v, path)
    for key in LIMIT_KEYS:
        x = s.field(v, key, "", True)
        if x is not s.MISSING:
            s.amount(x, path + "." + key)
    return v


def _pins(v, path):
    s.mapping(v, path)
    for role in PIN_ROLES:
        x = s.field(v, role, "", True)
        if x is not s.MISSING:
            s.pin_hash(x, path + "." + role)
    return v


def _status_interval(v, path):
    if not MIN_STATUS_INTERVAL_S <= s.uint(v, path) <= MAX_STATUS_INTERVAL_S:
        raise MessageError(path, "must be >= %d and <= %d" % (MIN_STATUS_INTERVAL_S,
                                                     MAX_STATUS_INTERVAL_S))
    return v


def _tier_disc(v, path):
    s.mapping(v, path)
    for tier, pct in v.items():
        s.text(tier, path + " key", 1, 32)
        if type(pct) is not int or not 0 <= pct <= 100:
            raise MessageError(path + "." + tier, "must be a percent 0..100")
    return v


def _vip_tiers(v, path):
    s.array(v, path, MAX_VIP_TIERS)
    for i, t in enumerate(v):
        p = "%s[%d]" % (path, i)
        s.mapping(t, p)
        s.text(s.field(t, "name", p + ".name"), p + ".name", 1, 32)
        s.amount(s.field(t, "fee", p + ".fee"), p + ".fee")
        s.choice(s.field(t, "cycle", p + ".cycle"), p + ".cycle", VIP_CYCLES)
    return v


CONFIG_KEYS = {
    "limits": _limits,
    "pins": _pins,
    "status_interval_s": _status_interval,
    "tier_disc": _tier_disc,
    "vip_tiers": _vip_tiers,
    "bookings": s.boolean,
}
CONFIG_SUBKEYS = {"limits": LIMIT_KEYS, "pins": PIN_ROLES}


def _config(b):
    for key in CONFIG_KEYS:
        x = s.field(b, key, key, True)
        if x is not s.MISSING:
            CONFIG_KEYS[key](x, key)


def config_unknown(body):
    """The keys of a config body the device does not keep ("limits.foo", "colour")."""
    out = []
    for key in body:
        if key not in CONFIG_KEYS:
            out.append(str(key)[:40])
        elif key in CONFIG_SUBKEYS:
            for sub in body[key]:
                if sub not in CONFIG_SUBKEYS[key]:
                    out.append("%s.%s" % (key, str(sub)[:40]))
    return out


register("charge_result", "down", _charge_result)
register("redeemed", "down", _redeemed)
register("config", "down", _config)

# registers the SPEC 8 types, then the project's batch types
from protocol import batch_messages, store_messages  # noqa: E402,F401
