# Offline coupon verifier (SPEC 2.3): one pass over a scanned "PC1:" text, checks in the spec's
# order, the first failure is the verdict. Steps 1-8 are device/trust/signed.py's (member codes
# share them); the coupon's own claims and steps 9-15 are here. Sans-I/O: the trust store, the
# clock reading and the ledger's use count come in as arguments.
from device.trust import lists as trust
from device.trust import signed

OK = signed.OK
MALFORMED = signed.MALFORMED

# Every verdict, in the order of the checks that produce them (ok last).
VERDICTS = (MALFORMED, "unsupported_alg", "unknown_key", "bad_signature", "wrong_issuer",
            "key_not_valid", "revoked", "clock_unset", "not_yet_valid", "expired", "wrong_store",
            "wrong_currency", "below_min_spend", "already_redeemed", OK)

PREFIX = "PC1:"
MAX_TOKEN = signed.MAX_TOKEN
KINDS = ("pct", "amt", "item")

_ABSENT = signed.ABSENT


_int = signed.is_int


def _claims(p, r):
    """Reads the payload map into r; returns False when a claim is missing or out of range."""
    iss, cti, iat, nbf, exp = signed.cwt_claims(p)
    cmp = p.get("cmp")
    good = True
    if type(cti) is bytes and 1 <= len(cti) <= trust.MAX_CTI:
        r["cti"] = cti
    else:
        good = False
    if type(cmp) is str:
        r["campaign"] = cmp
    else:
        good = False
    if not good or type(iss) is not str or not _int(iat):
        return False
    if not _int(nbf) or not _int(exp) or nbf > exp:
        return False
    kd = p.get("kd")
    val = p.get("val")
    if not _int(val) or type(kd) is not str:  # (MicroPython warns on bytes == str)
        return False
    if kd == "pct":
        if not 1 <= val <= 100:
            return False
    elif kd == "amt" or kd == "item":
        if val < 1:
            return False
    else:
        return False
    name = p.get("nm", _ABSENT)
    if name is not _ABSENT and type(name) is not str:
        return False
    cur = p.get("cur", _ABSENT)
    if cur is not _ABSENT and type(cur) is not str:
        return False
    sku = p.get("sku", _ABSENT)
    if sku is not _ABSENT and type(sku) is not str:
        return False
    mn = p.get("min", _ABSENT)
    if mn is not _ABSENT and (not _int(mn) or mn < 0):
        return False
    st = p.get("st", _ABSENT)
    if st is not _ABSENT:
        if type(st) is not list:
            return False
        for s in st:
            if type(s) is not str:
                return False
    mu = p.get("mu", 1)
    if not _int(mu) or mu < 1:
        return False
    if cur is _ABSENT:
        if kd == "amt" or mn is not _ABSENT:
            return False
        cur = None
    if sku is _ABSENT:
        if kd == "item":
            return False
        sku = None
    if name is _ABSENT:
        name = None
    if mn is _ABSENT:
        mn = None
    if st is _ABSENT:
        st = None
    r["iss"] = iss
    r["iat"] = iat
    r["nbf"] = nbf
    r["exp"] = exp
    r["kind"] = kd
    r["val"] = val
    r["name"] = name
    r["cur"] = cur
    r["sku"] = sku
    r["min"] = mn
    r["st"] = st
    r["mu"] = mu
    return True


def discount(kind, val, total):
    if kind == "pct":
        return total * val // 100
    if kind == "amt":
        return val if val < total else total
    return 0  # item: the sku x val is added free


def new_result():
    return {"verdict": MALFORMED, "discount": None, "cti": None, "campaign": None, "name": None,
            "kind": None, "val": None, "sku": None, "cur": None, "exp": None, "mu": None,
            "min": None}


class Verifier:
    def __init__(self, trust):
        self.trust = trust

    def check(self, token, total, store, currency, now, clock_trusted=True, uses=None):
        """SPEC 2.3 verdict for a scanned text. uses: cti -> int for a stateful check (clock and
        ledger are consulted), None for a stateless one. Never raises for bad tokens."""
        # total None: no cart yet (a scan on the idle screen): min spend and discount are skipped.
        if total is not None and (not _int(total) or total < 0):
            raise ValueError("total must be an int >= 0 (minor units) or None")
        r = new_result()
        r["verdict"] = self._verdict(r, token, total, store, currency, now, clock_trusted, uses)
        if r["verdict"] == OK and total is not None:
            r["discount"] = discount(r["kind"], r["val"], total)
        return r

    def _verdict(self, r, token, total, store, currency, now, clock_trusted, uses):
        # 1. - 8. (shared with member codes): text, COSE_Sign1, alg, key, signature, claims,
        # issuer and key validity
        v = signed.check(self.trust, token, PREFIX, _claims, r)
        if v != OK:
            return v
        # 9.
        if self.trust.is_revoked(r["cti"], r["campaign"]):
            return "revoked"
        # 10. the clock only matters to stateful checks; the check command passes --now
        if uses is not None and not clock_trusted:
            return "clock_unset"
        if now < r["nbf"]:
            return "not_yet_valid"
        if now >= r["exp"]:
            return "expired"
        # 11. - 13.
        st = r["st"]
        if st is not None and store not in st:
            return "wrong_store"
        cur = r["cur"]
        if cur is not None and cur != currency:
            return "wrong_currency"
        mn = r["min"]
        if mn is not None and total is not None and total < mn:
            return "below_min_spend"
        # 14.
        if uses is not None and uses(r["cti"]) >= r["mu"]:
            return "already_redeemed"
        return OK

