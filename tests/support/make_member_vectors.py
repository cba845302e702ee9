"""Public vectors of member codes (SPEC 8.1) for the terminal's verifier:

    python -m tests.support.make_member_vectors          # writes tests/fixtures/member_codes.json
    python -m tests.support.make_member_vectors --check  # exit 1 when the file is out of date

Keys come from the fixed seeds named below (tests/support/coupons.py derives them), EdDSA is
deterministic and ECDSA signs per RFC 6979, so every run writes the same bytes. The well-formed
payloads are built by the host's own host_sim.issuance.member_claims; the broken ones by hand.
tests/cpy/test_members_host.py checks every verdict with an independent decoder.

Verdict order (SPEC 8.1): steps 1-8 of SPEC 2.3 with "PM1:" (malformed, unsupported_alg,
unknown_key, bad_signature, malformed claims, wrong_issuer, key_not_valid), then `blocked` (the
revocation list's "mem" has [mid, ep] with the code's ep <= ep), then for a dynamic code (one
with claim 4 exp) `clock_unset` when the terminal's clock is not trusted, `expired` when
now >= exp, then `ok`. Claims: 1 iss text, 7 cti bstr 1..32, 6 iat int, "mid" text 1..64
characters, "ep" uint, "tier" text 0..32, optional "nm" text 0..64 and 4 exp int; an optional
claim present as null is malformed; unknown claims are ignored.
"""
import json
import os
import sys

import cbor2

from host_sim.issuance import member_claims
from tests.support.coupons import (
    ALG_EDDSA,
    ALG_ES256,
    DAY,
    NOW,
    Key,
    b45encode,
    sig_structure,
    sign1,
)

MERCHANT = "M-ACME"
FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "fixtures", "member_codes.json")
LOST = "M-LOST"  # a member who reported the card of epoch 2 lost (reissued at epoch 3)
GONE = "M-GONE"  # a member blocked at epoch 0
REVOKED_MEM = [[GONE, 0], [LOST, 2]]
REVOKED_CTI = [bytes.fromhex("c0ffee")]  # a coupon serial: blocks no member code
NULL = object()


class Keys:
    def __init__(self):
        self.root = Key("member-vectors root")
        self.ed = Key("member-vectors issuer-ed")
        self.p256 = Key("member-vectors issuer-p256", ALG_ES256)
        self.old = Key("member-vectors issuer-old", nbf=NOW - 400 * DAY, exp=NOW - 100 * DAY)
        self.other = Key("member-vectors issuer-other", iss="M-OTHER")
        self.rogue = Key("member-vectors rogue")
        self.trusted = [self.ed, self.p256, self.old, self.other]


def _cti(n):
    return (0x4d00 + n).to_bytes(8, "big")


_CLAIM_NAMES = {"iss": 1, "cti": 7, "iat": 6, "exp": 4}


def _override(c, over):
    for k, v in over.items():
        k = _CLAIM_NAMES.get(k, k)
        if v is None:
            c.pop(k, None)
        elif v is NULL:
            c[k] = None
        else:
            c[k] = v
    return c


def claims(n, mid="M-0001", ep=1, tier="gold", name="Ada Lovelace", exp=None, iat=NOW - DAY,
           iss=MERCHANT, **over):
    """A member code's claims from the host's builder (cti from n), then `over` set as is:
    None removes a claim, NULL sets it to null (claims 1/4/6/7 by name: iss/exp/iat/cti)."""
    return _override(member_claims(iss, _cti(n), iat, mid, ep, tier, name, exp), over)


def bad_claims(n, **over):
    """Valid static-card claims with `over` set as is (values the builder would refuse)."""
    return _override(claims(n), over)


def token(cose, prefix="PM1:"):
    return prefix + b45encode(cose)


def build():
    k = Keys()
    ed = k.ed
    cases = []

    def add(name, tok, verdict, clock_trusted=True):
        if not isinstance(tok, str):
            tok = token(tok)
        case = {"name": name, "token": tok, "verdict": verdict, "clock_trusted": clock_trusted}
        if verdict in ("ok", "blocked", "expired", "clock_unset"):
            p = _payload(tok)
            case.update(mid=p["mid"], ep=p["ep"], tier=p["tier"], dynamic=4 in p)
        cases.append(case)

    # -- ok: static cards and dynamic codes, both algs, header forms
    add("static_card_ok", sign1(ed, claims(1)), "ok")
    add("static_card_es256_ok", sign1(k.p256, claims(2)), "ok")
    add("static_card_no_name_ok", sign1(ed, claims(3, name=None)), "ok")
    add("static_card_clock_unset_ok", sign1(ed, claims(4)), "ok", clock_trusted=False)
    add("dynamic_ok", sign1(ed, claims(5, iat=NOW - 30, exp=NOW + 90)), "ok")
    add("dynamic_es256_ok", sign1(k.p256, claims(6, iat=NOW - 30, exp=NOW + 90)), "ok")
    add("dynamic_exp_now_plus_1_ok", sign1(ed, claims(7, iat=NOW - 119, exp=NOW + 1)), "ok")
    add("reissued_card_ok", sign1(ed, claims(8, mid=LOST, ep=3)), "ok")
    add("reissued_dynamic_ok", sign1(ed, claims(9, mid=LOST, ep=3, iat=NOW - 5, exp=NOW + 115)),
        "ok")
    add("other_member_same_epoch_ok", sign1(ed, claims(10, mid="M-0002", ep=2)), "ok")
    add("ep_zero_ok", sign1(ed, claims(11, ep=0)), "ok")
    add("cti_revoked_as_coupon_ok", sign1(ed, claims(12, cti=REVOKED_CTI[0])), "ok")
    add("untagged_ok", sign1(ed, claims(13), tagged=False), "ok")
    add("kid_unprotected_ok", sign1(ed, claims(14), prot={1: ALG_EDDSA}, unprot={4: ed.kid}),
        "ok")
    add("unknown_claims_ignored_ok", sign1(ed, claims(15, zz=[1, {"a": b"b"}], cmp="SPRING")),
        "ok")
    add("empty_tier_ok", sign1(ed, claims(16, tier="")), "ok")
    add("mid_64_chars_ok", sign1(ed, claims(17, mid="M" * 64)), "ok")
    add("iat_equals_key_nbf_ok", sign1(ed, claims(18, iat=ed.nbf)), "ok")
    add("old_key_in_window_ok", sign1(k.old, claims(19, iat=k.old.exp - 1)), "ok")
    add("other_merchant_own_key_ok", sign1(k.other, claims(20, iss="M-OTHER")), "ok")

    # -- blocked by the loss report: [M-LOST, 2] blocks epochs <= 2; [M-GONE, 0] epoch 0
    add("lost_card_blocked", sign1(ed, claims(30, mid=LOST, ep=2)), "blocked")
    add("older_card_blocked", sign1(ed, claims(31, mid=LOST, ep=1)), "blocked")
    add("epoch_zero_blocked", sign1(ed, claims(32, mid=GONE, ep=0)), "blocked")
    add("epoch_above_zero_ok", sign1(ed, claims(33, mid=GONE, ep=1)), "ok")
    add("lost_dynamic_blocked", sign1(ed, claims(34, mid=LOST, ep=2, iat=NOW - 5,
                                                 exp=NOW + 115)), "blocked")
    add("blocked_before_expired", sign1(ed, claims(35, mid=LOST, ep=2, iat=NOW - 300,
                                                   exp=NOW - 180)), "blocked")
    add("blocked_before_clock_unset", sign1(ed, claims(36, mid=LOST, ep=2, iat=NOW - 5,
                                                       exp=NOW + 115)), "blocked",
        clock_trusted=False)

    # -- dynamic codes and the clock: exp is exclusive
    add("dynamic_expired", sign1(ed, claims(40, iat=NOW - 300, exp=NOW - 180)), "expired")
    add("dynamic_exp_equals_now", sign1(ed, claims(41, iat=NOW - 120, exp=NOW)), "expired")
    add("dynamic_clock_unset", sign1(ed, claims(42, iat=NOW - 30, exp=NOW + 90)),
        "clock_unset", clock_trusted=False)
    add("clock_unset_before_expired", sign1(ed, claims(43, iat=NOW - 300, exp=NOW - 180)),
        "clock_unset", clock_trusted=False)

    # -- signature, issuer and key window (steps 4, 5, 7, 8)
    add("forged_signature", sign1(ed, claims(50), signer=k.rogue), "bad_signature")
    prot = cbor2.dumps({1: ALG_EDDSA, 4: ed.kid})
    good = cbor2.dumps(claims(51))
    sig = ed.sign(sig_structure(prot, good))
    add("payload_changed_after_signing",
        sign1(ed, cbor2.dumps(claims(51, mid="M-0666")), prot=prot, sig=sig), "bad_signature")
    add("zero_signature", sign1(ed, claims(52), sig=bytes(64)), "bad_signature")
    add("alg_differs_from_key", sign1(k.p256, claims(53), prot={1: ALG_EDDSA, 4: k.p256.kid},
                                      signer=ed), "bad_signature")
    add("bad_signature_before_bad_payload", sign1(ed, b"\xff", sig=bytes(64)), "bad_signature")
    add("unknown_key", sign1(k.rogue, claims(54)), "unknown_key")
    add("unknown_key_before_bad_payload", sign1(k.rogue, b"\xff"), "unknown_key")
    add("wrong_issuer", sign1(ed, claims(55, iss="M-OTHER")), "wrong_issuer")
    add("wrong_issuer_before_key_not_valid", sign1(ed, claims(56, iss="M-OTHER", iat=ed.exp)),
        "wrong_issuer")
    add("key_not_valid_iat_before_key", sign1(ed, claims(57, iat=ed.nbf - 1)), "key_not_valid")
    add("key_not_valid_iat_at_key_exp", sign1(ed, claims(58, iat=ed.exp, exp=ed.exp + 120)),
        "key_not_valid")
    add("key_not_valid_retired_key", sign1(k.old, claims(59)), "key_not_valid")
    add("key_not_valid_before_blocked", sign1(ed, claims(60, mid=LOST, ep=2, iat=ed.nbf - 1)),
        "key_not_valid")

    # -- algorithms (step 3)
    add("unsupported_alg_es512", sign1(ed, claims(70), prot={1: -36, 4: ed.kid}),
        "unsupported_alg")
    add("alg_missing", sign1(ed, claims(71), prot={4: ed.kid}), "unsupported_alg")
    add("unsupported_alg_before_kid", sign1(ed, claims(72), prot={1: -36}), "unsupported_alg")

    # -- malformed text and COSE (steps 1, 2, 4)
    valid = sign1(ed, claims(80))
    add("coupon_prefix", token(valid, "PC1:"), "malformed")
    add("lowercase_prefix", token(valid, "pm1:"), "malformed")
    add("lowercase_base45", "PM1:" + b45encode(valid).lower(), "malformed")
    add("base45_bad_character", "PM1:" + b45encode(valid)[:-1] + "#", "malformed")
    body = b45encode(valid)
    add("base45_dangling_digit", "PM1:" + body + ("0" if len(body) % 3 == 0 else "00"),
        "malformed")
    add("empty_body", "PM1:", "malformed")
    add("too_long", sign1(ed, claims(81, zz="Z" * 900)), "malformed")
    add("not_cose", cbor2.dumps(42), "malformed")
    add("cose_3_items", cbor2.dumps(cbor2.CBORTag(18, cbor2.loads(valid).value[:3])),
        "malformed")
    add("sig_63_bytes", sign1(ed, claims(82), sig=bytes(63)), "malformed")
    add("cose_trailing_bytes", valid + b"\x00", "malformed")
    add("kid_missing", sign1(ed, claims(83), prot={1: ALG_EDDSA}), "malformed")
    add("kid_text", sign1(ed, claims(84), prot={1: ALG_EDDSA, 4: ed.kid.hex()}), "malformed")

    # -- malformed claims (step 6): a good signature over a bad payload
    bad = [
        ("mid_missing", dict(mid=None)), ("mid_int", dict(mid=7)),
        ("mid_empty", dict(mid="")),
        ("mid_65_chars", dict(mid="M" * 65)), ("mid_bytes", dict(mid=b"M-0001")),
        ("ep_missing", dict(ep=None)), ("ep_bool", dict(ep=True)), ("ep_negative", dict(ep=-1)),
        ("ep_float", dict(ep=1.0)), ("ep_text", dict(ep="1")),
        ("tier_missing", dict(tier=None)), ("tier_int", dict(tier=1)),
        ("tier_33_chars", dict(tier="T" * 33)),
        ("nm_int", dict(nm=5)), ("nm_null", dict(nm=NULL)), ("nm_65_chars", dict(nm="N" * 65)),
        ("iss_missing", dict(iss=None)), ("iss_bytes", dict(iss=b"M-ACME")),
        ("cti_missing", dict(cti=None)), ("cti_empty", dict(cti=b"")),
        ("cti_33_bytes", dict(cti=bytes(33))), ("cti_text", dict(cti="4d01")),
        ("iat_missing", dict(iat=None)), ("iat_bool", dict(iat=True)),
        ("iat_float", dict(iat=float(NOW))),
        ("exp_null", dict(exp=NULL)), ("exp_bool", dict(exp=True)),
        ("exp_text", dict(exp=str(NOW + 60))), ("exp_float", dict(exp=float(NOW + 60))),
    ]
    for i, (name, over) in enumerate(bad):
        add(name, sign1(ed, bad_claims(100 + i, **over)), "malformed")
    add("payload_array", sign1(ed, cbor2.dumps([1, 2])), "malformed")
    add("payload_not_cbor", sign1(ed, b"\xff\x00"), "malformed")
    add("coupon_payload", sign1(ed, {1: MERCHANT, 7: _cti(150), 6: NOW - DAY, 5: NOW - DAY,
                                     4: NOW + DAY, "cmp": "SPRING", "kd": "pct", "val": 10}),
        "malformed")

    trust = sign1(k.root, {"ver": 3, "iat": NOW - 10 * DAY,
                           "keys": [key.entry() for key in k.trusted]})
    rev = sign1(k.root, {"ver": 5, "iat": NOW - 2 * DAY, "cti": REVOKED_CTI, "cmp": ["RECALLED"],
                         "mem": REVOKED_MEM})
    names = [c["name"] for c in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    return {
        "about": "SPEC 8.1 member codes; made by tests/support/make_member_vectors.py (its "
                 "docstring states the rules). A case is checked at `now` with `trustlist` and "
                 "`revocations` installed under `root_key`; clock_trusted false = the terminal "
                 "clock is not trusted yet (stateful check). mid/ep/tier/dynamic are given "
                 "when the claims were read (verdicts ok, blocked, expired, clock_unset).",
        "root_key": k.root.pub.hex(),
        "trustlist": "PT1:" + b45encode(trust),
        "revocations": "PR1:" + b45encode(rev),
        "revoked_members": REVOKED_MEM,
        "now": NOW,
        "merchant": MERCHANT,
        "cases": cases,
    }


def _payload(tok):
    from host_sim.issuance import token_claims
    return token_claims(tok)


def render(data):
    return json.dumps(data, indent=1, ensure_ascii=False) + "\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    text = render(build())
    if argv[:1] == ["--check"]:
        with open(FIXTURE, encoding="utf-8") as f:
            if f.read() != text:
                sys.stderr.write("%s is out of date: run python -m "
                                 "tests.support.make_member_vectors\n" % FIXTURE)
                return 1
        return 0
    with open(FIXTURE, "w", encoding="utf-8") as f:
        f.write(text)
    print("wrote %s (%d cases)" % (FIXTURE, len(build()["cases"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
