# Offline member code verifier (SPEC 8.1): a scanned "PM1:" text, checks in the SPEC's order, the
# first failure is the verdict. Steps 1-8 are the coupons' (device/trust/signed.py: same trust
# list, algs and crypto); then `blocked` (the revocation list's "mem"), then for a dynamic code
# (one with exp) `clock_unset` (stateful checks only) and `expired`; then `ok`.
# Sans-I/O: the trust store and the clock reading come in as arguments.
from device.trust import lists as trust
from device.trust import signed
from protocol.schema import UINT_END  # a card epoch is a uint, as the list's `mem` takes it

OK = signed.OK
MALFORMED = signed.MALFORMED
PREFIX = "PM1:"

# Every verdict, in the order of the checks that produce them (ok last).
VERDICTS = (MALFORMED, "unsupported_alg", "unknown_key", "bad_signature", "wrong_issuer",
            "key_not_valid", "blocked", "clock_unset", "expired", OK)

# Claim lengths follow the messages that carry them (docs/decisions.md 2026-12-04): mid is the
# charge's "mem", tier keys tier_disc, nm is shown.
MAX_TIER = 32
MAX_NAME = 64

_ABSENT = signed.ABSENT
_int = signed.is_int


def _text(v, lo, hi):
    return type(v) is str and lo <= len(v) <= hi


def _claims(p, r):
    """Reads the payload map into r; False when a claim is missing, of the wrong type or out of
    range (an optional claim present as null included)."""
    iss, cti, iat, _, exp = signed.cwt_claims(p)
    mid = p.get("mid", _ABSENT)
    ep = p.get("ep", _ABSENT)
    tier = p.get("tier", _ABSENT)
    name = p.get("nm", _ABSENT)
    if type(iss) is not str or not _int(iat):
        return False
    if type(cti) is not bytes or not 1 <= len(cti) <= trust.MAX_CTI:
        return False
    if not _text(mid, 1, trust.MAX_MID) or not _int(ep) or not 0 <= ep < UINT_END:
        return False
    if not _text(tier, 0, MAX_TIER):
        return False
    if name is not _ABSENT and not _text(name, 0, MAX_NAME):
        return False
    if exp is not _ABSENT and not _int(exp):
        return False
    r["iss"] = iss
    r["iat"] = iat
    r["cti"] = cti
    r["mid"] = mid
    r["ep"] = ep
    r["tier"] = tier
    r["name"] = None if name is _ABSENT else name
    r["exp"] = None if exp is _ABSENT else exp
    r["dynamic"] = exp is not _ABSENT
    return True


def new_result():
    """The reading of a code: mid, ep, tier, name, cti, exp and dynamic are None until the
    claims were read (verdicts after step 6)."""
    return {"verdict": MALFORMED, "mid": None, "ep": None, "tier": None, "name": None,
            "cti": None, "exp": None, "dynamic": None}


class MemberVerifier:
    def __init__(self, trust_store):
        self.trust = trust_store

    def check(self, token, now, clock_trusted=True, stateful=True):
        """SPEC 8.1 verdict and reading of a scanned text. stateful: the terminal's own check
        (an untrusted clock gives clock_unset for a dynamic code); the check command is
        stateless and judges expiry at its --now. Never raises for bad tokens."""
        r = new_result()
        v = signed.check(self.trust, token, PREFIX, _claims, r)
        if v == OK:
            v = self._after_claims(r, now, clock_trusted, stateful)
        r["verdict"] = v
        return r

    def _after_claims(self, r, now, clock_trusted, stateful):
        if self.trust.member_blocked(r["mid"], r["ep"]):
            return "blocked"
        if r["dynamic"]:
            if stateful and not clock_trusted:
                return "clock_unset"
            if now >= r["exp"]:
                return "expired"
        return OK
