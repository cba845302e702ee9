# Coupon issuance (host_sim/issuance.py, host_sim/issue.py): every token, trust list and revocation
# list the tool makes is checked twice, by the device's own verifier (device.coupons.verifier
# over device.trust.lists) and by an independent reading written here with cbor2 + cryptography.
import csv
import hashlib
import json
import os
import stat
import struct
import xml.etree.ElementTree as ET
import zlib

import cbor2
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from device.coupons.verifier import Verifier
from device.trust.lists import TrustStore
from host_sim import issuance, issue, qrsheet
from host_sim.issuance import IssuanceError, Keystore

T0 = 1_800_000_000
DAY = 86400
STORE = "S-001"
CUR = "CNY"
MERCHANT = "M-ACME"
_B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"


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
    yield k
    k.close()


# ---------------------------------------------------------------- independent reading

def b45decode(text):
    out = bytearray()
    for i in range(0, len(text), 3):
        chunk = [_B45.index(c) for c in text[i:i + 3]]
        v = sum(d * 45 ** j for j, d in enumerate(chunk))
        out += v.to_bytes(2 if len(chunk) == 3 else 1, "big")
    return bytes(out)


def open_sign1(cose, pub):
    """(protected map, payload map) of a COSE_Sign1 whose signature verifies under pub."""
    msg = cbor2.loads(cose)
    assert isinstance(msg, cbor2.CBORTag) and msg.tag == 18
    prot_b, unprot, body, sig = msg.value
    prot = cbor2.loads(prot_b)
    assert unprot == {} and len(sig) == 64
    tbs = cbor2.dumps(["Signature1", prot_b, b"", body])
    if prot[1] == -8:
        ed25519.Ed25519PublicKey.from_public_bytes(pub).verify(sig, tbs)
    else:
        assert prot[1] == -7
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"),
                                   int.from_bytes(sig[32:], "big"))
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), pub).verify(
            der, tbs, ec.ECDSA(hashes.SHA256()))
    return prot, cbor2.loads(body)


def independent_verdict(token, root_hex, trust_cose, rev_cose=None, now=T0 + DAY,
                        store=STORE, currency=CUR, total=10000):
    root = bytes.fromhex(root_hex)
    _, tl = open_sign1(trust_cose, root)
    keys = {k["kid"]: k for k in tl["keys"]}
    cose = b45decode(token[4:])
    assert token.startswith("PC1:")
    prot = cbor2.loads(cbor2.loads(cose).value[0])
    key = keys.get(prot[4])
    if key is None:
        return "unknown_key"
    if key["alg"] != prot[1]:
        return "bad_signature"
    try:
        _, p = open_sign1(cose, key["pub"])
    except InvalidSignature:
        return "bad_signature"
    if p[1] != key["iss"]:
        return "wrong_issuer"
    if not key["nbf"] <= p[6] < key["exp"]:
        return "key_not_valid"
    if rev_cose is not None:
        _, rl = open_sign1(rev_cose, root)
        if p[7] in rl["cti"] or p["cmp"] in rl["cmp"]:
            return "revoked"
    if not p[5] <= now < p[4]:
        return "expired" if now >= p[4] else "not_yet_valid"
    if "st" in p and store not in p["st"]:
        return "wrong_store"
    if "cur" in p and p["cur"] != currency:
        return "wrong_currency"
    if total < p.get("min", 0):
        return "below_min_spend"
    return "ok"


def device_verdict(token, root_hex, trust_cose, rev_cose=None, now=T0 + DAY, store=STORE,
                   currency=CUR, total=10000):
    trust = TrustStore(None, "", [bytes.fromhex(root_hex)])
    trust.install_trustlist(trust_cose)
    if rev_cose is not None:
        trust.install_revocations(rev_cose)
    return Verifier(trust).check(token, total, store, currency, now)


def verdicts(token, root_hex, trust_cose, rev_cose=None, **kw):
    """Both readings; they must agree."""
    dev = device_verdict(token, root_hex, trust_cose, rev_cose, **kw)["verdict"]
    ind = independent_verdict(token, root_hex, trust_cose, rev_cose, **kw)
    assert dev == ind, (dev, ind)
    return dev


def payload_of(token):
    return cbor2.loads(cbor2.loads(b45decode(token[4:])).value[2])


def campaign(ks, cmp="SPRING", **over):
    args = dict(name="Spring sale", kind="pct", val=10, nbf=T0, exp=T0 + 30 * DAY,
                quantity=3, iss=MERCHANT)
    args.update(over)
    return ks.create_campaign(cmp, **args)


# ---------------------------------------------------------------- tokens

@pytest.mark.parametrize("root_alg,issuer_alg", [("eddsa", "eddsa"), ("es256", "es256"),
                                                 ("eddsa", "es256"), ("es256", "eddsa")])
def test_tokens_verify_on_device_and_independently(ks, root_alg, issuer_alg):
    root = ks.create_root(root_alg)
    assert len(bytes.fromhex(root)) == (32 if root_alg == "eddsa" else 65)
    kid = ks.create_issuer(MERCHANT, issuer_alg)
    key = ks.issuer_keys(MERCHANT)[0]
    assert kid == hashlib.sha256(bytes.fromhex(key["pub"])).digest()[:8].hex()
    tokens = campaign(ks, quantity=4)
    tl = ks.trustlist()
    ctis = set()
    for t in tokens:
        assert t.startswith("PC1:") and t == t.upper()
        assert verdicts(t, root, tl) == "ok"
        r = device_verdict(t, root, tl, total=12345)
        assert r["discount"] == 1234 and r["campaign"] == "SPRING"
        prot = cbor2.loads(cbor2.loads(b45decode(t[4:])).value[0])
        assert prot == {1: -8 if issuer_alg == "eddsa" else -7, 4: bytes.fromhex(kid)}
        ctis.add(payload_of(t)[7])
    assert len(ctis) == 4 and all(len(c) == 16 for c in ctis)


def test_payload_has_exactly_the_spec_claims(ks, clock):
    ks.create_root()
    ks.create_issuer(MERCHANT)
    clock.t = T0 + 5
    [t] = campaign(ks, "FREECOFFEE", name="Free coffee", kind="item", val=2, sku="SKU-42",
                   min_spend=3000, cur=CUR, stores=["S-001", "S-002"], max_uses=3, quantity=1)
    p = payload_of(t)
    assert list(p) == [1, 7, 6, 5, 4, "cmp", "nm", "kd", "val", "cur", "sku", "min", "st", "mu"]
    assert p[1] == MERCHANT and p[6] == T0 + 5 and p[5] == T0 and p[4] == T0 + 30 * DAY
    assert (p["cmp"], p["nm"], p["kd"], p["val"], p["cur"], p["sku"], p["min"], p["st"],
            p["mu"]) == ("FREECOFFEE", "Free coffee", "item", 2, CUR, "SKU-42", 3000,
                         ["S-001", "S-002"], 3)
    root = ks.root_keys()[0]
    assert verdicts(t, root, ks.trustlist(), total=3000) == "ok"
    assert verdicts(t, root, ks.trustlist(), total=2999) == "below_min_spend"
    assert verdicts(t, root, ks.trustlist(), store="S-003") == "wrong_store"
    # optional claims are left out when not given
    [t2] = campaign(ks, "AMT", kind="amt", val=500, cur=CUR, quantity=1, name=None)
    assert list(payload_of(t2)) == [1, 7, 6, 5, 4, "cmp", "kd", "val", "cur", "mu"]


def test_iat_outside_the_key_window_is_refused(ks, clock):
    ks.create_root()
    kid = ks.create_issuer(MERCHANT, nbf=T0 + DAY, exp=T0 + 2 * DAY)
    with pytest.raises(IssuanceError) as e:
        campaign(ks, kid=kid)
    assert e.value.field == "iat" and "window" in str(e.value)
    with pytest.raises(IssuanceError) as e:
        campaign(ks)  # no kid: no key of the merchant is valid now
    assert e.value.field == "iss"
    clock.t = T0 + DAY
    assert len(campaign(ks, kid=kid)) == 3
    with pytest.raises(IssuanceError) as e:
        campaign(ks, iss="M-OTHER", kid=kid)
    assert e.value.field == "kid"


# ---------------------------------------------------------------- rotation

def test_rotation_keeps_old_coupons_and_retires_the_old_key(ks, clock):
    root = ks.create_root()
    old = ks.create_issuer(MERCHANT, nbf=T0, exp=T0 + 365 * DAY)
    clock.t = T0 + 100
    [early] = campaign(ks, "EARLY", quantity=1)
    clock.t = T0 + 300
    [late] = campaign(ks, "LATE", quantity=1)  # old key, after the time it will be retired at
    ver_before = ks.trust_ver
    clock.t = T0 + 400
    new = ks.rotate(MERCHANT, retire_old_at=T0 + 200)
    assert new != old and ks.trust_ver == ver_before + 1
    [fresh] = campaign(ks, "FRESH", quantity=1)
    assert payload_of(fresh)[6] == T0 + 400
    tl = ks.trustlist()
    _, p = open_sign1(tl, bytes.fromhex(root))
    assert {k["kid"].hex(): k["exp"] for k in p["keys"]}[old] == T0 + 200
    assert verdicts(early, root, tl) == "ok"
    assert verdicts(late, root, tl) == "key_not_valid"
    assert verdicts(fresh, root, tl) == "ok"
    # The tool will not sign with the retired key any more.
    with pytest.raises(IssuanceError) as e:
        campaign(ks, "AGAIN", kid=old)
    assert e.value.field == "iat"


def test_rotation_without_retiring_keeps_both_keys_valid(ks, clock):
    root = ks.create_root()
    ks.create_issuer(MERCHANT, "eddsa")
    [a] = campaign(ks, "A", quantity=1)
    clock.t += 10
    ks.rotate(MERCHANT, "es256")
    [b] = campaign(ks, "B", quantity=1)
    assert cbor2.loads(cbor2.loads(b45decode(b[4:])).value[0])[1] == -7  # the new key signs
    tl = ks.trustlist()
    assert verdicts(a, root, tl) == "ok" and verdicts(b, root, tl) == "ok"


def test_rotate_rejects_a_retire_time_outside_the_old_window(ks):
    ks.create_root()
    ks.create_issuer(MERCHANT, nbf=T0 - 10, exp=T0 + 100)
    with pytest.raises(IssuanceError) as e:
        ks.rotate(MERCHANT, retire_old_at=T0 + 101)
    assert e.value.field == "retire_old_at"
    with pytest.raises(IssuanceError) as e:
        ks.rotate("M-NOBODY")
    assert e.value.field == "iss"


# ---------------------------------------------------------------- lists

def test_revocation_by_cti_and_by_campaign(ks):
    root = ks.create_root()
    ks.create_issuer(MERCHANT)
    a1, a2 = campaign(ks, "A", quantity=2)
    [b1] = campaign(ks, "B", quantity=1)
    tl = ks.trustlist()
    rl1 = ks.revoke(cti=[payload_of(a1)[7].hex()])
    assert verdicts(a1, root, tl, rl1) == "revoked"
    assert verdicts(a2, root, tl, rl1) == "ok"
    rl2 = ks.revoke(cmp=["B"])
    _, p1 = open_sign1(rl1, bytes.fromhex(root))
    _, p2 = open_sign1(rl2, bytes.fromhex(root))
    assert p2["ver"] == p1["ver"] + 1 and list(p2) == ["ver", "iat", "cti", "cmp"]
    assert p2["cti"] == [payload_of(a1)[7]] and p2["cmp"] == ["B"]  # cumulative
    assert verdicts(a1, root, tl, rl2) == "revoked"
    assert verdicts(b1, root, tl, rl2) == "revoked"
    assert verdicts(a2, root, tl, rl2) == "ok"
    with pytest.raises(IssuanceError):
        ks.revoke()
    with pytest.raises(IssuanceError) as e:
        ks.revoke(cti=["00" * 33])
    assert e.value.field == "cti"


def test_a_revocation_list_over_the_maximum_is_refused_and_nothing_changes(ks, tmp_path,
                                                                          capsys):
    from protocol import limits

    root = ks.create_root()
    ks.create_issuer(MERCHANT)
    ctis = [hashlib.sha256(b"r %d" % i).digest()[:16].hex() for i in range(3900)]
    fits = ks.revoke(cti=ctis[:3800])  # about 3 800 serials of 16 bytes fit
    assert len(fits) <= limits.LIST_MAX_BYTES
    _, p = open_sign1(fits, bytes.fromhex(root))
    assert p["cti"] == sorted(p["cti"])  # written in order: one pass on the terminal
    store = TrustStore(None, "", [bytes.fromhex(root)])
    assert store.install_revocations(fits) == p["ver"]
    with pytest.raises(IssuanceError) as e:
        ks.revoke(cti=ctis[3800:])
    assert e.value.field == "too_large"
    assert "65536" in e.value.message and "--cmp" in e.value.message
    again = Keystore(ks.path)
    assert again.rev_ver == ks.rev_ver == p["ver"] and len(again.revoked()[0]) == 3800
    again.close()
    assert ks.revocations() != b"" and ks.revoke(cmp=["OLD"])  # a campaign still fits
    # the issuer's publish refuses a list file over the maximum before it connects anywhere
    r = ks._root()
    big = issuance.sign1(r["alg"], bytes.fromhex(r["kid"]), ks._private_key(r["kid"]),
                         {"ver": 99, "iat": 0, "cti": [bytes(16)] * 4000, "cmp": []})
    path = issuance.write_text(str(tmp_path / "big.txt"), "PR1:", big)
    assert issue.main(["--keys", ks.path, "publish", "--broker-port", "1",
                       "--revocations", path]) == 1
    err = capsys.readouterr().err
    assert "too_large" in err and "terminals take at most 65536" in err


def test_trust_list_version_strictly_increases_and_persists(ks, clock, tmp_path):
    root = ks.create_root()
    store = TrustStore(None, "", [bytes.fromhex(root)])
    with pytest.raises(IssuanceError):
        ks.trustlist()  # no keys yet
    seen = []

    def publish():
        tl = ks.trustlist()
        _, p = open_sign1(tl, bytes.fromhex(root))
        seen.append(p["ver"])
        assert store.install_trustlist(tl) == p["ver"]
        return tl, p

    ks.create_issuer(MERCHANT)
    first, _ = publish()
    ks.create_issuer("M-OTHER", "es256")
    publish()
    clock.t += 5
    ks.rotate(MERCHANT)
    _, p = publish()
    reopened = Keystore(ks.path, clock=clock)
    reopened.create_issuer("M-THIRD")
    tl = reopened.trustlist()
    _, p = open_sign1(tl, bytes.fromhex(root))
    seen.append(p["ver"])
    reopened.close()
    assert seen == sorted(set(seen)) and seen[0] >= 1
    assert [k["iss"] for k in p["keys"]] == [MERCHANT, "M-OTHER", MERCHANT, "M-THIRD"]
    assert set(p) == {"ver", "iat", "keys"}
    assert p["keys"][1]["alg"] == -7 and len(p["keys"][1]["pub"]) == 65
    from device.trust.lists import TrustError
    with pytest.raises(TrustError) as e:
        store.install_trustlist(first)
    assert e.value.code == "rollback"


def test_text_forms_round_trip_and_suit_the_host_reader(ks, tmp_path):
    from host_sim.__main__ import read_list

    root = ks.create_root()
    ks.create_issuer(MERCHANT)
    tl = ks.trustlist()
    rl = ks.revoke(cmp=["X"])
    tpath = issuance.write_text(str(tmp_path / "t.txt"), "PT1:", tl)
    rpath = issuance.write_text(str(tmp_path / "r.txt"), "PR1:", rl)
    assert issuance.read_text(tpath, "PT1:") == tl == read_list(tpath, "trustlist")
    assert read_list(rpath, "revocations") == rl
    with open(tpath) as f:
        text = f.read().strip("\n")
    store = TrustStore(None, "", [bytes.fromhex(root)])
    assert store.install_text(text, "trustlist") == ("trustlist", ks.trust_ver)
    with pytest.raises(IssuanceError):
        issuance.read_text(rpath, "PT1:")


def test_a_new_root_bumps_versions_so_its_lists_install(ks):
    old_root = ks.create_root()
    ks.create_issuer(MERCHANT)
    ks.revoke(cmp=["X"])
    tl1, v1, r1 = ks.trustlist(), ks.trust_ver, ks.rev_ver
    with pytest.raises(IssuanceError) as e:
        ks.create_root()
    assert e.value.field == "root"
    new_root = ks.create_root("es256", add=True)
    assert ks.root_keys() == [old_root, new_root]
    assert ks.trust_ver == v1 + 1 and ks.rev_ver == r1 + 1
    store = TrustStore(None, "", [bytes.fromhex(old_root), bytes.fromhex(new_root)])
    store.install_trustlist(tl1)
    assert store.install_trustlist(ks.trustlist()) == v1 + 1
    assert open_sign1(ks.trustlist(), bytes.fromhex(new_root))[0][1] == -7


# ---------------------------------------------------------------- campaign inputs

BAD = [
    (dict(kind="pct", val=0), "val"),
    (dict(kind="pct", val=101), "val"),
    (dict(kind="pct", val=True), "val"),
    (dict(kind="amt", val=500), "cur"),
    (dict(kind="amt", val=0, cur=CUR), "val"),
    (dict(min_spend=100), "cur"),
    (dict(min_spend=-1, cur=CUR), "min"),
    (dict(kind="item", val=1), "sku"),
    (dict(kind="item", val=0, sku="X"), "val"),
    (dict(sku="X"), "sku"),
    (dict(kind="bogo"), "kind"),
    (dict(cur="cny"), "cur"),
    (dict(nbf=T0 + 10, exp=T0 + 10), "exp"),
    (dict(nbf=T0 - 20, exp=T0 - 10), "exp"),
    (dict(stores=[]), "stores"),
    (dict(stores=["S-001", ""]), "stores"),
    (dict(max_uses=0), "max_uses"),
    (dict(quantity=0), "quantity"),
    (dict(name=""), "name"),
    (dict(iss="M-NOBODY"), "iss"),
    (dict(name="X" * 900), "token"),
]


@pytest.mark.parametrize("over,field", BAD, ids=[f + str(i) for i, (_, f) in enumerate(BAD)])
def test_bad_campaign_inputs_are_rejected_naming_the_field(ks, over, field):
    ks.create_root()
    ks.create_issuer(MERCHANT)
    with pytest.raises(IssuanceError) as e:
        campaign(ks, **over)
    assert e.value.field == field
    assert str(e.value).startswith(field + ": ")
    assert ks.issued() == []  # nothing half issued


def test_campaign_batches_must_keep_their_terms(ks):
    ks.create_root()
    ks.create_issuer(MERCHANT)
    campaign(ks, quantity=2)
    campaign(ks, quantity=1, exp=T0 + 60 * DAY)  # same terms, another batch
    assert len(ks.issued("SPRING")) == 3
    with pytest.raises(IssuanceError) as e:
        campaign(ks, val=20)
    assert e.value.field == "cmp"
    assert len(ks.issued("SPRING")) == 3


def test_max_uses_lookup_feeds_the_host_charge_processor(ks, tmp_path):
    from host_sim.charges import Charges
    from host_sim.registry import Registry

    ks.create_root()
    ks.create_issuer(MERCHANT)
    multi = campaign(ks, "MULTI", max_uses=3, quantity=2)
    [single] = campaign(ks, "ONE", quantity=1)
    cti = payload_of(multi[0])[7]
    assert ks.max_uses(cti) == 3 and ks.max_uses(cti.hex()) == 3
    assert ks.max_uses(payload_of(single)[7]) == 1
    assert ks.max_uses(b"\x00" * 16) is None and ks.max_uses("zz") is None
    reg = Registry(str(tmp_path / "host.db"))
    try:
        assert Charges(reg, coupon_max_uses=ks.max_uses).coupon_max_uses(cti) == 3
    finally:
        reg.close()
    # publish --db copies them into the host's own table
    db = str(tmp_path / "host2.db")
    Registry(db).close()
    assert issue._sync_max_uses(db, ks) == 3
    reg = Registry(db)
    try:
        assert Charges(reg).coupon_max_uses(cti) == 3
    finally:
        reg.close()


def test_keystore_files_are_private(ks):
    ks.create_root("es256")
    kid = ks.create_issuer(MERCHANT)
    campaign(ks, quantity=1)
    assert stat.S_IMODE(os.stat(ks.path).st_mode) == 0o700
    names = ["keystore.json", "coupons.sqlite", os.path.join("keys", kid + ".pem")]
    for name in names:
        assert stat.S_IMODE(os.stat(os.path.join(ks.path, name)).st_mode) == 0o600, name
    with open(os.path.join(ks.path, "keys", kid + ".pem")) as f:
        assert f.read().startswith("-----BEGIN PRIVATE KEY-----")


def test_opening_a_missing_keystore_fails_clearly(tmp_path):
    with pytest.raises(IssuanceError) as e:
        Keystore(str(tmp_path / "nothing"))
    assert e.value.field == "keys" and "init-root" in str(e.value)


# ---------------------------------------------------------------- outputs

def test_csv_rows_match_the_tokens(ks, tmp_path):
    ks.create_root()
    ks.create_issuer(MERCHANT)
    tokens = campaign(ks, quantity=5)
    path = issuance.write_csv(str(tmp_path / "c.csv"), tokens)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["cti", "campaign", "token"]
    assert [r[2] for r in rows[1:]] == tokens
    for cti, cmp, tok in rows[1:]:
        assert bytes.fromhex(cti) == payload_of(tok)[7] and cmp == "SPRING"
        assert ks.max_uses(cti) == 1
    assert [r["token"] for r in ks.issued("SPRING")] == tokens


def _png_pixels(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        assert struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0] == zlib.crc32(kind + body)
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, color = ihdr[:4]
    assert (depth, color) == (8, 0)
    raw = zlib.decompress(idat)
    assert len(raw) == h * (w + 1)
    rows = [raw[r * (w + 1):(r + 1) * (w + 1)] for r in range(h)]
    assert all(r[0] == 0 for r in rows)  # filter type none
    return w, h, [r[1:] for r in rows]


def test_qr_sheets_in_png_and_svg(ks, tmp_path):
    ks.create_root()
    ks.create_issuer(MERCHANT)
    n = qrsheet.PER_PAGE + 1
    tokens = campaign(ks, quantity=n)
    qr = qrsheet.qr_code(tokens[0])
    assert qr.mode == "alphanumeric" and not qr.is_micro and qr.version <= 12
    pngs = qrsheet.write_png_sheets(str(tmp_path / "sheet.png"), tokens)
    svgs = qrsheet.write_svg_sheets(str(tmp_path / "sheet.svg"), tokens)
    assert pngs == [str(tmp_path / "sheet.png"), str(tmp_path / "sheet-2.png")]
    assert svgs == [str(tmp_path / "sheet.svg"), str(tmp_path / "sheet-2.svg")]

    # The first code on page 1 is at its cell, module for module.
    w, h, px_rows = _png_pixels(pngs[0])
    assert (w, h) == (qrsheet.PAGE_W, qrsheet.PAGE_H)
    [(qr0, x, y, m, lines, _cw)] = qrsheet.sheet_layout(tokens[:1])[0]
    assert lines == ["Spring sale", payload_of(tokens[0])[7].hex()]
    off = qrsheet.QR_BORDER * m
    for r, row in enumerate(qr0.matrix):
        for c, dark in enumerate(row):
            assert px_rows[y + off + r * m + m // 2][x + off + c * m + m // 2] == (0 if dark else
                                                                                    255)
    # Something is printed under it (the labels), and the page 2 has one code only.
    label_band = px_rows[y + (len(qr0.matrix) + 2 * qrsheet.QR_BORDER) * m + 10]
    assert 0 in label_band[x:x + 400]

    ns = {"s": "http://www.w3.org/2000/svg"}
    counts = []
    for path in svgs:
        svg = ET.parse(path).getroot()
        assert svg.get("width") == "210mm" and svg.get("height") == "297mm"
        groups = svg.findall("s:g", ns)
        counts.append(len(groups))
        for g in groups:
            assert g.find("s:path", ns).get("d").startswith("M")
    assert counts == [qrsheet.PER_PAGE, 1]
    texts = [t.text for t in ET.parse(svgs[1]).getroot().iter("{%s}text" % ns["s"])]
    assert texts == ["Spring sale", payload_of(tokens[-1])[7].hex()]


def test_qr_sheet_refuses_text_outside_the_alphanumeric_mode():
    # Lower case is not in the QR alphanumeric set: the encoder would fall back to byte mode,
    # a bigger code that is no longer the SPEC's form.
    with pytest.raises(qrsheet.SheetError) as e:
        qrsheet.qr_code("PC1:lower case")
    assert isinstance(e.value, IssuanceError) and e.value.field == "token"


# ---------------------------------------------------------------- command line

def _run(capsys, *argv):
    rc = issue.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_end_to_end(tmp_path, capsys):
    keys = str(tmp_path / "keys")
    rc, out, _ = _run(capsys, "--keys", keys, "init-root", "--alg", "es256")
    assert rc == 0 and len(out.splitlines()) == 1
    root = json.loads(out)["root_key"]
    rc, out, _ = _run(capsys, "--keys", keys, "issuer", MERCHANT)
    assert rc == 0 and json.loads(out)["trust_ver"] == 1
    tl = str(tmp_path / "t.txt")
    rc, out, _ = _run(capsys, "--keys", keys, "trustlist", "--out", tl)
    assert rc == 0 and json.loads(out)["ver"] == 1
    c = str(tmp_path / "c.csv")
    rc, out, _ = _run(capsys, "--keys", keys, "campaign", "TEN", "--name", "10 off",
                      "--kind", "amt", "--value", "1000", "--cur", CUR, "--min", "5000",
                      "--stores", "S-001,S-002", "--max-uses", "2", "--quantity", "3",
                      "--iss", MERCHANT, "--csv", c, "--svg", str(tmp_path / "c.svg"))
    assert rc == 0
    summary = json.loads(out)
    assert summary["quantity"] == 3 and summary["svg"] == [str(tmp_path / "c.svg")]
    with open(c, newline="") as f:
        rows = list(csv.DictReader(f))
    trust = issuance.read_text(tl, "PT1:")
    # the trust list was written before the campaign: the same key signs
    for row in rows:
        p = payload_of(row["token"])
        assert p["st"] == ["S-001", "S-002"] and p["mu"] == 2 and p["min"] == 5000
        now = p[5] + 1
        assert verdicts(row["token"], root, trust, now=now) == "ok"
    rl = str(tmp_path / "r.txt")
    rc, out, _ = _run(capsys, "--keys", keys, "revoke", "--cti", rows[0]["cti"], "--out", rl)
    assert rc == 0 and json.loads(out) == {"revocations": rl, "ver": 1, "cti": 1, "cmp": 0}
    rev = issuance.read_text(rl, "PR1:")
    now = payload_of(rows[0]["token"])[5] + 1
    assert verdicts(rows[0]["token"], root, trust, rev, now=now) == "revoked"
    assert verdicts(rows[1]["token"], root, trust, rev, now=now) == "ok"
    rc, out, _ = _run(capsys, "--keys", keys, "rotate", MERCHANT, "--retire-old-at",
                      str(payload_of(rows[0]["token"])[6] + 3600))
    assert rc == 0 and json.loads(out)["trust_ver"] == 2


def test_cli_reports_bad_input_with_the_field(tmp_path, capsys):
    keys = str(tmp_path / "keys")
    rc, _, err = _run(capsys, "--keys", keys, "issuer", MERCHANT)
    assert rc == 1 and "init-root" in err
    _run(capsys, "--keys", keys, "init-root")
    _run(capsys, "--keys", keys, "issuer", MERCHANT)
    rc, out, err = _run(capsys, "--keys", keys, "campaign", "X", "--kind", "pct", "--value",
                        "150", "--quantity", "1", "--iss", MERCHANT, "--csv",
                        str(tmp_path / "x.csv"))
    assert rc == 1 and out == "" and err.startswith("issue: val: ")
    assert not os.path.exists(str(tmp_path / "x.csv"))
    with pytest.raises(SystemExit) as e:
        issue.main(["--keys", keys, "trustlist"])  # --out missing: argparse's exit 2
    assert e.value.code == 2
