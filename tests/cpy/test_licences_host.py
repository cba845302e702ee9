# The store's service licence, host side (SPEC 8.5): host_sim/licences.py on the billing engine.
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections import Counter

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from host_sim import licences, periods, service
from host_sim.billing import DAY, BillingError, Gateway
from host_sim.issuance import ALG_EDDSA, ALG_ES256, Keystore
from host_sim.periods import utc
from host_sim.registry import Registry
from host_sim.store import open_store
from protocol import base45, messages

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
T0 = utc(2027, 1, 31, 12)


def verify(root_pub, cose):
    """The licence payload if the COSE_Sign1 verifies under the raw root public key."""
    msg = cbor2.loads(cose)
    assert isinstance(msg, cbor2.CBORTag) and msg.tag == 18
    prot, _unprot, payload, sig = msg.value
    alg = cbor2.loads(prot)[1]
    tbs = cbor2.dumps(["Signature1", prot, b"", payload])
    if len(root_pub) == 32:
        assert alg == ALG_EDDSA
        ed25519.Ed25519PublicKey.from_public_bytes(root_pub).verify(sig, tbs)
    else:
        assert alg == ALG_ES256
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), root_pub)
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"),
                                   int.from_bytes(sig[32:], "big"))
        key.verify(der, tbs, ec.ECDSA(hashes.SHA256()))
    return cbor2.loads(payload)


@pytest.fixture(params=["eddsa", "es256"])
def keys(tmp_path, request):
    ks = Keystore(str(tmp_path / "keys"), create=True)
    pub = bytes.fromhex(ks.create_root(request.param))
    yield ks, pub
    ks.close()


def registered(path):
    reg = Registry(path)
    for dev in ("T-1", "T-2"):
        reg.register(dev, "S-1", "M-1")
    reg.close()
    return path


@pytest.fixture
def db(host_db):
    # SQLite and PostgreSQL (conftest's host_db).
    return registered(host_db)


@pytest.fixture
def book(db, keys):
    store = open_store(db)
    b = licences.LicenceBook(store, keys[0])
    b.set_plan("basic", 4900, "month", grace=3 * DAY)
    yield b
    store.close()


def outbox(store):
    with store.read() as tx:
        rows = tx.execute("SELECT device_id, mtype, body FROM host_outbox ORDER BY id").fetchall()
    return [(d, t, cbor2.loads(bytes(b))) for d, t, b in rows]


def test_issue_is_signed_by_the_root_key_and_pushed(book, keys):
    lic = book.issue("T-1", "basic", T0)
    cose = lic["cose"]
    text = licences.text_form(cose)
    assert text.startswith("PL1:") and base45.decode(text[4:]) == cose
    payload = verify(keys[1], cose)
    end = periods.start(T0, "month", 1)
    assert payload == {"ver": 1, "dev": "T-1", "plan": "basic", "exp": end, "grace": 3 * DAY}
    pushed = outbox(book.store)
    assert pushed == [("T-1", "licence", {"lic": cose})]
    messages.check("licence", pushed[0][2])
    with book.store.read() as tx:
        ledger = book.engine.ledger(tx, "licence")
    assert [(r["owner"], r["st"], r["amt"], r["src"]) for r in ledger] == [
        ("T-1", "paid", 4900, "gateway")]


def test_ver_only_grows_and_renew_pushes_a_later_licence(book, keys):
    first = book.issue("T-1", "basic", T0)
    renewed = book.renew("T-1", T0 + DAY)
    again = book.issue("T-1", "basic", T0 + 2 * DAY, exp=T0 + 90 * DAY)
    pays = [verify(keys[1], lic["cose"]) for lic in (first, renewed, again)]
    assert [p["ver"] for p in pays] == [1, 2, 3]
    assert pays[1]["exp"] == periods.start(T0, "month", 2) > pays[0]["exp"]
    assert pays[2]["exp"] == T0 + 90 * DAY
    assert [b["lic"] for _, _, b in outbox(book.store)] == [
        first["cose"], renewed["cose"], again["cose"]]
    # Another terminal counts its own versions.
    assert verify(keys[1], book.issue("T-2", "basic", T0)["cose"])["ver"] == 1


def test_issue_refuses_unknown_plans_devices_and_a_missing_keystore(book, db):
    for dev, plan, code in (("T-1", "gold", "unknown_plan"), ("T-404", "basic",
                                                             "unknown_device")):
        with pytest.raises(BillingError) as e:
            book.issue(dev, plan, T0)
        assert e.value.code == code
    with pytest.raises(BillingError) as e:
        book.issue("T-1", "basic", T0, exp=T0 - 1)
    assert e.value.code == "bad_time"
    store = open_store(db)
    with pytest.raises(BillingError) as e:
        licences.LicenceBook(store).issue("T-1", "basic", T0)
    assert e.value.code == "no_keystore"
    store.close()
    assert outbox(book.store) == []


def test_tick_renews_once_per_period_with_reminders_30_7_1_days_before(book, keys):
    book.issue("T-1", "basic", T0, exp=utc(2027, 3, 31, 12))  # granted until Mar 31
    events = []
    for t in range(T0, utc(2027, 6, 1), 3600 * 6):
        events += book.tick(t, Gateway())
    renewals = [utc(2027, 3, 31, 12), utc(2027, 4, 30, 12), utc(2027, 5, 31, 12)]
    rem = [(e["start"], e["lead"], e["at"]) for e in events if e["act"] == "reminder"]
    june = utc(2027, 6, 30, 12)  # its 30-day reminder falls on May 31
    assert rem == [(r, lead, r - lead) for r in renewals for lead in licences.LEADS] + [
        (june, 30 * DAY, june - 30 * DAY)]
    assert [(e["start"], e["at"]) for e in events if e["act"] == "paid"] == [
        (r, r) for r in renewals]
    pushed = [b["lic"] for d, t, b in outbox(book.store)]
    exps = [verify(keys[1], c)["exp"] for c in pushed]
    assert exps == renewals + [june]
    assert [verify(keys[1], c)["ver"] for c in pushed] == [1, 2, 3, 4]


def test_a_failing_subscription_lapses_and_the_licence_runs_out(book):
    book.issue("T-1", "basic", T0, exp=T0 + 10 * DAY)
    events = []
    for t in range(T0, T0 + 40 * DAY, 3600):
        events += book.tick(t, Gateway(1.0))
    acts = Counter(e["act"] for e in events)
    assert acts == {"reminder": 2, "failed": 8, "lapsed": 1}  # 30 days was before the issue
    with book.store.read() as tx:
        lic = licences.current_licence(tx, "T-1")
    assert lic["exp"] == T0 + 10 * DAY and lic["ver"] == 1
    with pytest.raises(BillingError):
        book.renew("T-1", T0 + 41 * DAY)


def test_hello_gets_the_current_licence(book):
    svc = licences.Licences(book.store)
    msg = service.Msg("T-1", "S-1", "hello", {}, 1, T0)
    with book.store.read() as tx:
        assert svc.on_hello(tx, msg) == []
    book.issue("T-1", "basic", T0)
    book.renew("T-1", T0 + DAY)
    with book.store.read() as tx:
        out = svc.on_hello(tx, msg)
        cur = licences.current_licence(tx, "T-1")
    assert [(o.device_id, o.mtype, o.body) for o in out] == [
        ("T-1", "licence", {"lic": cur["cose"]})]
    assert licences.payload_of(cur["cose"])["ver"] == 2


# ---------------------------------------------------------------- the command line

def cli(*args):
    p = subprocess.run([sys.executable, "-m", "host_sim", "licence", *args],
                       capture_output=True, text=True, cwd=ROOT, timeout=60,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    return p.returncode, [json.loads(x) for x in p.stdout.splitlines()], p.stderr


def test_command_line_and_two_ticks_at_once_renew_once(keys, tmp_path):
    db = registered(str(tmp_path / "host.db"))
    ks_dir = keys[0].path
    base = ["--db", db, "--keystore", ks_dir]
    rc, out, _ = cli(*base, "plan", "basic", "--price", "4900", "--cycle", "month",
                     "--grace-s", "86400")
    assert rc == 0 and out == [{"plan": "basic", "price": 4900, "cycle": "month",
                                "grace": 86400}]
    for dev in ("T-1", "T-2"):
        rc, out, err = cli(*base, "issue", dev, "--plan", "basic", "--exp", str(T0 + 5 * DAY),
                           "--now", str(T0))
        assert rc == 0, err
        assert out[0]["text"].startswith("PL1:") and out[0]["exp"] == T0 + 5 * DAY
        cose = base45.decode(out[0]["text"][4:])
        assert verify(keys[1], cose)["dev"] == dev
    rc, out, _ = cli(*base, "show", "T-1")
    assert rc == 0 and out[0]["ver"] == 1 and out[0]["sub"]["renews_at"] == T0 + 5 * DAY
    # Two schedulers at the same instant, released together: each renewal happens once.
    now = T0 + 5 * DAY
    gate = sqlite3.connect(db, isolation_level=None)
    gate.execute("BEGIN EXCLUSIVE")
    cmd = [sys.executable, "-m", "host_sim", "licence", *base, "tick", "--now", str(now)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=ROOT)) for _ in range(2)]
    time.sleep(1.5)
    gate.execute("ROLLBACK")
    gate.close()
    lines = []
    for p in procs:
        o, e = p.communicate(timeout=60)
        assert p.returncode == 0, e
        lines += [json.loads(x) for x in o.decode().splitlines()]
    paid = Counter((x["dev"], x["start"]) for x in lines if x["act"] == "paid")
    assert paid == {("T-1", now): 1, ("T-2", now): 1}
    rc, out, _ = cli(*base, "show", "T-1")
    assert out[0]["ver"] == 2 and out[0]["exp"] == periods.start(now, "month", 1)
    rc, out, _ = cli(*base, "renew", "T-1", "--now", str(now + DAY))
    assert rc == 0 and out[0]["ver"] == 3 and out[0]["exp"] == periods.start(now, "month", 2)
    assert cli(*base, "show", "T-9")[0] == 1
    assert cli("--db", db, "issue", "T-1", "--plan", "basic")[0] == 2  # no keystore
    assert cli(*base, "plan", "x", "--price", "1", "--cycle", "week")[0] == 2
