# Coupon issuance for the host simulator (SPEC 2.1, 2.2): an issuer keystore directory with the
# root key (signs trust and revocation lists), issuer keys (sign coupons and member codes, SPEC
# 8.1), the lists' version counters, every issued coupon, and the CSV a merchant hands out (QR
# sheets: qrsheet.py). Member accounts live in the host database (host_sim/members.py); the
# keystore signs their codes and keeps the members' blocked card epochs of the revocation list.
#
# Directory layout (created 0700; every file 0600):
#   keystore.json     roots, issuer keys (public parts and windows), list versions, revocations
#                     (coupon serials, campaigns, and member card epochs: {mid: ep})
#   keys/<kid>.pem    PKCS#8 private keys, one per root or issuer key
#   coupons.sqlite    campaigns and every issued cti with its campaign and max uses
#   .lock             flock'd while a command changes the keystore
import contextlib
import csv
import fcntl
import hashlib
import json
import os
import sqlite3
import time

import cbor2
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from host_sim.files import write_atomic
from protocol import base45, limits

ALG_ES256 = -7
ALG_EDDSA = -8
ALG_NAMES = {"eddsa": ALG_EDDSA, "ed25519": ALG_EDDSA, "es256": ALG_ES256}
TOKEN_PREFIX = "PC1:"
MEMBER_PREFIX = "PM1:"
TRUST_PREFIX = "PT1:"
REVOCATION_PREFIX = "PR1:"
MAX_TOKEN = 1200
KINDS = ("pct", "amt", "item")
CTI_LEN = 16
MAX_QUANTITY = 100000
DAY = 86400
DEFAULT_KEY_LIFETIME = 365 * DAY
DEFAULT_COUPON_LIFETIME = 30 * DAY
MAX_MID = 64  # a member id becomes the charge's "mem" (text 1..64)
MAX_TIER = 32
MAX_MEMBER_NAME = 64

_STATE = "keystore.json"
_DB = "coupons.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS campaigns (
    cmp     TEXT PRIMARY KEY,
    terms   TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS coupons (
    cti      BLOB PRIMARY KEY,
    cmp      TEXT NOT NULL REFERENCES campaigns(cmp),
    kid      BLOB NOT NULL,
    max_uses INTEGER NOT NULL,
    iat      INTEGER NOT NULL,
    exp      INTEGER NOT NULL,
    token    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS coupons_cmp ON coupons(cmp);
"""


class IssuanceError(ValueError):
    """Bad input or keystore state; .field names the input at fault."""

    def __init__(self, field, message):
        super().__init__("%s: %s" % (field, message))
        self.field = field
        self.message = message


# ---------------------------------------------------------------- keys and COSE

def parse_alg(alg):
    """'eddsa'/'es256' (or the COSE numbers -8/-7) -> COSE alg."""
    if type(alg) is int and alg in (ALG_EDDSA, ALG_ES256):
        return alg
    if isinstance(alg, str) and alg.lower() in ALG_NAMES:
        return ALG_NAMES[alg.lower()]
    raise IssuanceError("alg", "must be eddsa or es256, not %r" % (alg,))


def _new_private(alg):
    if alg == ALG_EDDSA:
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def raw_public(priv):
    """SPEC 2.1 key bytes: 32 raw bytes (Ed25519) or the 65-byte uncompressed P-256 point."""
    if isinstance(priv, ed25519.Ed25519PrivateKey):
        return priv.public_key().public_bytes(serialization.Encoding.Raw,
                                              serialization.PublicFormat.Raw)
    return priv.public_key().public_bytes(serialization.Encoding.X962,
                                          serialization.PublicFormat.UncompressedPoint)


def kid_of(pub):
    return hashlib.sha256(pub).digest()[:8]


def sign(alg, priv, msg):
    if alg == ALG_EDDSA:
        return priv.sign(msg)
    r, s = decode_dss_signature(priv.sign(msg, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")  # COSE wants raw r || s, not DER


def sign1(alg, kid, priv, payload):
    """COSE_Sign1 (tag 18) with protected {1: alg, 4: kid} over the CBOR of payload."""
    prot = cbor2.dumps({1: alg, 4: kid})
    body = cbor2.dumps(payload)
    sig = sign(alg, priv, cbor2.dumps(["Signature1", prot, b"", body]))
    return cbor2.dumps(cbor2.CBORTag(18, [prot, {}, body, sig]))


def text_form(prefix, cose):
    return prefix + base45.encode(cose)


def write_text(path, prefix, cose):
    """Writes the "PT1:"/"PR1:" text of a list as one line."""
    with open(path, "w") as f:
        f.write(text_form(prefix, cose) + "\n")
    return path


def read_text(path, prefix):
    """The COSE bytes of a list given as its text ("PT1:...") or as the path of a one-line text
    file written by write_text: every list option takes either."""
    if path.startswith(prefix):
        text = path.strip("\r\n")
        path = "the text given"
    else:
        try:
            with open(path) as f:
                text = f.read().strip("\r\n")  # a space is a base45 digit: strip line ends
        except (OSError, UnicodeError) as e:
            raise IssuanceError("file", "cannot read %s: %s" % (path, e))
    if not text.startswith(prefix):
        raise IssuanceError("file", "%s does not start with %s" % (path, prefix))
    try:
        return base45.decode(text[len(prefix):])
    except ValueError as e:
        raise IssuanceError("file", "%s: bad base45: %s" % (path, e))


def token_claims(token):
    """The payload claims of a PC1: or PM1: token (no signature check: for outputs of our
    own)."""
    msg = cbor2.loads(base45.decode(token[4:]))
    if isinstance(msg, cbor2.CBORTag):
        msg = msg.value
    return cbor2.loads(msg[2])


# ---------------------------------------------------------------- files

def _write_private(path, data):
    # Owner-only and never half written: a torn keystore.json would lose the list versions.
    write_atomic(path, data, 0o600)


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- input checks

def _is_int(v):
    return type(v) is int  # bool is not int


def _need_int(field, v, lo=None, hi=None):
    if not _is_int(v):
        raise IssuanceError(field, "must be an integer, not %r" % (v,))
    if lo is not None and v < lo:
        raise IssuanceError(field, "must be >= %d (got %d)" % (lo, v))
    if hi is not None and v > hi:
        raise IssuanceError(field, "must be <= %d (got %d)" % (hi, v))
    return v


def _need_text(field, v):
    if type(v) is not str or not v.strip():
        raise IssuanceError(field, "must be non-empty text, not %r" % (v,))
    return v


def _need_currency(field, v):
    if type(v) is not str or len(v) != 3 or not v.isascii() or not v.isupper() \
            or not v.isalpha():
        raise IssuanceError(field, "must be a 3-letter currency code like CNY, not %r" % (v,))
    return v


def _cti_bytes(v):
    try:
        b = bytes.fromhex(v) if isinstance(v, str) else bytes(v)
    except (ValueError, TypeError):
        raise IssuanceError("cti", "must be hex, not %r" % (v,))
    if not 1 <= len(b) <= 32:
        raise IssuanceError("cti", "must be 1..32 bytes, not %d" % len(b))
    return b


def _need_mid(mid):
    if type(mid) is not str or not 1 <= len(mid) <= MAX_MID or not mid.strip():
        raise IssuanceError("mid", "must be text of 1..%d characters, not %r" % (MAX_MID, mid))
    return mid


def member_claims(iss, cti, iat, mid, ep, tier, name=None, exp=None):
    """Checks a member code's claims against SPEC 8.1 (and the lengths the messages carry:
    mid 1..64, tier 0..32, nm 0..64 characters); returns the payload map."""
    _need_text("iss", iss)
    cti = _cti_bytes(cti)
    _need_int("iat", iat, 0)
    _need_mid(mid)
    _need_int("ep", ep, 0)
    if type(tier) is not str or len(tier) > MAX_TIER:
        raise IssuanceError("tier", "must be text of at most %d characters" % MAX_TIER)
    payload = {1: iss, 7: cti, 6: iat, "mid": mid, "ep": ep, "tier": tier}
    if name is not None:
        if type(name) is not str or len(name) > MAX_MEMBER_NAME:
            raise IssuanceError("name", "must be text of at most %d characters"
                                % MAX_MEMBER_NAME)
        payload["nm"] = name
    if exp is not None:
        _need_int("exp", exp, 0)
        if exp <= iat:
            raise IssuanceError("exp", "must be after iat (%d <= %d)" % (exp, iat))
        payload[4] = exp
    return payload


def campaign_claims(cmp, name, kind, val, nbf, exp, stores, min_spend, cur, sku, max_uses):
    """Checks a campaign's terms against SPEC 2.1; returns its shared claims (text keys)."""
    _need_text("cmp", cmp)
    if name is not None:
        _need_text("name", name)
    if kind not in KINDS:
        raise IssuanceError("kind", "must be one of %s, not %r" % ("|".join(KINDS), kind))
    if kind == "pct":
        _need_int("val", val, 1, 100)
    else:
        _need_int("val", val, 1)
    _need_int("nbf", nbf, 0)
    _need_int("exp", exp, 0)
    if exp <= nbf:
        raise IssuanceError("exp", "must be after nbf (%d <= %d)" % (exp, nbf))
    if min_spend is not None:
        _need_int("min", min_spend, 0)
    if cur is not None:
        _need_currency("cur", cur)
    elif kind == "amt":
        raise IssuanceError("cur", "is required for kind amt")
    elif min_spend is not None:
        raise IssuanceError("cur", "is required with a minimum spend")
    if kind == "item":
        _need_text("sku", sku)
    elif sku is not None:
        raise IssuanceError("sku", "only applies to kind item")
    if stores is not None:
        if not isinstance(stores, (list, tuple)) or not stores:
            raise IssuanceError("stores", "must be a non-empty list (omit it for every store)")
        for s in stores:
            _need_text("stores", s)
    _need_int("max_uses", max_uses, 1)
    claims = {"cmp": cmp}
    if name is not None:
        claims["nm"] = name
    claims["kd"] = kind
    claims["val"] = val
    if cur is not None:
        claims["cur"] = cur
    if sku is not None:
        claims["sku"] = sku
    if min_spend is not None:
        claims["min"] = min_spend
    if stores is not None:
        claims["st"] = list(stores)
    claims["mu"] = max_uses
    return claims


# ---------------------------------------------------------------- list size

TRUST = "trustlist"
REVOCATIONS = "revocations"


def check_list_size(what, cose, serials=None):
    """cose when a terminal takes a list that size (protocol/limits.py LIST_MAX_BYTES); else
    IssuanceError("too_large") saying what to do instead. The broker drops larger messages
    (message_size_limit) and a terminal refuses them: such a list would never arrive."""
    n = len(cose)
    if n <= limits.LIST_MAX_BYTES:
        return cose
    name = "revocation list" if what == REVOCATIONS else "trust list"
    msg = "the %s would be %d bytes; terminals take at most %d (docs/protocol.md, Sizes)" % (
        name, n, limits.LIST_MAX_BYTES)
    if what == REVOCATIONS:
        msg += ("; it would hold %d serials: revoke whole campaigns (--cmp) instead of their "
                "serials, about %d serials of 16 bytes fit" % (
                    serials or 0, (limits.LIST_MAX_BYTES - 200) // 17))
    raise IssuanceError("too_large", msg)


# ---------------------------------------------------------------- the keystore

class Keystore:
    def __init__(self, path, clock=time.time, create=False):
        """Opens the keystore in directory path; create=True makes it when missing."""
        self.path = path
        self.clock = clock
        if not create and not os.path.exists(os.path.join(path, _STATE)):
            raise IssuanceError("keys", "no keystore at %s (run init-root first)" % path)
        os.makedirs(os.path.join(path, "keys"), mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)
        self._state = self._load()
        self._db = sqlite3.connect(os.path.join(path, _DB), isolation_level=None)
        os.chmod(os.path.join(path, _DB), 0o600)
        self._db.executescript(_SCHEMA)

    def close(self):
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def now(self):
        return int(self.clock())

    # -- state file --------------------------------------------------------------------------
    def _load(self):
        try:
            with open(os.path.join(self.path, _STATE)) as f:
                st = json.load(f)
            st.setdefault("revoked_mem", {})  # keystores made before member cards
            return st
        except FileNotFoundError:
            return {"format": 1, "trust_ver": 0, "rev_ver": 0, "roots": [], "keys": [],
                    "revoked_cti": [], "revoked_cmp": [], "revoked_mem": {}}
        except (OSError, ValueError) as e:
            raise IssuanceError("keystore", "cannot read %s: %s" % (_STATE, e))

    @contextlib.contextmanager
    def _change(self):
        """Read-modify-write of keystore.json under an exclusive lock (one CLI at a time)."""
        fd = os.open(os.path.join(self.path, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._state = self._load()
            yield self._state
            _write_private(os.path.join(self.path, _STATE),
                           json.dumps(self._state, indent=1).encode() + b"\n")
            _fsync_dir(self.path)
        finally:
            os.close(fd)

    def _save_private_key(self, kid, priv):
        pem = priv.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
        _write_private(os.path.join(self.path, "keys", kid.hex() + ".pem"), pem)

    def _private_key(self, kid_hex):
        try:
            with open(os.path.join(self.path, "keys", kid_hex + ".pem"), "rb") as f:
                return serialization.load_pem_private_key(f.read(), None)
        except (OSError, ValueError) as e:
            raise IssuanceError("keystore", "private key %s unreadable: %s" % (kid_hex, e))

    # -- roots -------------------------------------------------------------------------------
    def create_root(self, alg="eddsa", add=False):
        """Creates the root key that signs the lists; returns its raw public key as hex (the
        device config's root_keys entry). add=True adds a new signing root beside the old ones
        (devices must be provisioned with it before they accept lists it signs)."""
        alg = parse_alg(alg)
        priv = _new_private(alg)
        pub = raw_public(priv)
        kid = kid_of(pub)
        with self._change() as st:
            if st["roots"] and not add:
                raise IssuanceError("root", "the keystore already has root %s" %
                                    st["roots"][-1]["pub"])
            self._save_private_key(kid, priv)
            st["roots"].append({"kid": kid.hex(), "alg": alg, "pub": pub.hex(),
                                "created": self.now()})
            # Lists signed by the new root must install over the ones the old root signed.
            if st["trust_ver"]:
                st["trust_ver"] += 1
            if st["rev_ver"]:
                st["rev_ver"] += 1
        return pub.hex()

    def root_keys(self):
        return [r["pub"] for r in self._state["roots"]]

    def _root(self):
        if not self._state["roots"]:
            raise IssuanceError("root", "no root key: run init-root first")
        return self._state["roots"][-1]

    # -- issuer keys -------------------------------------------------------------------------
    def _add_issuer(self, st, iss, alg, nbf, exp):
        _need_text("iss", iss)
        alg = parse_alg(alg)
        now = self.now()
        nbf = now if nbf is None else _need_int("nbf", nbf, 0)
        exp = nbf + DEFAULT_KEY_LIFETIME if exp is None else _need_int("exp", exp, 0)
        if exp <= nbf:
            raise IssuanceError("exp", "must be after nbf (%d <= %d)" % (exp, nbf))
        priv = _new_private(alg)
        pub = raw_public(priv)
        kid = kid_of(pub)
        self._save_private_key(kid, priv)
        st["keys"].append({"kid": kid.hex(), "alg": alg, "pub": pub.hex(), "iss": iss,
                           "nbf": nbf, "exp": exp, "created": now})
        return kid.hex()

    def create_issuer(self, iss, alg="eddsa", nbf=None, exp=None):
        """A new signing key for merchant iss, valid for signing in [nbf, exp) (default: from
        now for a year); returns its kid as hex. The trust list version goes up."""
        with self._change() as st:
            kid = self._add_issuer(st, iss, alg, nbf, exp)
            st["trust_ver"] += 1
            return kid

    def issuer_keys(self, iss=None):
        return [dict(k) for k in self._state["keys"] if iss is None or k["iss"] == iss]

    def _current_key(self, iss, at):
        """The newest key of iss whose signing window holds `at`."""
        live = [k for k in self._state["keys"]
                if k["iss"] == iss and k["nbf"] <= at < k["exp"]]
        if not live:
            return None
        return max(live, key=lambda k: (k["nbf"], k["created"]))

    def rotate(self, iss, alg=None, retire_old_at=None, nbf=None, exp=None):
        """New key for iss in a new trust list version that keeps the old key, so coupons it
        signed keep verifying by their iat. retire_old_at sets the old key's exp: coupons
        whose iat is at or after it stop verifying (key_not_valid). Returns the new kid."""
        with self._change() as st:
            old = self._current_key(iss, self.now())
            if old is None:
                raise IssuanceError("iss", "no key of %r is valid now: use issuer" % (iss,))
            if retire_old_at is not None:
                _need_int("retire_old_at", retire_old_at, 0)
                if not old["nbf"] <= retire_old_at <= old["exp"]:
                    raise IssuanceError("retire_old_at", "must lie in the old key's window "
                                        "[%d, %d]" % (old["nbf"], old["exp"]))
            kid = self._add_issuer(st, iss, old["alg"] if alg is None else alg, nbf, exp)
            if retire_old_at is not None:
                old["exp"] = retire_old_at
            st["trust_ver"] += 1
            return kid

    # -- lists -------------------------------------------------------------------------------
    @property
    def trust_ver(self):
        return self._state["trust_ver"]

    @property
    def rev_ver(self):
        return self._state["rev_ver"]

    def _sign_list(self, payload):
        root = self._root()
        return sign1(root["alg"], bytes.fromhex(root["kid"]), self._private_key(root["kid"]),
                     payload)

    def sign_with_root(self, payload):
        """COSE_Sign1 of payload by the current root key, alg matching it (lists, licences)."""
        return self._sign_list(payload)

    def trustlist(self):
        """The current trust list (SPEC 2.2) as COSE_Sign1 bytes signed by the root key."""
        st = self._state
        if not st["keys"]:
            raise IssuanceError("trustlist", "no issuer keys: create one with issuer")
        keys = [{"kid": bytes.fromhex(k["kid"]), "alg": k["alg"], "pub": bytes.fromhex(k["pub"]),
                 "iss": k["iss"], "nbf": k["nbf"], "exp": k["exp"]} for k in st["keys"]]
        return check_list_size(TRUST, self._sign_list({"ver": st["trust_ver"],
                                                       "iat": self.now(), "keys": keys}))

    def revoke(self, cti=(), cmp=()):
        """Adds serials and/or campaigns to the cumulative revocation list; returns the new
        list (ver + 1) as COSE_Sign1 bytes. Nothing changes when the list would outgrow what a
        terminal takes (check_list_size)."""
        ctis = [_cti_bytes(c).hex() for c in cti]
        cmps = [_need_text("cmp", c) for c in cmp]
        if not ctis and not cmps:
            raise IssuanceError("revoke", "give at least one cti or cmp")
        self._root()
        try:
            with self._change() as st:
                for c in ctis:
                    if c not in st["revoked_cti"]:
                        st["revoked_cti"].append(c)
                for c in cmps:
                    if c not in st["revoked_cmp"]:
                        st["revoked_cmp"].append(c)
                st["rev_ver"] += 1
                cose = self.revocations()  # raises before the new state is written
        except IssuanceError:
            self._state = self._load()
            raise
        return cose

    def revoked(self):
        """(revoked cti hex list, revoked campaign list), cumulative."""
        return list(self._state["revoked_cti"]), list(self._state["revoked_cmp"])

    def block_member(self, mid, ep):
        """Loss report (SPEC 8.1): every card of member mid with epoch <= ep is blocked. The
        entry only ever rises (a lower ep changes nothing but the version); returns the new
        revocation list (ver + 1) as COSE_Sign1 bytes."""
        _need_mid(mid)
        _need_int("ep", ep, 0)
        self._root()
        with self._change() as st:
            mem = st["revoked_mem"]
            mem[mid] = max(ep, mem.get(mid, -1))
            st["rev_ver"] += 1
        return self.revocations()

    def blocked_members(self):
        """{mid: highest blocked card epoch}."""
        return dict(self._state["revoked_mem"])

    def revocations(self):
        """The current revocation list as COSE_Sign1 bytes; "mem" is present once a member
        card was blocked. Serials in order: a terminal then installs it in one pass
        (device/trust/lists.py)."""
        st = self._state
        if not st["rev_ver"]:
            raise IssuanceError("revocations", "nothing revoked yet")
        payload = {"ver": st["rev_ver"], "iat": self.now(),
                   "cti": sorted(bytes.fromhex(c) for c in st["revoked_cti"]),
                   "cmp": list(st["revoked_cmp"])}
        if st["revoked_mem"]:
            payload["mem"] = [[m, e] for m, e in sorted(st["revoked_mem"].items())]
        return check_list_size(REVOCATIONS, self._sign_list(payload), len(st["revoked_cti"]))

    # -- coupons -----------------------------------------------------------------------------
    def create_campaign(self, cmp, name, kind, val, nbf=None, exp=None, stores=None,
                        min_spend=None, cur=None, sku=None, max_uses=1, quantity=1, iss=None,
                        kid=None):
        """Issues `quantity` coupons of one campaign; returns their "PC1:" texts. A campaign
        may be issued in several batches with the same terms (nbf/exp may differ)."""
        now = self.now()
        if nbf is None:
            nbf = now
        if exp is None and _is_int(nbf):
            exp = nbf + DEFAULT_COUPON_LIFETIME
        claims = campaign_claims(cmp, name, kind, val, nbf, exp, stores, min_spend, cur, sku,
                                 max_uses)
        _need_int("quantity", quantity, 1, MAX_QUANTITY)
        _need_text("iss", iss)
        if exp <= now:
            raise IssuanceError("exp", "is already past (%d <= now %d)" % (exp, now))
        key = self._signing_key(iss, kid, now)
        priv = self._private_key(key["kid"])
        kid_b = bytes.fromhex(key["kid"])
        terms = json.dumps(dict(claims, iss=iss), sort_keys=True)
        tokens = []
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT terms FROM campaigns WHERE cmp=?", (cmp,)).fetchone()
            if row is None:
                self._db.execute("INSERT INTO campaigns VALUES (?, ?, ?)", (cmp, terms, now))
            elif row[0] != terms:
                raise IssuanceError("cmp", "campaign %r exists with other terms: %s"
                                    % (cmp, row[0]))
            for _ in range(quantity):
                cti = self._fresh_cti()
                payload = {1: iss, 7: cti, 6: now, 5: nbf, 4: exp}
                payload.update(claims)
                token = text_form(TOKEN_PREFIX, sign1(key["alg"], kid_b, priv, payload))
                if len(token) > MAX_TOKEN:
                    raise IssuanceError("token", "token is %d chars, over %d: shorten the texts"
                                        % (len(token), MAX_TOKEN))
                self._db.execute("INSERT INTO coupons VALUES (?, ?, ?, ?, ?, ?, ?)",
                                 (cti, cmp, kid_b, max_uses, now, exp, token))
                tokens.append(token)
        return tokens

    # -- member codes (SPEC 8.1) --------------------------------------------------------------
    def sign_member_code(self, iss, mid, ep, tier, name=None, valid_s=None, cti=None):
        """A "PM1:" member code signed by iss's current key: a static card (valid_s None: no
        exp) or a dynamic code valid for valid_s seconds from now (exp = iat + valid_s; it
        pays once). cti defaults to 16 random bytes. Returns (token, cti bytes)."""
        now = self.now()
        exp = None if valid_s is None else now + _need_int("valid_s", valid_s, 1)
        cti = os.urandom(CTI_LEN) if cti is None else cti
        payload = member_claims(iss, cti, now, mid, ep, tier, name, exp)
        key = self._signing_key(iss, None, now)
        cose = sign1(key["alg"], bytes.fromhex(key["kid"]), self._private_key(key["kid"]),
                     payload)
        token = text_form(MEMBER_PREFIX, cose)
        if len(token) > MAX_TOKEN:
            raise IssuanceError("token", "member code is %d chars, over %d: shorten the name"
                                % (len(token), MAX_TOKEN))
        return token, cti

    def _signing_key(self, iss, kid, now):
        if kid is None:
            key = self._current_key(iss, now)
            if key is None:
                raise IssuanceError("iss", "no key of %r is valid now (%d)" % (iss, now))
            return key
        kid = kid.hex() if isinstance(kid, (bytes, bytearray)) else kid
        for key in self._state["keys"]:
            if key["kid"] == kid:
                break
        else:
            raise IssuanceError("kid", "no issuer key %s" % (kid,))
        if key["iss"] != iss:
            raise IssuanceError("kid", "key %s belongs to %r, not %r" % (kid, key["iss"], iss))
        if not key["nbf"] <= now < key["exp"]:
            raise IssuanceError("iat", "now (%d) is outside key %s's window [%d, %d)"
                                % (now, kid, key["nbf"], key["exp"]))
        return key

    def _fresh_cti(self):
        while True:
            cti = os.urandom(CTI_LEN)
            if self._db.execute("SELECT 1 FROM coupons WHERE cti=?", (cti,)).fetchone() is None:
                return cti

    def max_uses(self, cti):
        """The "mu" of an issued coupon (bytes or hex), None when we did not issue it: fits
        Host(coupon_max_uses=...)."""
        try:
            cti = _cti_bytes(cti)
        except IssuanceError:
            return None
        row = self._db.execute("SELECT max_uses FROM coupons WHERE cti=?", (cti,)).fetchone()
        return row[0] if row else None

    def issued(self, cmp=None):
        """Issued coupons in issue order: [{"cti" hex, "cmp", "max_uses", "iat", "exp",
        "token"}]."""
        sql = "SELECT cti, cmp, max_uses, iat, exp, token FROM coupons"
        args = ()
        if cmp is not None:
            sql += " WHERE cmp=?"
            args = (cmp,)
        rows = self._db.execute(sql + " ORDER BY rowid", args).fetchall()
        return [{"cti": r[0].hex(), "cmp": r[1], "max_uses": r[2], "iat": r[3], "exp": r[4],
                 "token": r[5]} for r in rows]


# ---------------------------------------------------------------- outputs

def write_csv(path, tokens):
    """cti (hex), campaign, token: one row per coupon, header first."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")  # CRLF would stick to a token cut from a line
        w.writerow(["cti", "campaign", "token"])
        for t in tokens:
            c = token_claims(t)
            w.writerow([c[7].hex(), c["cmp"], t])
    return path
