# The envelope against independent implementations: Python's hmac and cbor2.
import hashlib
import hmac

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.envelope import EnvelopeError, hmac_sha256, open_envelope, seal

device_ids = st.text(min_size=1, max_size=12).filter(lambda s: "\x00" not in s)
bodies = st.dictionaries(st.text(max_size=6),
                         st.one_of(st.integers(0, 2 ** 64 - 1), st.text(max_size=8),
                                   st.binary(max_size=16), st.booleans(), st.none(),
                                   st.lists(st.binary(min_size=1, max_size=32), max_size=3)),
                         max_size=6)
secrets = st.binary(min_size=32, max_size=32)
uints = st.integers(0, 2 ** 64 - 1)
msg_ids = st.binary(min_size=16, max_size=16)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=200), st.binary(max_size=300))
def test_hmac_matches_python_hmac(key, msg):
    assert hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()


def reference_seal(secret, dev, mtype, seq, ts, body, msg_id):
    """SPEC 3.1 written directly with cbor2 and hmac."""
    protected = cbor2.dumps({1: 5})
    payload = cbor2.dumps({"v": 1, "t": mtype, "id": msg_id, "dev": dev, "seq": seq, "ts": ts,
                           "body": body})
    tag = hmac.new(secret, cbor2.dumps(["MAC0", protected, b"", payload]),
                   hashlib.sha256).digest()
    return cbor2.dumps(cbor2.CBORTag(17, [protected, {4: dev.encode()}, payload, tag]))


@settings(max_examples=300, deadline=None)
@given(secrets, device_ids, st.sampled_from(["hello", "charge", "config", "x"]), uints, uints,
       bodies, msg_ids)
def test_reference_envelope_opens_and_ours_is_identical(secret, dev, mtype, seq, ts, body,
                                                         msg_id):
    ref = reference_seal(secret, dev, mtype, seq, ts, body, msg_id)
    p = open_envelope(secret, ref, dev, mtype)
    assert p == {"v": 1, "t": mtype, "id": msg_id, "dev": dev, "seq": seq, "ts": ts,
                 "body": body}
    ours = seal(secret, dev, mtype, seq, ts, body, msg_id)
    assert ours == ref


@settings(max_examples=300, deadline=None)
@given(secrets, device_ids, uints, bodies, msg_ids)
def test_ours_decodes_with_cbor2_and_verifies_with_hmac(secret, dev, seq, body, msg_id):
    data = seal(secret, dev, "status", seq, 1767225600, body, msg_id)
    msg = cbor2.loads(data)
    assert isinstance(msg, cbor2.CBORTag) and msg.tag == 17
    protected, unprotected, payload, tag = msg.value
    assert cbor2.loads(protected) == {1: 5}
    assert unprotected == {4: dev.encode()}
    assert hmac.compare_digest(
        tag, hmac.new(secret, cbor2.dumps(["MAC0", protected, b"", payload]),
                      hashlib.sha256).digest())
    p = cbor2.loads(payload)
    assert list(p) == ["v", "t", "id", "dev", "seq", "ts", "body"]
    assert (p["v"], p["t"], p["id"], p["dev"], p["seq"], p["ts"]) == (
        1, "status", msg_id, dev, seq, 1767225600)


@settings(max_examples=200, deadline=None)
@given(secrets, secrets, device_ids, bodies, msg_ids)
def test_other_secret_is_bad_mac(secret, other, dev, body, msg_id):
    if secret == other:
        return
    ref = reference_seal(other, dev, "hello", 1, 2, body, msg_id)
    try:
        open_envelope(secret, ref, dev, "hello")
    except EnvelopeError as e:
        assert e.code == "bad_mac"
    else:
        raise AssertionError("opened with the wrong secret")
