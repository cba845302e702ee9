# COSE_Mac0 envelope (SPEC 3.1): HMAC vectors, a golden envelope, every error code, SeqGuard.
from binascii import unhexlify

from protocol import cbor
from protocol.envelope import (
    EnvelopeError,
    SeqGuard,
    hmac_sha256,
    open_envelope,
    seal,
    sender_of,
)
from tests.both.util import raises

SECRET = bytes(range(32))
MSG_ID = bytes(range(16))
DEV = "T-0001"

# Built independently with cbor2 + Python's hmac (see tests/cpy/test_envelope_cpy.py):
# seal(SECRET, "T-0001", "hello", 7, 1767225600, {"fw": "0.1.0"}, bytes(range(16))).
GOLDEN = unhexlify(
    "d18443a10105a10446542d303030315847a761760161746568656c6c6f62696450000102030405060708090a"
    "0b0c0d0e0f6364657666542d3030303163736571076274731a6955b90064626f6479a162667765302e312e30"
    "582095f4db5bcfa4788106481080f7543842530b7964c7e096ec2fbb61d37f1a824e")

# RFC 4231 test cases 1, 2, 3, 6 and 7 (6 and 7 use a 131-byte key, hashed first).
HMAC_VECTORS = [
    (b"\x0b" * 20, b"Hi There",
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?",
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 20, b"\xdd" * 50,
     "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
    (b"\xaa" * 131,
     b"This is a test using a larger than block-size key and a larger than block-size data."
     b" The key needs to be hashed before being used by the HMAC algorithm.",
     "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
]


def sealed(mtype="hello", seq=7, body=None, dev=DEV, secret=SECRET):
    return seal(secret, dev, mtype, seq, 1767225600, body if body is not None else {"fw": "1"},
                MSG_ID)


def forge(payload, kid=b"T-0001", protected=b"\xa1\x01\x05", secret=SECRET, tag=17,
          mac=None):
    """An envelope with a correct MAC around any payload object (or raw payload bytes)."""
    if not isinstance(payload, bytes):
        payload = cbor.dumps(payload)
    if mac is None:
        mac = hmac_sha256(secret, cbor.dumps(["MAC0", protected, b"", payload]))
    return cbor.dumps(cbor.Tag(tag, [protected, {4: kid}, payload, mac]))


def good_payload(**changes):
    p = {"v": 1, "t": "hello", "id": MSG_ID, "dev": DEV, "seq": 1, "ts": 5, "body": {}}
    for k, v in changes.items():
        if v is None:
            del p[k]
        else:
            p[k] = v
    return p


def code_of(fn, *args):
    return raises(EnvelopeError, fn, *args).code


def test_hmac_rfc4231_vectors():
    for key, msg, want in HMAC_VECTORS:
        assert hmac_sha256(key, msg) == unhexlify(want)


def test_hmac_key_lengths_around_block_size():
    # 64-byte keys are used as is, 65-byte keys hashed: the results must differ from each other.
    assert hmac_sha256(b"k" * 64, b"m") != hmac_sha256(b"k" * 65, b"m")
    assert hmac_sha256(b"", b"") == unhexlify(
        "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad")


def test_seal_matches_golden_bytes():
    assert seal(SECRET, DEV, "hello", 7, 1767225600, {"fw": "0.1.0"}, MSG_ID) == GOLDEN


def test_golden_opens():
    p = open_envelope(SECRET, GOLDEN, DEV, "hello")
    assert p == {"v": 1, "t": "hello", "id": MSG_ID, "dev": DEV, "seq": 7, "ts": 1767225600,
                 "body": {"fw": "0.1.0"}}


def test_structure_of_sealed_envelope():
    msg = cbor.loads(sealed())
    assert isinstance(msg, cbor.Tag) and msg.tag == 17
    protected, unprotected, payload, tag = msg.value
    assert protected == b"\xa1\x01\x05"
    assert unprotected == {4: b"T-0001"}
    assert len(tag) == 32
    assert cbor.loads(payload)["body"] == {"fw": "1"}


def test_round_trip_and_sender():
    body = {"cid": b"\x01" * 16, "cpn": [{"cti": b"\x02", "disc": 5}]}
    data = sealed("charge", 3, body)
    assert sender_of(data) == DEV
    p = open_envelope(SECRET, data, DEV, "charge")
    assert p["body"] == body and p["seq"] == 3 and p["t"] == "charge"


def test_non_ascii_device_id():
    data = sealed(dev="\u6536\u94f6-1")
    assert sender_of(data) == "\u6536\u94f6-1"
    assert open_envelope(SECRET, data, "\u6536\u94f6-1", "hello")["dev"] == "\u6536\u94f6-1"


def test_seal_rejects_bad_arguments():
    good = (SECRET, DEV, "hello", 1, 2, {}, MSG_ID)
    for i, bad in ((1, ""), (1, b"T"), (2, ""), (3, -1), (3, True), (4, 2 ** 64), (5, []),
                   (6, b"x" * 15), (6, "x" * 16)):
        args = list(good)
        args[i] = bad
        raises(ValueError, seal, *args)


def test_malformed_structure():
    for data in (b"", b"\xff", b"\x01", cbor.dumps([1, 2, 3, 4]),
                 forge(good_payload(), tag=18),
                 cbor.dumps(cbor.Tag(17, [b"\xa1\x01\x05", {4: b"T"}, b"\xa0"])),
                 cbor.dumps(cbor.Tag(17, "x")),
                 cbor.dumps(cbor.Tag(17, [{1: 5}, {4: b"T"}, b"\xa0", b"\x00" * 32])),
                 cbor.dumps(cbor.Tag(17, [b"\xa1\x01\x05", {4: b"T"}, {}, b"\x00" * 32])),
                 cbor.dumps(cbor.Tag(17, [b"\xa1\x01\x05", [], b"\xa0", b"\x00" * 32])),
                 forge(good_payload(), mac=b"\x00" * 31),
                 forge(good_payload(), kid="T-0001"),
                 forge(good_payload(), kid=b""),
                 forge(good_payload(), kid=b"\xff\xfe"),
                 b"\xd1" + b"\x81" * 40 + b"\x80"):
        assert code_of(open_envelope, SECRET, data, DEV, "hello") == "malformed", data
        assert code_of(sender_of, data) == "malformed"


def test_kid_missing_is_malformed():
    payload = cbor.dumps(good_payload())
    data = cbor.dumps(cbor.Tag(17, [b"\xa1\x01\x05", {}, payload, b"\x00" * 32]))
    assert code_of(open_envelope, SECRET, data, DEV, "hello") == "malformed"


def test_protected_header_must_say_hmac_256():
    five_as_float = b"\xa1\x01\xfb\x40\x14" + bytes(6)
    for prot in (b"", b"\xa0", b"\xa1\x01\x06", b"\xa1\x01\xf5", b"\x80", five_as_float):
        data = forge(good_payload(), protected=prot)
        assert code_of(open_envelope, SECRET, data, DEV, "hello") == "malformed", prot
    # Extra protected labels next to alg 5 are accepted.
    assert open_envelope(SECRET, forge(good_payload(), protected=b"\xa2\x01\x05\x03\x00"),
                         DEV, "hello")["seq"] == 1


def test_bad_mac():
    data = bytearray(sealed())
    assert code_of(open_envelope, b"\x00" * 32, bytes(data), DEV, "hello") == "bad_mac"
    data[-1] ^= 1
    assert code_of(open_envelope, SECRET, bytes(data), DEV, "hello") == "bad_mac"
    # A changed payload byte (still valid CBOR) breaks the MAC.
    raw = bytearray(sealed())
    i = bytes(raw).find(b"fw")
    raw[i] = ord("g")
    assert code_of(open_envelope, SECRET, bytes(raw), DEV, "hello") == "bad_mac"


def test_bad_mac_is_checked_before_payload_schema():
    data = forge({"v": 2}, secret=b"other")
    assert code_of(open_envelope, SECRET, data, DEV, "hello") == "bad_mac"


def test_payload_schema_rejections():
    bad = [
        [1, 2], "x",
        good_payload(v=2), good_payload(v=True), good_payload(v=1.0), good_payload(v=None),
        good_payload(t=5), good_payload(t=None),
        good_payload(id=b"x" * 15), good_payload(id=b"x" * 17), good_payload(id="x" * 16),
        good_payload(dev=b"T-0001"), good_payload(dev=None),
        good_payload(seq=-1), good_payload(seq=True), good_payload(seq=2 ** 64),
        good_payload(seq=None), good_payload(seq=1.0),
        good_payload(ts=-5), good_payload(ts=None), good_payload(ts=False),
        good_payload(body=[]), good_payload(body=None), good_payload(body=cbor.Tag(1, {})),
    ]
    for p in bad:
        assert code_of(open_envelope, SECRET, forge(p), DEV, "hello") == "malformed", p
    raw = forge(b"\xa1\x61")  # MAC ok, payload truncated
    assert code_of(open_envelope, SECRET, raw, DEV, "hello") == "malformed"


def test_payload_boundaries_accepted():
    for p in (good_payload(seq=0, ts=0), good_payload(seq=2 ** 64 - 1), good_payload(extra=1)):
        assert open_envelope(SECRET, forge(p), DEV, "hello")["seq"] == p["seq"]


def test_wrong_device():
    data = sealed(dev="T-0002")
    assert code_of(open_envelope, SECRET, data, DEV, "hello") == "wrong_device"
    # The payload names another device than the header and topic.
    data = forge(good_payload(dev="T-0002"))
    assert code_of(open_envelope, SECRET, data, DEV, "hello") == "wrong_device"
    # The header names another device than the payload and topic.
    data = forge(good_payload(), kid=b"T-0002")
    assert code_of(open_envelope, SECRET, data, DEV, "hello") == "wrong_device"


def test_wrong_type():
    e = raises(EnvelopeError, open_envelope, SECRET, sealed("status"), DEV, "hello")
    assert e.code == "wrong_type" and "status" in str(e)


def test_envelope_error_is_value_error():
    e = raises(ValueError, open_envelope, SECRET, b"", DEV, "hello")
    assert isinstance(e, EnvelopeError) and e.code == "malformed"


def test_seq_guard():
    g = SeqGuard()
    assert g.highest(DEV) is None
    g.check(DEV, 0)
    g.accept(DEV, 0)
    assert g.highest(DEV) == 0
    e = raises(EnvelopeError, g.check, DEV, 0)
    assert e.code == "stale_seq"
    g.accept(DEV, 5)
    for seq in (0, 4, 5):
        assert code_of(g.check, DEV, seq) == "stale_seq"
        assert code_of(g.accept, DEV, seq) == "stale_seq"
    assert g.highest(DEV) == 5
    g.check(DEV, 6)
    g.check("T-0002", 0)  # senders are independent
    assert g.state() == {DEV: 5}


def test_seq_guard_restores_state():
    g = SeqGuard({DEV: 9, "host": 3})
    assert g.highest(DEV) == 9 and g.highest("host") == 3
    assert code_of(g.check, DEV, 9) == "stale_seq"
    g.accept(DEV, 10)
    state = g.state()
    state[DEV] = 0  # a copy: changing it does not change the guard
    assert g.highest(DEV) == 10
    assert SeqGuard(g.state()).highest(DEV) == 10
    raises(ValueError, SeqGuard, {DEV: -1})
    raises(ValueError, SeqGuard, {DEV: True})
    raises(ValueError, SeqGuard, {1: 1})


def test_seq_guard_rejects_non_uint():
    g = SeqGuard()
    assert code_of(g.check, DEV, -1) == "malformed"
    assert code_of(g.check, DEV, "1") == "malformed"
    assert code_of(g.accept, DEV, True) == "malformed"


# ---------------------------------------------------------------- topics (SPEC 3 table)
# They live here because open_envelope takes its device and type from the parsed topic.

def test_topic_builders():
    from protocol import topics
    r = topics.DEFAULT_ROOT
    assert r == "pos/v1"
    assert topics.up(r, DEV, "charge") == "pos/v1/dev/T-0001/up/charge"
    assert topics.down(r, DEV, "config") == "pos/v1/dev/T-0001/down/config"
    assert topics.state(r, DEV) == "pos/v1/dev/T-0001/state"
    assert topics.fleet(r, "trustlist") == "pos/v1/fleet/down/trustlist"
    assert topics.fleet("shop", "revocations") == "shop/fleet/down/revocations"
    assert topics.device_subscriptions(r, DEV) == ["pos/v1/dev/T-0001/down/#",
                                                   "pos/v1/fleet/down/#"]


def test_topic_builders_reject_bad_segments():
    from protocol import topics
    r = topics.DEFAULT_ROOT
    for dev in ("", "a/b", "+", "#", "T#1", 5, None):
        raises(ValueError, topics.up, r, dev, "charge")
        raises(ValueError, topics.state, r, dev)
        raises(ValueError, topics.device_subscriptions, r, dev)
    for mtype in ("", "a/b", "+"):
        raises(ValueError, topics.down, r, DEV, mtype)
    for root in ("", "/pos", "pos/", "pos//v1", "pos/+", None):
        raises(ValueError, topics.up, root, DEV, "charge")
    raises(ValueError, topics.fleet, r, "members")


def test_topic_parse_round_trip():
    from protocol import topics
    for root in ("pos/v1", "x"):
        assert topics.parse(root, topics.up(root, DEV, "hello")) == ("up", DEV, "hello")
        assert topics.parse(root, topics.down(root, DEV, "xyz")) == ("down", DEV, "xyz")
        assert topics.parse(root, topics.state(root, DEV)) == ("state", DEV, None)
        for what in ("trustlist", "revocations"):
            assert topics.parse(root, topics.fleet(root, what)) == ("fleet", None, what)


def test_topic_parse_rejections():
    from protocol import topics
    r = "pos/v1"
    for t in ("pos/v2/dev/T-0001/up/hello", "pos/v1", "pos/v1/", "pos/v1x/dev/T/up/a",
              "pos/v1/dev/T-0001/up/hello/more", "pos/v1/dev/T-0001/up", "pos/v1/dev//up/hello",
              "pos/v1/dev/T-0001/up/", "pos/v1/dev/+/up/hello", "pos/v1/dev/T-0001/down/#",
              "pos/v1/dev/T-0001/sideways/hello", "pos/v1/dev/T-0001/state/x",
              "pos/v1/fleet/down/members", "pos/v1/fleet/up/trustlist",
              "pos/v1/fleet/down/trustlist/x", "pos/v1/other/a/b/c", "/pos/v1/dev/T/up/a",
              b"pos/v1/dev/T/up/a", None):
        raises(ValueError, topics.parse, r, t)


def test_topic_then_envelope():
    from protocol import topics
    kind, dev, mtype = topics.parse("pos/v1", "pos/v1/dev/T-0001/up/hello")
    assert open_envelope(SECRET, GOLDEN, dev, mtype)["seq"] == 7
    kind, dev, mtype = topics.parse("pos/v1", "pos/v1/dev/T-0002/up/hello")
    assert code_of(open_envelope, SECRET, GOLDEN, dev, mtype) == "wrong_device"
    kind, dev, mtype = topics.parse("pos/v1", "pos/v1/dev/T-0001/up/status")
    assert code_of(open_envelope, SECRET, GOLDEN, dev, mtype) == "wrong_type"
