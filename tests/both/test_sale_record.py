# The sale record's journal bytes (device/sales/sale.py record_bytes): the fast writer must give
# the map the generic encoder gives, and hand every other shape to it.
from device.sales.sale import make_sale, record_bytes
from protocol import cbor

CID = bytes(range(16))
COUPON = {"cti": b"\x01\x02", "cmp": "WINTER", "disc": 1000, "exp": 1800000000}
# cbor2.dumps of _plain() (make_sale's key order) on CPython: the bytes on both runtimes
PLAIN_HEX = ("ac61726473616c656176016363696450000102030405060708090a0b0c0d0e0f616e07646b696e6464"
             "73616c656567726f7373192ee063616d74192af86363757263434e596261741a6ab13b80636f6666f4"
             "65636c65726b6263316363706e81a46363746942010263636d706657494e54455264646973631903e8"
             "636578701a6b49d200")


def _plain(**kw):
    return make_sale(CID, 7, 12000, [dict(COUPON)], "CNY", 1790000000, False, "c1", **kw)


def test_plain_sale_bytes_are_fixed():
    rec = _plain()
    assert record_bytes(rec) == bytes.fromhex(PLAIN_HEX)
    assert cbor.loads(record_bytes(rec)) == rec


def test_every_kind_of_sale_reads_back_as_made():
    recs = [
        _plain(),
        make_sale(CID, 1, 500, [], "CNY", 0, True, "clerk"),
        make_sale(CID, 2**40, 2**33, [dict(COUPON)] * 23, "EUR", 2**63, True, "x" * 40),
        _plain(kind="member", mem="M-1", extra={"mcti": b"\x05" * 8, "mexp": 1800000100,
                                                "mdisc": 300}),
        _plain(kind="vip", mem="M-2", extra={"tier": "gold"}),
        _plain(kind="topup", mem="M-3", ref="R-1"),
        _plain(extra={"mdisc": 200, "tier": "silver"}),  # extras in another order
    ]
    for rec in recs:
        raw = record_bytes(rec)
        assert cbor.loads(raw) == rec, rec
        assert len(raw) == len(cbor.dumps(rec))


def test_other_shapes_go_to_the_generic_encoder():
    odd = []
    for key, value in (("n", True), ("gross", -1), ("at", 2**64), ("off", 1), ("cid", "text"),
                       ("cur", b"CNY"), ("cpn", "none"), ("clerk", None), ("v", 1.5)):
        rec = _plain()
        rec[key] = value
        odd.append(rec)
    rec = _plain()
    rec["note"] = "a field of a later version"
    odd.append(rec)
    rec = _plain()
    del rec["clerk"]
    odd.append(rec)
    rec = _plain()
    rec["cpn"][0]["extra"] = 1
    odd.append(rec)
    rec = _plain()
    rec["cpn"] = [dict(COUPON)] * 24
    odd.append(rec)
    for rec in odd:
        raw = record_bytes(rec)
        assert raw == cbor.dumps(rec), rec
        assert cbor.loads(raw) == rec, rec


def test_what_no_encoder_takes_still_raises():
    rec = _plain()
    rec["clerk"] = object()
    try:
        record_bytes(rec)
    except cbor.CBORError:
        return
    raise AssertionError("an unencodable field was written")
