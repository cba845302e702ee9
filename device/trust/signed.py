# Signed codes (SPEC 2.3 steps 1-8, SPEC 8.1): a scanned "PREFIX" + base45(COSE_Sign1) text
# signed by an issuer key of the trust list. Coupons ("PC1:") and member codes ("PM1:") share
# these steps and differ only in their claims, which the caller reads (step 6) and then judges
# further (revocations, clock, cart...). Sans-I/O: the trust store comes in as an argument.
from device import crypto
from device.trust import lists as trust
from protocol import base45, cbor

OK = "ok"  # steps 1-8 passed (the caller goes on with its own checks)
MALFORMED = "malformed"
MAX_TOKEN = 1200


# CWT claim labels (RFC 8392) the signed codes use.
ISS = 1
EXP = 4
NBF = 5
IAT = 6
CTI = 7
ABSENT = object()  # a claim that is not there (a CBOR null is there, and is of no type)


def is_int(v):
    return type(v) is int  # bool is not int: type(True) is bool


def cwt_claims(p):
    """(iss, cti, iat, nbf, exp) of a payload map, ABSENT for each that is not there. Only real
    integer keys count (a CBOR true key is not label 1)."""
    iss = cti = iat = nbf = exp = ABSENT
    for k, v in p.items():
        if type(k) is int:
            if k == ISS:
                iss = v
            elif k == CTI:
                cti = v
            elif k == IAT:
                iat = v
            elif k == NBF:
                nbf = v
            elif k == EXP:
                exp = v
    return iss, cti, iat, nbf, exp


def check(store, token, prefix, read_claims, r):
    """Steps 1-8 for a scanned text (str, or bytes of UTF-8). read_claims(payload map, r) puts
    the claims in r and returns False when one is missing or out of range; it must set r["iss"]
    (text) and r["iat"] (int) when it returns True. Returns OK or the first failing verdict;
    never raises for bad input."""
    # 1. prefix + upper-case base45, <= 1200 chars
    if type(token) is not str:
        if not isinstance(token, (bytes, bytearray)):
            return MALFORMED
        try:
            token = bytes(token).decode()
        except UnicodeError:
            return MALFORMED
    if len(token) > MAX_TOKEN or not token.startswith(prefix):
        return MALFORMED
    try:
        raw = base45.decode(token[len(prefix):])
    except ValueError:
        return MALFORMED
    # 2. COSE_Sign1 structure (depth and declared lengths are checked by cbor.loads)
    try:
        prot_b, prot, unprot, payload_b, sig = trust.decode_sign1(raw)
    except ValueError:
        return MALFORMED
    raw = None
    # 3. alg
    alg = trust.label(prot, 1)
    if not is_int(alg) or (alg != trust.ALG_ES256 and alg != trust.ALG_EDDSA):
        return "unsupported_alg"
    # 4. kid
    kid = trust.header_kid(prot, unprot)
    if type(kid) is not bytes:
        return MALFORMED
    key = store.key(kid)
    if key is None:
        return "unknown_key"
    # 5. signature, under the key's own alg only
    if key["alg"] != alg:
        return "bad_signature"
    if not crypto.verify(alg, key["pub"], trust.sig_structure(prot_b, payload_b), sig):
        return "bad_signature"
    # 6. payload claims
    try:
        p = cbor.loads(payload_b, trust.MAX_DEPTH)
    except ValueError:
        return MALFORMED
    if type(p) is not dict or not read_claims(p, r):
        return MALFORMED
    # 7. - 8. issuer and key validity at issue time
    if r["iss"] != key["iss"]:
        return "wrong_issuer"
    if not key["nbf"] <= r["iat"] < key["exp"]:
        return "key_not_valid"
    return OK
