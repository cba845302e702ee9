# The sale record: one journal record holding a charge and its coupon redemptions together,
# so a power cut can never keep one without the other (SPEC 4). Format: docs/formats.md.

from protocol import cbor
from protocol.cbor import put_bool, put_bytes, put_text, put_uint

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


# The fields every sale has, in make_sale's order: (encoded key, key, writer of its one type).
_FIELDS = ((b"\x61r", "r", put_text), (b"\x61v", "v", put_uint), (b"\x63cid", "cid", put_bytes),
           (b"\x61n", "n", put_uint), (b"\x64kind", "kind", put_text),
           (b"\x65gross", "gross", put_uint), (b"\x63amt", "amt", put_uint),
           (b"\x63cur", "cur", put_text), (b"\x62at", "at", put_uint),
           (b"\x63off", "off", put_bool), (b"\x65clerk", "clerk", put_text))
_REDEMPTION = ((b"\x63cti", "cti", put_bytes), (b"\x63cmp", "cmp", put_text),
               (b"\x64disc", "disc", put_uint), (b"\x63exp", "exp", put_uint))
# The optional fields in the order make_sale writes them for its callers (mem, ref, then the
# kinds' extras: a member payment's mcti + mexp, a VIP sale's tier, a tier discount last).
_OPTIONAL = (("mem", b"\x63mem"), ("ref", b"\x63ref"), ("mcti", b"\x64mcti"),
             ("mexp", b"\x64mexp"), ("tier", b"\x64tier"), ("mdisc", b"\x65mdisc"))
_PLAIN = len(_FIELDS) + 1  # and cpn


def record_bytes(rec):
    """The journal bytes of a sale record: the map cbor.dumps(rec) writes for make_sale's key
    order (so the same bytes on both runtimes), field by field, because the clerk's commit waits
    on it (issue 14): half the generic encoder's time on MicroPython. Any other shape or value
    goes to cbor.dumps, which writes the same map or says why it cannot."""
    try:
        return _record_bytes(rec)
    except Exception:  # a field of another type, a missing or unknown key: not this shape
        return cbor.dumps(rec)


def _record_bytes(rec):
    n = len(rec)
    if n > 23:
        raise cbor.CBORError("not a sale record")
    out = bytearray()
    out.append(0xA0 | n)
    for key, k, put in _FIELDS:
        out += key
        put(out, rec[k])
    cpn = rec["cpn"]
    if type(cpn) is not list or len(cpn) > 23:
        raise cbor.CBORError("cpn is not a short list")
    out += b"\x63cpn"
    out.append(0x80 | len(cpn))
    for c in cpn:
        if type(c) is not dict or len(c) != 4:
            raise cbor.CBORError("not a redemption")
        out.append(0xA4)
        for key, k, put in _REDEMPTION:
            out += key
            put(out, c[k])
    if n > _PLAIN:
        seen = _PLAIN
        for k, key in _OPTIONAL:
            if k in rec:
                out += key
                cbor.encode_into(out, rec[k])
                seen += 1
        if seen != n:
            raise cbor.CBORError("a field this encoder does not know")
    return bytes(out)


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
