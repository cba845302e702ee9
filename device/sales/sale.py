# The sale record: one journal record holding a charge and its coupon redemptions together,
# so a power cut can never keep one without the other (SPEC 4). Format: docs/formats.md.

RECORD_VERSION = 1
KINDS = ("sale", "member", "topup", "vip")


def make_sale(cid, n, gross, coupons, cur, at, off, clerk, kind="sale", mem=None, ref=None,
              extra=None):
    """coupons: list of dicts with cti, cmp, disc, exp (from the verifier's ok verdicts).
    extra: the kind's own fields (mdisc: the member's tier discount; member payments: mcti +
    mexp, the dynamic code paying; VIP sales: tier)."""
    disc = extra.get("mdisc", 0) if extra else 0
    cpn = []
    for c in coupons:
        disc += c["disc"]
        cpn.append({"cti": c["cti"], "cmp": c["cmp"], "disc": c["disc"], "exp": c["exp"]})
    if disc > gross:
        raise ValueError("discounts exceed the gross amount")
    rec = {"r": "sale", "v": RECORD_VERSION, "cid": cid, "n": n, "kind": kind, "gross": gross,
           "amt": gross - disc, "cur": cur, "at": at, "off": off, "clerk": clerk, "cpn": cpn}
    if mem is not None:
        rec["mem"] = mem
    if ref is not None:
        rec["ref"] = ref
    if extra:
        for k, v in extra.items():
            rec[k] = v
    return rec


def charge_body(rec):
    """The SPEC 3.2 `charge` body of a sale record."""
    body = {"cid": rec["cid"], "kind": rec["kind"], "gross": rec["gross"], "amt": rec["amt"],
            "cur": rec["cur"], "at": rec["at"], "off": rec["off"], "clerk": rec["clerk"],
            "cpn": [{"cti": c["cti"], "cmp": c["cmp"], "disc": c["disc"]} for c in rec["cpn"]]}
    for k in ("mem", "ref", "mcti", "tier", "mdisc"):
        if k in rec:
            body[k] = rec[k]
    return body


def receipt_no(rec):
    return "%06d" % rec["n"]
