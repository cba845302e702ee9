# Member accounts on the host (SPEC 8.1): stored balance, points, card epoch and state, one
# history row per change, the dynamic codes the host issued and the ones that have paid.
#
# A store service (host_sim/service.py): `up` answers member_query with member_info, and
# on_charge decides the member part of every charge that names a member ("mem"), inside the
# charge's own transaction. Exactly-once rests on the charge's row (keyed by the cid) committed
# in that same transaction: these functions write only when called from there (or from the
# command line, host_sim/members_cli.py), never on their own.
#
# Rules (docs/protocol.md, "Members on the host"):
#   member  pays amt from the balance with a dynamic code the host issued to this member, at the
#           member's current card epoch, never used before; declines, first failing wins:
#           unknown_member, blocked, code_required, unknown_code, blocked (code of an older
#           card), code_used, insufficient_balance
#   topup   credits amt + topup_bonus(amt); unknown_member, blocked, balance_limit
#   vip     needs a known member (unknown_member); the VIP service decides the rest
#   sale    never declined for its member; an unknown member earns nothing
#   every approved kind but topup earns points_for(amt); the result carries "bal" and "pts"
from host_sim import billing
from host_sim.service import Out

ACTIVE = "active"
BLOCKED = "blocked"
MAX_AMOUNT = (1 << 63) - 1  # amounts and balances fit a signed 64-bit column

# charge_result decline codes
UNKNOWN_MEMBER = "unknown_member"
MEMBER_BLOCKED = "blocked"
CODE_REQUIRED = "code_required"
UNKNOWN_CODE = "unknown_code"
CODE_USED = "code_used"
INSUFFICIENT_BALANCE = "insufficient_balance"
BALANCE_LIMIT = "balance_limit"

# Top-up bonus: every full BONUS_STEP topped up at once adds BONUS_PER_STEP (1000.00 -> 100.00).
BONUS_STEP = 100000
BONUS_PER_STEP = 10000
# Points: one point per full POINT_UNIT of the charge's amt (1.00), not for top-ups.
POINT_UNIT = 100

SCHEMA = """
CREATE TABLE IF NOT EXISTS members (
    mid        TEXT PRIMARY KEY,
    iss        TEXT NOT NULL,
    name       TEXT NOT NULL,
    tier       TEXT NOT NULL,
    bal        INTEGER NOT NULL,
    pts        INTEGER NOT NULL,
    ep         INTEGER NOT NULL,
    st         TEXT NOT NULL,
    card_cti   BLOB,
    card       TEXT,
    hist_n     INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS member_history (
    mid       TEXT NOT NULL,
    n         INTEGER NOT NULL,
    at        INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    bal_delta INTEGER NOT NULL,
    pts_delta INTEGER NOT NULL,
    bal       INTEGER NOT NULL,
    pts       INTEGER NOT NULL,
    cid       BLOB,
    note      TEXT,
    PRIMARY KEY (mid, n)
);
CREATE TABLE IF NOT EXISTS member_codes (
    cti BLOB PRIMARY KEY,
    mid TEXT NOT NULL,
    ep  INTEGER NOT NULL,
    iat INTEGER NOT NULL,
    exp INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS member_codes_used (
    cti       BLOB PRIMARY KEY,
    mid       TEXT NOT NULL,
    device_id TEXT NOT NULL,
    cid       BLOB NOT NULL,
    at        INTEGER NOT NULL
);
""" + billing.SCHEMA  # member_info reads the VIP expiry from the billing engine's tables

_COLUMNS = ("mid", "iss", "name", "tier", "bal", "pts", "ep", "st", "card_cti", "card",
            "hist_n", "created_at")
_HISTORY = ("mid", "n", "at", "kind", "bal_delta", "pts_delta", "bal", "pts", "cid", "note")


class MemberError(ValueError):
    def __init__(self, code, message):
        super().__init__(code + ": " + message)
        self.code = code
        self.message = message


# ---------------------------------------------------------------- the rules (pure)

def topup_bonus(amt):
    """Bonus credited on a top-up of amt minor units: BONUS_PER_STEP per full BONUS_STEP."""
    return amt // BONUS_STEP * BONUS_PER_STEP


def points_for(kind, amt):
    """Points a member earns for an approved charge: one per full POINT_UNIT, none on topup."""
    if kind == "topup":
        return 0
    return amt // POINT_UNIT


# ---------------------------------------------------------------- reading

def member(tx, mid, lock=False):
    """The member's row as a dict, or None. lock=True holds the row until the transaction ends
    (PostgreSQL: two terminals paying from one balance are decided one after the other)."""
    sql = "SELECT %s FROM members WHERE mid=?" % ", ".join(_COLUMNS)
    row = tx.execute(sql + (" FOR UPDATE" if lock else ""), (mid,)).fetchone()
    if row is None:
        return None
    m = dict(zip(_COLUMNS, row, strict=True))
    if m["card_cti"] is not None:
        m["card_cti"] = bytes(m["card_cti"])
    return m


def vip_expiry(tx, mid):
    """End of the member's paid VIP period (Unix s), or None. The VIP engine (SPEC 8.2,
    host_sim/vip.py) owns that state; this is the one place member_info and `members show`
    read it from (its tables are part of this service's SCHEMA)."""
    from host_sim import vip  # vip pays renewals from the balance through this module

    return vip.vip_expiry(tx, mid)


def history(tx, mid):
    """The member's history rows, oldest first."""
    rows = tx.execute("SELECT %s FROM member_history WHERE mid=? ORDER BY n"
                      % ", ".join(_HISTORY), (mid,)).fetchall()
    out = []
    for r in rows:
        h = dict(zip(_HISTORY, r, strict=True))
        if h["cid"] is not None:
            h["cid"] = bytes(h["cid"])
        out.append(h)
    return out


def info(tx, mid, qid):
    """The member_info body for a member_query (st "blocked" and zeros for an unknown mid)."""
    m = member(tx, mid)
    if m is None:
        # SPEC 8.1 knows only active and blocked: a member the host does not know can neither
        # pay nor top up here, so blocked (terminals still take "unknown" from older hosts)
        return {"qid": qid, "mid": mid, "bal": 0, "pts": 0, "tier": "", "vip_exp": None,
                "st": BLOCKED}
    return {"qid": qid, "mid": mid, "bal": m["bal"], "pts": m["pts"], "tier": m["tier"],
            "vip_exp": vip_expiry(tx, mid), "st": m["st"], "nm": m["name"]}


# ---------------------------------------------------------------- changing

def record(tx, m, now, kind, bal=0, pts=0, cid=None, note=None, **cols):
    """Applies a balance/points delta and other column changes to the (locked) member row m and
    writes its history row; m is updated in place and returned."""
    new_bal = m["bal"] + bal
    new_pts = m["pts"] + pts
    if not 0 <= new_bal <= MAX_AMOUNT or not 0 <= new_pts <= MAX_AMOUNT:
        raise MemberError(BALANCE_LIMIT, "balance or points out of range for %s" % m["mid"])
    n = m["hist_n"] + 1
    sets = dict(cols, bal=new_bal, pts=new_pts, hist_n=n)
    names = sorted(sets)
    tx.execute("UPDATE members SET %s WHERE mid=?" % ", ".join("%s=?" % k for k in names),
               [sets[k] for k in names] + [m["mid"]])
    tx.execute("INSERT INTO member_history (mid, n, at, kind, bal_delta, pts_delta, bal, pts,"
               " cid, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
               (m["mid"], n, int(now), kind, bal, pts, new_bal, new_pts, cid, note))
    m.update(sets)
    return m


def add(tx, mid, iss, name, tier, balance, now):
    """A new member at card epoch 1 with an opening balance; MemberError exists when the mid
    is taken. The caller signs the card and stores it with set_card."""
    if type(balance) is not int or not 0 <= balance <= MAX_AMOUNT:
        raise MemberError("bad_amount", "opening balance must be 0..%d" % MAX_AMOUNT)
    row = tx.execute("INSERT INTO members (mid, iss, name, tier, bal, pts, ep, st, hist_n,"
                     " created_at) VALUES (?, ?, ?, ?, 0, 0, 1, ?, 0, ?)"
                     " ON CONFLICT (mid) DO NOTHING RETURNING mid",
                     (mid, iss, name, tier, ACTIVE, int(now))).fetchone()
    if row is None:
        raise MemberError("exists", "member %r exists already" % (mid,))
    m = member(tx, mid, lock=True)
    return record(tx, m, now, "open", bal=balance, note="tier %s" % tier)


def locked(tx, mid):
    """The member row, locked; MemberError unknown_member when there is none."""
    m = member(tx, mid, lock=True)
    if m is None:
        raise MemberError(UNKNOWN_MEMBER, "no member %r" % (mid,))
    return m


def set_card(tx, m, cti, token):
    """Stores the member's current printed card (serial and PM1 text, for reprints)."""
    tx.execute("UPDATE members SET card_cti=?, card=? WHERE mid=?", (cti, token, m["mid"]))
    m["card_cti"], m["card"] = cti, token


def block(tx, mid, now, note="loss report"):
    """Loss report: the member's cards up to the current epoch stop paying and are listed in the
    revocation list (the caller signs and pushes it). Returns the row."""
    m = locked(tx, mid)
    if m["st"] != BLOCKED:
        record(tx, m, now, "block", note=note, st=BLOCKED)
    return m


def reissue(tx, mid, now):
    """A new card: epoch + 1, state active (the caller keeps the old epoch blocked and signs
    the new card). Returns the row."""
    m = locked(tx, mid)
    return record(tx, m, now, "reissue", note="card epoch %d -> %d" % (m["ep"], m["ep"] + 1),
                  ep=m["ep"] + 1, st=ACTIVE)


def add_code(tx, m, cti, iat, exp):
    """Records a dynamic code issued to member m: on_charge accepts only codes recorded here."""
    if m["st"] != ACTIVE:
        raise MemberError(MEMBER_BLOCKED, "member %r is blocked: reissue the card first"
                          % m["mid"])
    row = tx.execute("INSERT INTO member_codes (cti, mid, ep, iat, exp) VALUES (?, ?, ?, ?, ?)"
                     " ON CONFLICT (cti) DO NOTHING RETURNING cti",
                     (cti, m["mid"], m["ep"], int(iat), int(exp))).fetchone()
    if row is None:
        raise MemberError("code_exists", "code %s was issued already" % bytes(cti).hex())


def host_topup(tx, mid, amount, now, note="host top-up"):
    """A top-up made on the host (demos, the counter of the office): the terminal's rule and
    bonus. Returns the row."""
    if type(amount) is not int or not 1 <= amount <= MAX_AMOUNT:
        raise MemberError("bad_amount", "a top-up is 1..%d" % MAX_AMOUNT)
    m = locked(tx, mid)
    if m["st"] != ACTIVE:
        raise MemberError(MEMBER_BLOCKED, "member %r is blocked" % (mid,))
    bonus = topup_bonus(amount)
    return record(tx, m, now, "topup", bal=amount + bonus, note="bonus %d" % bonus)


def credit_refund(tx, mid, amount, ref, now):
    """Puts a refund back on the member's balance (the refunds service, SPEC 8.3, decides and
    keys it by its rid: call once per refund, in its transaction). A blocked member gets the
    money too. ref: text or bytes (hex in the history). Returns the new balance."""
    if type(amount) is not int or not 1 <= amount <= MAX_AMOUNT:
        raise MemberError("bad_amount", "a refund is 1..%d" % MAX_AMOUNT)
    if isinstance(ref, (bytes, bytearray, memoryview)):
        ref = bytes(ref).hex()
    m = locked(tx, mid)
    return record(tx, m, now, "refund", bal=amount, note="refund %s" % ref)["bal"]


# ---------------------------------------------------------------- the service

class Members:
    """The members service. ctx is the host's service context (unused: every method gets its
    transaction and time from the caller)."""

    name = "members"
    SCHEMA = SCHEMA

    def __init__(self, ctx=None):
        self.ctx = ctx
        self.up = {"member_query": self.member_query}

    def member_query(self, tx, msg):
        """member_query -> member_info to the asking terminal (never queued: SPEC 8.1)."""
        return [Out(msg.device_id, "member_info", info(tx, msg.body["mid"], msg.body["qid"]))]

    def on_charge(self, tx, charge):
        """charge: the dict the charge processor decides (device_id, store_id, cid, body: the
        checked `charge` body, now). Returns (decline code or None, extra result fields).
        Declines before writing anything."""
        body = charge["body"]
        mid = body.get("mem")
        if mid is None:
            return None, {}
        kind, amt = body["kind"], body["amt"]
        m = member(tx, mid, lock=True)
        if m is None:
            # A sale paid in cash or by card stands without its member.
            return (None, {}) if kind == "sale" else (UNKNOWN_MEMBER, {})
        bal = 0
        note = None
        if kind in ("member", "topup") and m["st"] != ACTIVE:
            return MEMBER_BLOCKED, {}
        if kind == "member":
            code = self._spend_code(tx, m, body, charge)
            if code is not None:
                return code, {}
            bal = -amt
        elif kind == "topup":
            bonus = topup_bonus(amt)
            if m["bal"] + amt + bonus > MAX_AMOUNT:
                return BALANCE_LIMIT, {}
            bal = amt + bonus
            note = "bonus %d" % bonus
        pts = min(points_for(kind, amt), MAX_AMOUNT - m["pts"])
        if bal or pts:
            record(tx, m, charge["now"], kind, bal=bal, pts=pts, cid=body["cid"], note=note)
        return None, {"bal": m["bal"], "pts": m["pts"]}

    def _spend_code(self, tx, m, body, charge):
        """Checks the dynamic code of a payment from the balance and marks it used; the decline
        code, or None."""
        if m["bal"] < body["amt"]:
            return INSUFFICIENT_BALANCE  # SPEC 8.1's own codes first, whatever the code says
        cti = body.get("mcti")
        if cti is None:
            return CODE_REQUIRED  # a static card identifies, it never pays (SPEC 8.1)
        row = tx.execute("SELECT mid, ep FROM member_codes WHERE cti=?", (cti,)).fetchone()
        if row is None or row[0] != m["mid"]:
            return UNKNOWN_CODE
        if row[1] < m["ep"]:
            return MEMBER_BLOCKED  # a code of a card replaced since
        if tx.execute("SELECT 1 FROM member_codes_used WHERE cti=?", (cti,)).fetchone():
            return CODE_USED
        # The key decides between two charges with one code, even outside the member lock.
        if tx.execute("INSERT INTO member_codes_used (cti, mid, device_id, cid, at)"
                      " VALUES (?, ?, ?, ?, ?) ON CONFLICT (cti) DO NOTHING RETURNING cti",
                      (cti, m["mid"], charge["device_id"], body["cid"], int(charge["now"]))
                      ).fetchone() is None:
            return CODE_USED
        return None
