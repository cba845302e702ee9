# Member accounts on the host (SPEC 8.1; host_sim/members.py, members_cli.py, the member parts of
# host_sim/issuance.py) and the public member-code vectors (tests/fixtures/member_codes.json).
#
# The service is driven the way the host drives it: inside store.transaction(), with a charges
# table keyed by (device_id, cid) whose row is written in the same transaction as the service's
# effect (Till below mimics charges.apply). Every code the host signs, every revocation list and
# every vector verdict is read back by an independent decoder written here with cbor2 and
# cryptography. Runs on SQLite, and on PostgreSQL too where tests/support/postgres.py is (the
# conftest's pg_server) or TEST_POSTGRES_URL names a server where databases may be created.
import importlib.util
import io
import json
import os
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET

import cbor2
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from device.coupons.verifier import Verifier
from device.trust.lists import TrustStore
from host_sim import __main__ as host_main
from host_sim import members, qrsheet, service
from host_sim.issuance import IssuanceError, Keystore, member_claims
from host_sim.members import MemberError, Members
from host_sim.service import Msg
from host_sim.store import open_store
from protocol import messages
from tests.support import make_member_vectors

T0 = 1_800_000_000
DAY = 86400
MERCHANT = "M-ACME"
STORE = "S-001"
_B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"

# registry.py's devices table, as the host creates it
DEVICES = """
CREATE TABLE IF NOT EXISTS devices (
    device_id   TEXT PRIMARY KEY,
    secret      BLOB NOT NULL,
    store_id    TEXT NOT NULL,
    merchant_id TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    last_seq    INTEGER,
    host_seq    INTEGER NOT NULL DEFAULT 0,
    online      INTEGER NOT NULL DEFAULT 0,
    last_hello  TEXT,
    last_status TEXT,
    last_seen   INTEGER,
    broker_password TEXT
);
"""
# The charge's own row: its key is what exactly-once rests on.
CHARGES = """
CREATE TABLE IF NOT EXISTS t_charges (
    device_id TEXT NOT NULL,
    cid       BLOB NOT NULL,
    result    BLOB,
    PRIMARY KEY (device_id, cid)
);
"""


# ---------------------------------------------------------------- stores

def _engines():
    out = ["sqlite"]
    if os.environ.get("TEST_POSTGRES_URL") or importlib.util.find_spec("tests.support.postgres"):
        out.append("postgres")
    return out


def _new_pg_database(url):
    """A fresh database on the server of url (the test's tables start empty)."""
    import psycopg

    name = "members_%s" % os.urandom(6).hex()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE %s" % name)
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(path="/" + name))


@pytest.fixture(params=_engines())
def where(request, tmp_path):
    """The database a test runs on: a SQLite path, or the URL of a new PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "host.db")
    if os.environ.get("TEST_POSTGRES_URL"):
        return _new_pg_database(os.environ["TEST_POSTGRES_URL"])
    return request.getfixturevalue("pg_server").new_database("members")


def _open(where):
    st = open_store(where)
    st.schema(DEVICES)
    st.schema(CHARGES)
    st.schema(service.OUTBOX_SCHEMA)
    st.schema(members.SCHEMA)
    return st


@pytest.fixture
def store(where):
    st = _open(where)
    with st.transaction() as tx:
        for dev in ("T-1", "T-2"):
            tx.execute("INSERT INTO devices (device_id, secret, store_id, merchant_id,"
                       " created_at) VALUES (?, ?, ?, ?, ?)",
                       (dev, bytes(32), STORE, MERCHANT, T0))
    yield st
    st.close()


class Clock:
    def __init__(self, t=T0):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def ks(tmp_path, clock):
    k = Keystore(str(tmp_path / "keys"), clock=clock, create=True)
    k.create_root()
    k.create_issuer(MERCHANT, nbf=T0 - DAY)
    yield k
    k.close()


# ---------------------------------------------------------------- the till (charges.apply)

class Till:
    """Decides charges like the host: the charge row is claimed by its key first, the service
    runs under a savepoint (rolled back on a decline), the result is stored in the row."""

    def __init__(self, store, svc=None):
        self.store = store
        self.svc = svc or Members(None)

    def decide(self, body, device="T-1", now=T0, fail_after=False):
        messages.check("charge", body)
        with self.store.transaction() as tx:
            if tx.execute("INSERT INTO t_charges (device_id, cid) VALUES (?, ?)"
                          " ON CONFLICT (device_id, cid) DO NOTHING RETURNING cid",
                          (device, body["cid"])).fetchone() is None:
                row = tx.execute("SELECT result FROM t_charges WHERE device_id=? AND cid=?",
                                 (device, body["cid"])).fetchone()
                return cbor2.loads(bytes(row[0])), False
            tx.execute("SAVEPOINT svc")
            code, extra = self.svc.on_charge(tx, {"device_id": device, "store_id": STORE,
                                                  "cid": body["cid"], "body": body, "now": now})
            if code is None:
                tx.execute("RELEASE SAVEPOINT svc")
                result = {"cid": body["cid"], "st": "approved", "auth": "A1B2C3", "cpn": []}
                result.update(extra)
            else:
                tx.execute("ROLLBACK TO SAVEPOINT svc")
                result = {"cid": body["cid"], "st": "declined", "code": code, "cpn": []}
            messages.check("charge_result", result)
            tx.execute("UPDATE t_charges SET result=? WHERE device_id=? AND cid=?",
                       (cbor2.dumps(result), device, body["cid"]))
            if fail_after:
                raise RuntimeError("host died before COMMIT")
        return result, True


_cids = iter(range(1, 1 << 30))


def charge(kind="sale", amt=1000, mem=None, mcti=None, cid=None, **extra):
    body = {"cid": cid or next(_cids).to_bytes(16, "big"), "kind": kind, "gross": amt,
            "amt": amt, "cur": "CNY", "at": T0, "off": False, "clerk": "c1", "cpn": []}
    if mem is not None:
        body["mem"] = mem
    if mcti is not None:
        body["mcti"] = mcti
    if kind == "vip":
        body.setdefault("tier", "VIP-1")
    body.update(extra)
    return body


def new_member(store, ks, mid="M-1", bal=0, tier="gold", name="Ada"):
    with store.transaction() as tx:
        m = members.add(tx, mid, MERCHANT, name, tier, bal, T0)
        token, cti = ks.sign_member_code(MERCHANT, mid, m["ep"], tier, name=name)
        members.set_card(tx, m, cti, token)
    return token


def issue_code(store, ks, mid="M-1", valid_s=120):
    with store.transaction() as tx:
        m = members.locked(tx, mid)
        token, cti = ks.sign_member_code(MERCHANT, mid, m["ep"], m["tier"], valid_s=valid_s)
        members.add_code(tx, m, cti, ks.now(), ks.now() + valid_s)
    return cti


def row(store, mid="M-1"):
    with store.transaction() as tx:
        return members.member(tx, mid)


def hist(store, mid="M-1"):
    with store.transaction() as tx:
        return members.history(tx, mid)


# ---------------------------------------------------------------- the rules

def test_bonus_and_points_rules():
    assert [members.topup_bonus(a) for a in (0, 99999, 100000, 199999, 250000, 1000000)] == \
        [0, 0, 10000, 10000, 20000, 100000]
    assert [members.points_for("sale", a) for a in (0, 99, 100, 199, 12345)] == [0, 0, 1, 1, 123]
    assert members.points_for("member", 500) == 5 and members.points_for("vip", 9900) == 99
    assert members.points_for("topup", 500000) == 0


# ---------------------------------------------------------------- member_query

def test_member_query_answers_member_info_to_the_asking_terminal(store, ks):
    new_member(store, ks, "M-1", bal=4200)
    svc = Members(None)
    assert set(svc.up) == {"member_query"}
    qid = bytes(range(16))
    with store.transaction() as tx:
        [out] = svc.up["member_query"](tx, Msg("T-2", STORE, "member_query",
                                                 {"qid": qid, "mid": "M-1"}, 1, T0))
    assert (out.device_id, out.mtype) == ("T-2", "member_info")
    assert out.body == {"qid": qid, "mid": "M-1", "bal": 4200, "pts": 0, "tier": "gold",
                        "vip_exp": None, "st": "active", "nm": "Ada"}
    messages.check("member_info", out.body)

    with store.transaction() as tx:
        [out] = svc.member_query(tx, Msg("T-1", STORE, "member_query",
                                         {"qid": qid, "mid": "M-404"}, 2, T0))
    assert out.body == {"qid": qid, "mid": "M-404", "bal": 0, "pts": 0, "tier": "",
                        "vip_exp": None, "st": "blocked"}  # SPEC 8.1: active|blocked

    with store.transaction() as tx:
        members.block(tx, "M-1", T0)
        [out] = svc.member_query(tx, Msg("T-1", STORE, "member_query",
                                         {"qid": qid, "mid": "M-1"}, 3, T0))
    assert out.body["st"] == "blocked" and out.body["bal"] == 4200


def test_vip_expiry_hook_is_none_until_the_vip_service_exists(store, ks):
    new_member(store, ks)
    with store.transaction() as tx:
        assert members.vip_expiry(tx, "M-1") is None


# ---------------------------------------------------------------- on_charge: member (balance)

def test_paying_from_the_balance_with_a_dynamic_code(store, ks):
    new_member(store, ks, bal=10000)
    cti = issue_code(store, ks)
    till = Till(store)
    body = charge("member", 2550, mem="M-1", mcti=cti)
    res, fresh = till.decide(body, now=T0 + 30)
    assert fresh and res["st"] == "approved" and (res["bal"], res["pts"]) == (7450, 25)
    m = row(store)
    assert (m["bal"], m["pts"]) == (7450, 25)
    last = hist(store)[-1]
    assert (last["kind"], last["bal_delta"], last["pts_delta"], last["bal"], last["cid"],
            last["at"]) == ("member", -2550, 25, 7450, body["cid"], T0 + 30)


@pytest.mark.parametrize("case,code", [
    ("unknown_member", "unknown_member"),
    ("blocked_member", "blocked"),
    ("no_code", "code_required"),
    ("code_never_issued", "unknown_code"),
    ("code_of_another_member", "unknown_code"),
    ("code_of_a_replaced_card", "blocked"),
    ("code_used", "code_used"),
    ("insufficient_balance", "insufficient_balance"),
])
def test_member_payment_declines(store, ks, case, code):
    new_member(store, ks, "M-1", bal=5000)
    new_member(store, ks, "M-2", bal=5000)
    till = Till(store)
    cti = issue_code(store, ks, "M-1")
    mem, amt = "M-1", 1000
    if case == "unknown_member":
        mem = "M-404"
    elif case == "blocked_member":
        with store.transaction() as tx:
            members.block(tx, "M-1", T0)
    elif case == "no_code":
        cti = None
    elif case == "code_never_issued":
        cti = os.urandom(16)
    elif case == "code_of_another_member":
        cti = issue_code(store, ks, "M-2")
    elif case == "code_of_a_replaced_card":
        with store.transaction() as tx:
            members.reissue(tx, "M-1", T0)
    elif case == "code_used":
        assert till.decide(charge("member", 100, mem="M-1", mcti=cti))[0]["st"] == "approved"
    elif case == "insufficient_balance":
        amt = 5001
    before = row(store, "M-1"), hist(store, "M-1")
    res, _ = till.decide(charge("member", amt, mem=mem, mcti=cti), device="T-2")
    assert res == {"cid": res["cid"], "st": "declined", "code": code, "cpn": []}
    assert (row(store, "M-1"), hist(store, "M-1")) == before


def test_a_declined_payment_does_not_spend_the_code(store, ks):
    new_member(store, ks, bal=1000)
    cti = issue_code(store, ks)
    till = Till(store)
    assert till.decide(charge("member", 1001, mem="M-1", mcti=cti))[0]["code"] == \
        "insufficient_balance"
    res, _ = till.decide(charge("member", 1000, mem="M-1", mcti=cti))
    assert res["st"] == "approved" and res["bal"] == 0


def test_a_code_pays_once_across_terminals(store, ks):
    new_member(store, ks, bal=10000)
    cti = issue_code(store, ks)
    till = Till(store)
    assert till.decide(charge("member", 100, mem="M-1", mcti=cti), device="T-1")[0]["st"] == \
        "approved"
    res, fresh = till.decide(charge("member", 100, mem="M-1", mcti=cti), device="T-2")
    assert fresh and res["code"] == "code_used"
    assert row(store)["bal"] == 9900
    with store.transaction() as tx:
        used = tx.execute("SELECT device_id, cid FROM member_codes_used").fetchall()
    assert len(used) == 1 and used[0][0] == "T-1"


def test_a_charge_sent_twice_moves_the_balance_once(store, ks):
    new_member(store, ks, bal=10000)
    cti = issue_code(store, ks)
    till = Till(store)
    body = charge("member", 3000, mem="M-1", mcti=cti)
    first, fresh1 = till.decide(body)
    again, fresh2 = till.decide(dict(body))
    assert fresh1 and not fresh2 and again == first
    assert row(store)["bal"] == 7000 and len(hist(store)) == 2  # open + one payment
    # the same for a top-up, which needs no code
    top = charge("topup", 100000, mem="M-1")
    assert till.decide(top)[0]["bal"] == 7000 + 110000
    assert till.decide(top)[0]["bal"] == 7000 + 110000
    assert row(store)["bal"] == 117000


def test_a_host_dying_before_commit_leaves_nothing_and_the_retry_applies_once(store, ks):
    new_member(store, ks, bal=10000)
    cti = issue_code(store, ks)
    till = Till(store)
    body = charge("member", 4000, mem="M-1", mcti=cti)
    with pytest.raises(RuntimeError):
        till.decide(body, fail_after=True)
    assert row(store)["bal"] == 10000 and len(hist(store)) == 1
    res, fresh = till.decide(body)
    assert fresh and res["st"] == "approved" and res["bal"] == 6000
    assert till.decide(body) == (res, False)


def test_two_terminals_paying_at_once_never_overdraw(where, store, ks):
    new_member(store, ks, bal=10000)
    ctis = [issue_code(store, ks) for _ in range(2)]
    results = []
    barrier = threading.Barrier(2)

    def pay(dev, cti):
        st = _open(where)  # a connection of its own, like a second host worker
        try:
            barrier.wait()
            results.append(Till(st).decide(charge("member", 6000, mem="M-1", mcti=cti),
                                           device=dev)[0])
        finally:
            st.close()

    threads = [threading.Thread(target=pay, args=("T-%d" % (i + 1), c))
               for i, c in enumerate(ctis)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r["st"] for r in results) == ["approved", "declined"]
    assert [r["code"] for r in results if r["st"] == "declined"] == ["insufficient_balance"]
    assert row(store)["bal"] == 4000


# ---------------------------------------------------------------- on_charge: other kinds

def test_topup_credits_the_amount_and_the_bonus_without_points(store, ks):
    new_member(store, ks, bal=500)
    till = Till(store)
    res, _ = till.decide(charge("topup", 250000, mem="M-1"))
    assert res["st"] == "approved" and (res["bal"], res["pts"]) == (500 + 250000 + 20000, 0)
    last = hist(store)[-1]
    assert (last["kind"], last["bal_delta"], last["pts_delta"], last["note"]) == \
        ("topup", 270000, 0, "bonus 20000")
    res, _ = till.decide(charge("topup", 99999, mem="M-1"))
    assert res["bal"] == 270500 + 99999


@pytest.mark.parametrize("case,code", [("unknown", "unknown_member"), ("blocked", "blocked"),
                                       ("overflow", "balance_limit")])
def test_topup_declines(store, ks, case, code):
    new_member(store, ks, bal=members.MAX_AMOUNT - 5 if case == "overflow" else 0)
    if case == "blocked":
        with store.transaction() as tx:
            members.block(tx, "M-1", T0)
    before = row(store)
    res, _ = Till(store).decide(charge("topup", 10, mem="M-404" if case == "unknown" else "M-1"))
    assert res["st"] == "declined" and res["code"] == code
    assert row(store) == before


def test_a_sale_with_a_member_earns_points_and_is_never_declined_for_it(store, ks):
    new_member(store, ks, bal=300)
    till = Till(store)
    res, _ = till.decide(charge("sale", 12399, mem="M-1"))
    assert res["st"] == "approved" and (res["bal"], res["pts"]) == (300, 123)
    last = hist(store)[-1]
    assert (last["kind"], last["bal_delta"], last["pts_delta"], last["pts"]) == \
        ("sale", 0, 123, 123)
    # under one point: no change, no history row
    n = len(hist(store))
    assert till.decide(charge("sale", 99, mem="M-1"))[0]["pts"] == 123 and len(hist(store)) == n
    # a sale paid otherwise stands with an unknown or blocked member
    res, _ = till.decide(charge("sale", 500, mem="M-404"))
    assert res["st"] == "approved" and "bal" not in res and "pts" not in res
    with store.transaction() as tx:
        members.block(tx, "M-1", T0)
    assert till.decide(charge("sale", 500, mem="M-1"))[0]["pts"] == 128
    # and a sale without a member is none of this service's business
    res, _ = till.decide(charge("sale", 500))
    assert res["st"] == "approved" and "bal" not in res


def test_vip_charges_need_a_known_member_and_earn_points(store, ks):
    new_member(store, ks)
    till = Till(store)
    assert till.decide(charge("vip", 9900, mem="M-404"))[0]["code"] == "unknown_member"
    res, _ = till.decide(charge("vip", 9900, mem="M-1"))
    assert res["st"] == "approved" and res["pts"] == 99


def test_points_do_not_overflow(store, ks):
    new_member(store, ks)
    with store.transaction() as tx:
        tx.execute("UPDATE members SET pts=? WHERE mid=?", (members.MAX_AMOUNT - 1, "M-1"))
    res, _ = Till(store).decide(charge("sale", 10000, mem="M-1"))
    assert res["st"] == "approved" and res["pts"] == members.MAX_AMOUNT


# ---------------------------------------------------------------- refunds hook, host top-up

def test_credit_refund_puts_money_back_with_a_history_row(store, ks):
    new_member(store, ks, bal=100)
    rid = bytes(range(16))
    with store.transaction() as tx:
        assert members.credit_refund(tx, "M-1", 2500, rid, T0 + 5) == 2600
        members.block(tx, "M-1", T0 + 6)
        assert members.credit_refund(tx, "M-1", 1, "R-7", T0 + 7) == 2601  # blocked: still owed
    rows = hist(store)
    assert (rows[1]["kind"], rows[1]["bal_delta"], rows[1]["bal"], rows[1]["note"],
            rows[1]["at"]) == ("refund", 2500, 2600, "refund " + rid.hex(), T0 + 5)
    assert rows[-1]["note"] == "refund R-7"
    with pytest.raises(MemberError) as e, store.transaction() as tx:
        members.credit_refund(tx, "M-404", 10, "R-8", T0)
    assert e.value.code == "unknown_member"
    with pytest.raises(MemberError) as e, store.transaction() as tx:
        members.credit_refund(tx, "M-1", 0, "R-9", T0)
    assert e.value.code == "bad_amount"


def test_members_need_unique_ids(store, ks):
    new_member(store, ks)
    with pytest.raises(MemberError) as e:
        new_member(store, ks)
    assert e.value.code == "exists"


# ---------------------------------------------------------------- independent reading of codes

def b45decode(text):
    """Strict RFC 9285: upper-case alphabet, no dangling digit, groups in range."""
    if len(text) % 3 == 1:
        raise ValueError("dangling digit")
    out = bytearray()
    for i in range(0, len(text), 3):
        chunk = [_B45.index(c) for c in text[i:i + 3]]  # ValueError outside the alphabet
        v = sum(d * 45 ** j for j, d in enumerate(chunk))
        size = 2 if len(chunk) == 3 else 1
        if v >= 256 ** size:
            raise ValueError("group out of range")
        out += v.to_bytes(size, "big")
    return bytes(out)


def _depth(v):
    if isinstance(v, cbor2.CBORTag):
        return 1 + _depth(v.value)
    if isinstance(v, list):
        return 1 + max([_depth(x) for x in v] or [0])
    if isinstance(v, dict):
        return 1 + max([_depth(x) for x in list(v) + list(v.values())] or [0])
    return 0


def strict_cbor(data):
    fp = io.BytesIO(data)
    v = cbor2.CBORDecoder(fp).decode()
    if fp.tell() != len(data) or _depth(v) > 16:
        raise ValueError("trailing bytes or too deep")
    return v


_MISSING = object()


def is_map(v):
    # cbor2 hands out maps inside tags as its frozendict
    return isinstance(v, (dict, cbor2.frozendict))


def lab(m, n):
    """Claim/label n of a map: exact ints only (a CBOR true key is not label 1)."""
    for k, v in m.items():
        if k == n and type(k) is type(n):
            return v
    return _MISSING


def verify_sig(alg, pub, sig, tbs):
    if alg == -8:
        ed25519.Ed25519PublicKey.from_public_bytes(pub).verify(sig, tbs)
    else:
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"),
                                   int.from_bytes(sig[32:], "big"))
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), pub).verify(
            der, tbs, ec.ECDSA(hashes.SHA256()))


def open_list(cose, root_pub):
    """The payload of a trust or revocation list whose signature verifies under the root."""
    msg = strict_cbor(cose)
    assert isinstance(msg, cbor2.CBORTag) and msg.tag == 18
    prot_b, _unprot, body, sig = msg.value
    prot = cbor2.loads(prot_b)
    verify_sig(prot[1], root_pub, sig, cbor2.dumps(["Signature1", prot_b, b"", body]))
    return cbor2.loads(body)


def _text(v, lo, hi):
    return type(v) is str and lo <= len(v) <= hi


def _int(v):
    return type(v) is int


def claims_ok(p):
    if not is_map(p):
        return False
    iss, cti, iat = lab(p, 1), lab(p, 7), lab(p, 6)
    mid, ep, tier = lab(p, "mid"), lab(p, "ep"), lab(p, "tier")
    nm, exp = lab(p, "nm"), lab(p, 4)
    return (type(iss) is str and type(cti) is bytes and 1 <= len(cti) <= 32 and _int(iat)
            and _text(mid, 1, 64) and _int(ep) and ep >= 0 and _text(tier, 0, 32)
            and (nm is _MISSING or _text(nm, 0, 64)) and (exp is _MISSING or _int(exp)))


def member_verdict(token, root_hex, trust_text, rev_text, now, clock_trusted=True):
    """SPEC 8.1 verdict of a PM1 token, written from the SPEC alone."""
    root = bytes.fromhex(root_hex)
    keys = {k["kid"]: k for k in open_list(b45decode(trust_text[4:]), root)["keys"]}
    mem = open_list(b45decode(rev_text[4:]), root).get("mem", []) if rev_text else []
    # 1-2: text and COSE structure
    if not token.startswith("PM1:") or len(token) > 1200:
        return "malformed", None
    try:
        msg = strict_cbor(b45decode(token[4:]))
        if isinstance(msg, cbor2.CBORTag):
            if msg.tag != 18:
                return "malformed", None
            msg = msg.value
        # (cbor2 hands out an array inside a tag as a tuple)
        if not isinstance(msg, (list, tuple)) or len(msg) != 4:
            return "malformed", None
        prot_b, unprot, body, sig = msg
        if type(prot_b) is not bytes or not is_map(unprot) or type(body) is not bytes \
                or type(sig) is not bytes or len(sig) != 64:
            return "malformed", None
        prot = strict_cbor(prot_b) if prot_b else {}
        if not is_map(prot):
            return "malformed", None
    except (ValueError, cbor2.CBORDecodeError):
        return "malformed", None
    # 3-5: alg, kid, signature
    alg = lab(prot, 1)
    if alg not in (-7, -8) or type(alg) is not int:
        return "unsupported_alg", None
    kid = lab(prot, 4)
    if kid is _MISSING:
        kid = lab(unprot, 4)
    if type(kid) is not bytes:
        return "malformed", None
    key = keys.get(kid)
    if key is None:
        return "unknown_key", None
    if key["alg"] != alg:
        return "bad_signature", None
    try:
        verify_sig(alg, key["pub"], sig, cbor2.dumps(["Signature1", prot_b, b"", body]))
    except (InvalidSignature, ValueError):
        return "bad_signature", None
    # 6-8: claims, issuer, key window
    try:
        p = strict_cbor(body)
    except (ValueError, cbor2.CBORDecodeError):
        return "malformed", None
    if not claims_ok(p):
        return "malformed", None
    if p[1] != key["iss"]:
        return "wrong_issuer", p
    if not key["nbf"] <= p[6] < key["exp"]:
        return "key_not_valid", p
    # loss reports, then the dynamic code's clock
    if any(m == p["mid"] and p["ep"] <= e for m, e in mem):
        return "blocked", p
    if 4 in p:
        if not clock_trusted:
            return "clock_unset", p
        if now >= p[4]:
            return "expired", p
    return "ok", p


# ---------------------------------------------------------------- the vectors

VECTORS = make_member_vectors.FIXTURE


def _vectors():
    with open(VECTORS, encoding="utf-8") as f:
        return json.load(f)


def test_the_vector_file_is_what_the_generator_writes():
    with open(VECTORS, encoding="utf-8") as f:
        assert f.read() == make_member_vectors.render(make_member_vectors.build()), \
            "run python -m tests.support.make_member_vectors"


def test_the_vectors_cover_every_verdict_and_the_named_cases():
    v = _vectors()
    verdicts = {c["verdict"] for c in v["cases"]}
    assert verdicts == {"ok", "blocked", "expired", "clock_unset", "malformed",
                        "unsupported_alg", "unknown_key", "bad_signature", "wrong_issuer",
                        "key_not_valid"}
    names = {c["name"] for c in v["cases"]}
    for n in ("static_card_ok", "dynamic_ok", "lost_card_blocked", "older_card_blocked",
              "reissued_card_ok", "dynamic_expired", "forged_signature", "wrong_issuer",
              "unknown_key", "unsupported_alg_es512", "key_not_valid_retired_key", "mid_empty",
              "coupon_prefix"):
        assert n in names
    rev = open_list(b45decode(v["revocations"][4:]), bytes.fromhex(v["root_key"]))
    assert rev["mem"] == v["revoked_members"]


@pytest.mark.parametrize("case", _vectors()["cases"], ids=lambda c: c["name"])
def test_each_vector_verdict_holds_under_an_independent_decoder(case):
    v = _vectors()
    verdict, p = member_verdict(case["token"], v["root_key"], v["trustlist"], v["revocations"],
                                v["now"], case["clock_trusted"])
    assert verdict == case["verdict"]
    if "mid" in case:
        assert (case["mid"], case["ep"], case["tier"], case["dynamic"]) == \
            (p["mid"], p["ep"], p["tier"], 4 in p)
    else:
        assert verdict not in ("ok", "blocked", "expired", "clock_unset")


STRUCTURAL = ("lowercase_prefix", "lowercase_base45", "base45_bad_character",
              "base45_dangling_digit", "empty_body", "too_long", "not_cose", "cose_3_items",
              "sig_63_bytes", "cose_trailing_bytes", "kid_missing", "kid_text")


def test_steps_1_to_5_agree_with_the_terminals_coupon_reader():
    # Up to the signature a member code is read like a coupon (SPEC 8.1: steps 1-8 of 2.3 with
    # PM1:), so the terminal's coupon verifier, given the same bytes as PC1:, must agree.
    v = _vectors()
    trust = TrustStore(None, "", [bytes.fromhex(v["root_key"])])
    trust.install_text(v["trustlist"])
    checked = 0
    for c in v["cases"]:
        if c["verdict"] in ("unsupported_alg", "unknown_key", "bad_signature") \
                or c["name"] in STRUCTURAL:
            tok = "PC1:" + c["token"][4:] if c["token"].startswith("PM1:") else c["token"]
            got = Verifier(trust).check(tok, None, STORE, "CNY", v["now"])["verdict"]
            assert got == c["verdict"], c["name"]
            checked += 1
    assert checked == 10 + len(STRUCTURAL)


def test_the_vector_lists_install_on_the_terminal():
    v = _vectors()
    trust = TrustStore(None, "", [bytes.fromhex(v["root_key"])])
    assert trust.install_text(v["trustlist"])
    assert trust.install_text(v["revocations"])


# ---------------------------------------------------------------- keystore: codes and lists

def test_member_codes_from_the_keystore_verify(ks, clock):
    root = ks.root_keys()[0]
    trust = "PT1:" + _b45(ks.trustlist())
    card, cti = ks.sign_member_code(MERCHANT, "M-1", 1, "gold", name="Ada")
    verdict, p = member_verdict(card, root, trust, None, T0)
    assert verdict == "ok" and list(p) == [1, 7, 6, "mid", "ep", "tier", "nm"]
    assert (p[1], p[7], p[6], p["mid"], p["ep"], p["tier"], p["nm"]) == \
        (MERCHANT, cti, T0, "M-1", 1, "gold", "Ada")
    assert len(cti) == 16
    code, cti2 = ks.sign_member_code(MERCHANT, "M-1", 1, "gold", valid_s=120)
    verdict, p = member_verdict(code, root, trust, None, T0 + 119)
    assert verdict == "ok" and p[4] == T0 + 120 and "nm" not in p and cti2 != cti
    assert member_verdict(code, root, trust, None, T0 + 120)[0] == "expired"
    # ES256 issuer keys too
    ks.rotate(MERCHANT, alg="es256")
    trust = "PT1:" + _b45(ks.trustlist())
    card, _ = ks.sign_member_code(MERCHANT, "M-1", 2, "gold")
    assert cbor2.loads(cbor2.loads(b45decode(card[4:])).value[0])[1] == -7
    assert member_verdict(card, root, trust, None, T0)[0] == "ok"


@pytest.mark.parametrize("over,field", [
    (dict(mid=""), "mid"), (dict(mid="M" * 65), "mid"), (dict(mid=7), "mid"),
    (dict(ep=-1), "ep"), (dict(ep=True), "ep"), (dict(tier="T" * 33), "tier"),
    (dict(name="N" * 65), "name"), (dict(valid_s=0), "valid_s"),
])
def test_bad_member_code_inputs_are_refused(ks, over, field):
    args = dict(iss=MERCHANT, mid="M-1", ep=1, tier="gold")
    args.update(over)
    with pytest.raises(IssuanceError) as e:
        ks.sign_member_code(**args)
    assert e.value.field == field


def test_member_claims_refuse_an_exp_not_after_iat():
    with pytest.raises(IssuanceError) as e:
        member_claims(MERCHANT, b"\x01", T0, "M-1", 1, "gold", exp=T0)
    assert e.value.field == "exp"


def test_blocked_epochs_only_rise_and_coupon_lists_keep_their_shape(ks, tmp_path):
    root = bytes.fromhex(ks.root_keys()[0])
    rl = open_list(ks.revoke(cti=["c0ffee"]), root)
    assert "mem" not in rl and rl["cti"] == [bytes.fromhex("c0ffee")]
    rl = open_list(ks.block_member("M-1", 2), root)
    assert rl["mem"] == [["M-1", 2]] and rl["ver"] == 2 and rl["cti"] == [b"\xc0\xff\xee"]
    rl = open_list(ks.block_member("M-1", 1), root)  # lower: the block stays at 2
    assert rl["mem"] == [["M-1", 2]] and rl["ver"] == 3
    rl = open_list(ks.block_member("M-0", 0), root)
    assert rl["mem"] == [["M-0", 0], ["M-1", 2]]
    rl = open_list(ks.revoke(cmp=["OLD"]), root)
    assert rl["mem"] == [["M-0", 0], ["M-1", 2]] and rl["cmp"] == ["OLD"]
    assert ks.blocked_members() == {"M-0": 0, "M-1": 2}


def test_a_keystore_from_before_member_cards_opens(tmp_path, clock):
    path = str(tmp_path / "old")
    with Keystore(path, clock=clock, create=True) as k:
        k.create_root()
    state = os.path.join(path, "keystore.json")
    with open(state) as f:
        st = json.load(f)
    del st["revoked_mem"]
    with open(state, "w") as f:
        json.dump(st, f)
    with Keystore(path, clock=clock) as k:
        assert k.blocked_members() == {}
        assert open_list(k.block_member("M-1", 1),
                         bytes.fromhex(k.root_keys()[0]))["mem"] == [["M-1", 1]]


def _b45(data):
    from tests.support.coupons import b45encode
    return b45encode(data)


# ---------------------------------------------------------------- command line

def run_cli(capsys, *argv):
    rc = host_main.main(["members"] + [str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, [json.loads(line) for line in out.splitlines()], err


@pytest.fixture
def live_ks(tmp_path):
    """A keystore on the real clock (the command line signs at time.time())."""
    kdir = str(tmp_path / "live-keys")
    with Keystore(kdir, create=True) as k:
        k.create_root()
        k.create_issuer(MERCHANT, nbf=int(time.time()) - DAY)
    return kdir


def _lists(kdir):
    with Keystore(kdir) as k:
        rev = "PR1:" + _b45(k.revocations()) if k.rev_ver else None
        return k.root_keys()[0], "PT1:" + _b45(k.trustlist()), rev


def test_cli_end_to_end(where, live_ks, tmp_path, capsys):
    db = ["--db", where, "--keystore", live_ks]
    png, svg = tmp_path / "card.png", tmp_path / "card.svg"
    rc, [out], _ = run_cli(capsys, *db, "add", "M-7", "--name", "Grace H", "--tier", "silver",
                           "--balance", 5000, "--qr-png", png, "--qr-svg", svg)
    assert rc == 0
    m = out["member"]
    assert (m["mid"], m["name"], m["tier"], m["bal"], m["pts"], m["ep"], m["st"], m["iss"],
            m["vip_exp"]) == ("M-7", "Grace H", "silver", 5000, 0, 1, "active", MERCHANT, None)
    card1 = out["card"]
    root, trust, _ = _lists(live_ks)
    verdict, p = member_verdict(card1, root, trust, None, int(time.time()))
    assert verdict == "ok" and 4 not in p and (p["mid"], p["ep"], p["tier"], p["nm"]) == \
        ("M-7", 1, "silver", "Grace H") and p[7].hex() == m["card_cti"]
    # the QR files hold the card: the same bytes as the card's own QR code written again
    again = tmp_path / "again.png"
    qrsheet.qr_code(card1).save(str(again), kind="png", scale=8, border=4)
    assert png.read_bytes() == again.read_bytes() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ET.parse(svg).getroot().tag.endswith("svg")

    rc, [shown], _ = run_cli(capsys, *db, "show", "M-7")
    assert rc == 0 and shown["member"] == m and shown["card"] == card1

    # a dynamic code from the "app" pays once through the service
    rc, [code], _ = run_cli(capsys, *db, "code", "M-7", "--valid-s", 60)
    assert rc == 0 and code["ep"] == 1
    now = int(time.time())
    verdict, p = member_verdict(code["code"], root, trust, None, now)
    assert verdict == "ok" and p[7].hex() == code["cti"] and p[4] == code["exp"] \
        and now <= p[4] <= now + 60
    assert member_verdict(code["code"], root, trust, None, code["exp"])[0] == "expired"
    st = _open(where)
    try:
        till = Till(st)
        res, _ = till.decide(charge("member", 1200, mem="M-7", mcti=bytes.fromhex(code["cti"])))
        assert res["st"] == "approved" and res["bal"] == 3800 and res["pts"] == 12
        res, _ = till.decide(charge("member", 1, mem="M-7", mcti=bytes.fromhex(code["cti"])))
        assert res["code"] == "code_used"
    finally:
        st.close()

    rc, [top], _ = run_cli(capsys, *db, "topup", "M-7", 100000)
    assert rc == 0 and top["bonus"] == 10000 and top["member"]["bal"] == 3800 + 110000

    rc, rows, _ = run_cli(capsys, *db, "history", "M-7")
    assert rc == 0 and [(r["kind"], r["bal_delta"], r["pts_delta"], r["bal"]) for r in rows] == [
        ("open", 5000, 0, 5000), ("member", -1200, 12, 3800), ("topup", 110000, 0, 113800)]

    # loss report: blocked, a signed list with [M-7, 1] queued for the fleet and written as PR1
    rc, [blk], _ = run_cli(capsys, *db, "block", "M-7")
    assert rc == 0 and blk["member"]["st"] == "blocked" and blk["blocked"] == ["M-7", 1]
    with open(blk["revocations"]) as f:
        pr1 = f.read().strip("\r\n")
    assert pr1.startswith("PR1:") and blk["revocations"] == os.path.join(live_ks,
                                                                         "revocations.txt")
    st = _open(where)
    try:
        with st.transaction() as tx:
            queued = service.take_outbox(tx)
    finally:
        st.close()
    assert queued == [(service.FLEET, "revocations", b45decode(pr1[4:]))]
    rl = open_list(queued[0][2], bytes.fromhex(root))
    assert rl["mem"] == [["M-7", 1]] and rl["ver"] == blk["rev_ver"]
    assert TrustStore(None, "", [bytes.fromhex(root)]).install_revocations(queued[0][2])
    assert member_verdict(card1, root, trust, pr1, int(time.time()))[0] == "blocked"
    rc, _, err = run_cli(capsys, *db, "code", "M-7")
    assert rc == 1 and "blocked" in err
    rc, _, err = run_cli(capsys, *db, "topup", "M-7", 100)
    assert rc == 1 and "blocked" in err

    # reissue: epoch 2, active, the new card verifies, the old one stays blocked
    rc, [re], _ = run_cli(capsys, *db, "reissue", "M-7", "--qr-png", tmp_path / "card2.png")
    assert rc == 0 and re["member"]["ep"] == 2 and re["member"]["st"] == "active"
    assert re["blocked"] == ["M-7", 1] and "revocations" not in re  # the list had it already
    assert (tmp_path / "card2.png").exists()
    _, _, pr1_now = _lists(live_ks)
    assert member_verdict(re["card"], root, trust, pr1_now, int(time.time()))[0] == "ok"
    assert member_verdict(card1, root, trust, pr1_now, int(time.time()))[0] == "blocked"

    # a second loss: epoch 2 blocked too; reissue without a block blocks the replaced card
    rc, [blk2], _ = run_cli(capsys, *db, "block", "M-7")
    assert blk2["blocked"] == ["M-7", 2]
    rc, [re3], _ = run_cli(capsys, *db, "reissue", "M-7")
    assert re3["member"]["ep"] == 3
    rc, [re4], _ = run_cli(capsys, *db, "reissue", "M-7")
    assert rc == 0 and re4["member"]["ep"] == 4 and re4["blocked"] == ["M-7", 3]
    _, _, pr1_now = _lists(live_ks)
    assert open_list(b45decode(pr1_now[4:]), bytes.fromhex(root))["mem"] == [["M-7", 3]]
    for card, verdict in ((card1, "blocked"), (re["card"], "blocked"), (re3["card"], "blocked"),
                          (re4["card"], "ok")):
        assert member_verdict(card, root, trust, pr1_now, int(time.time()))[0] == verdict
    rc, rows, _ = run_cli(capsys, *db, "history", "M-7")
    assert [r["kind"] for r in rows][3:] == ["block", "reissue", "block", "reissue", "reissue"]


def test_cli_errors(where, live_ks, tmp_path, capsys):
    db = ["--db", where, "--keystore", live_ks]
    assert run_cli(capsys, *db, "add", "M-1", "--name", "A", "--tier", "gold")[0] == 0
    rc, _, err = run_cli(capsys, *db, "add", "M-1", "--name", "A", "--tier", "gold")
    assert rc == 1 and "exists" in err
    for cmd in ("show", "history", "block", "reissue", "code"):
        rc, out, err = run_cli(capsys, *db, cmd, "M-404")
        assert (rc, out) == (1, []) and "unknown_member" in err, cmd
    rc, _, err = run_cli(capsys, "--db", where, "block", "M-1")
    assert rc == 1 and "--keystore" in err
    rc, _, err = run_cli(capsys, *db, "add", "M-2", "--name", "A", "--tier", "T" * 40)
    assert rc == 1 and "tier" in err
    assert run_cli(capsys, *db, "show", "M-2")[0] == 1  # nothing was added
    with pytest.raises(SystemExit) as e:
        run_cli(capsys, *db, "topup", "M-1", "-5")
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        run_cli(capsys, *db, "code", "M-1", "--valid-s", "0")
    assert e.value.code == 2
    # a second merchant in the keystore: add needs --iss
    with Keystore(live_ks) as k:
        k.create_issuer("M-OTHER", nbf=int(time.time()) - DAY)
    rc, _, err = run_cli(capsys, *db, "add", "M-3", "--name", "A", "--tier", "gold")
    assert rc == 1 and "--iss" in err
    rc, [out], _ = run_cli(capsys, *db, "add", "M-3", "--name", "A", "--tier", "gold",
                           "--iss", "M-OTHER")
    assert rc == 0 and out["member"]["iss"] == "M-OTHER"


def test_a_balance_too_low_is_insufficient_balance_before_any_code_check(store, ks):
    """SPEC 8.1's code wins: a member payment without a dynamic code (SPEC 3.2's fields alone)
    over the balance is declined insufficient_balance, not code_required."""
    new_member(store, ks, bal=300)
    res, _ = Till(store).decide(charge("member", 301, mem="M-1"))
    assert (res["st"], res["code"]) == ("declined", "insufficient_balance")
    res, _ = Till(store).decide(charge("member", 300, mem="M-1"))
    assert (res["st"], res["code"]) == ("declined", "code_required")
