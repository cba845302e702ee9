# The COSE_Mac0 envelope around every per-device message (SPEC 3.1):
#   17([protected = bstr(cbor({1: 5})), {4: device_id UTF-8 bstr}, payload bstr, tag bstr(32)])
#   tag = HMAC-SHA256(secret, cbor(["MAC0", protected, h'', payload]))
#   payload = cbor({"v": 1, "t": type, "id": bstr16, "dev": device_id, "seq": uint, "ts": uint,
#                   "body": map})
# Pure computation: the caller supplies the message id (16 random bytes) and the clock.
from protocol import cbor
from protocol.mac import equal as _equal
from protocol.mac import hmac_sha256  # noqa: F401  (part of this module's API)

ALG_HMAC_256 = 5
_PROTECTED = cbor.dumps({1: ALG_HMAC_256})
_UINT_END = 1 << 64

# Codes a receiver counts in its metrics.
MALFORMED = "malformed"
BAD_MAC = "bad_mac"
WRONG_DEVICE = "wrong_device"
WRONG_TYPE = "wrong_type"
STALE_SEQ = "stale_seq"


class EnvelopeError(ValueError):
    def __init__(self, code, message):
        super().__init__(code + ": " + message)
        self.code = code
        self.message = message


def _is_uint(v):
    return type(v) is int and 0 <= v < _UINT_END


def _bstr(b):
    return cbor.head_bytes(2, len(b)) + b


# The envelope's fixed pieces, encoded once: the payload map's keys (written in this order),
# the head of the MAC structure, and of the COSE_Mac0 (tag 17, array of 4, protected).
_K = {}
for _k in ("v", "t", "id", "dev", "seq", "ts", "body"):
    _K[_k] = cbor.dumps(_k)
_PAYLOAD_HEAD = b"\xa7" + _K["v"] + cbor.dumps(1) + _K["t"]
_MAC0_TEXT = b"\x84" + cbor.dumps("MAC0")  # ["MAC0", protected, h'', payload]
_MAC0_HEAD = _MAC0_TEXT + cbor.dumps(_PROTECTED) + b"\x40"
_MAC0_TAG_HEAD = b"\xd1\x84" + cbor.dumps(_PROTECTED)
_texts = {}  # the type names and device ids seen, encoded (a few)


def _text(s):
    b = _texts.get(s)
    if b is None:
        b = cbor.dumps(s)
        if len(_texts) < 64:
            _texts[s] = b
    return b


def seal(secret, device_id, mtype, seq, ts, body, msg_id):
    """Builds the envelope bytes; raises ValueError for arguments outside the SPEC."""
    if type(device_id) is not str or not device_id:
        raise ValueError("device_id must be non-empty text")
    if type(mtype) is not str or not mtype:
        raise ValueError("mtype must be non-empty text")
    if not _is_uint(seq) or not _is_uint(ts):
        raise ValueError("seq and ts must be uint")
    if not isinstance(body, dict):
        raise ValueError("body must be a dict")
    if not isinstance(msg_id, (bytes, bytearray)) or len(msg_id) != 16:
        raise ValueError("msg_id must be 16 bytes")
    # Written field by field in a fixed order, so the bytes are the same on MicroPython,
    # whose dict has no order: the bytes cbor.dumps writes for the map (tests hold them to
    # cbor2), with the fixed pieces encoded once.
    payload = b"".join((_PAYLOAD_HEAD, _text(mtype), _K["id"], b"\x50", bytes(msg_id),
                        _K["dev"], _text(device_id), _K["seq"], cbor.dumps(seq), _K["ts"],
                        cbor.dumps(ts), _K["body"], cbor.dumps(body)))
    pb = _bstr(payload)
    tag = hmac_sha256(secret, _MAC0_HEAD + pb)
    return b"".join((_MAC0_TAG_HEAD, b"\xa1\x04", _bstr(device_id.encode()), pb, b"\x58\x20",
                     tag))


def _parts(data):
    """Checks the COSE_Mac0 shape; returns (protected, sender, payload, tag)."""
    try:
        msg = cbor.loads(data)
    except cbor.CBORError as e:
        raise EnvelopeError(MALFORMED, "envelope: " + str(e)) from None
    if not isinstance(msg, cbor.Tag) or msg.tag != 17:
        raise EnvelopeError(MALFORMED, "not a COSE_Mac0 (tag 17)")
    parts = msg.value
    if type(parts) is not list or len(parts) != 4:
        raise EnvelopeError(MALFORMED, "COSE_Mac0 must be an array of 4")
    protected, unprotected, payload, tag = parts
    if type(protected) is not bytes or type(payload) is not bytes:
        raise EnvelopeError(MALFORMED, "protected and payload must be bytes")
    if type(tag) is not bytes or len(tag) != 32:
        raise EnvelopeError(MALFORMED, "tag must be 32 bytes")
    if type(unprotected) is not dict:
        raise EnvelopeError(MALFORMED, "unprotected header must be a map")
    kid = unprotected.get(4)
    if type(kid) is not bytes or not kid:
        raise EnvelopeError(MALFORMED, "unprotected kid (4) must be the device id bytes")
    try:
        sender = kid.decode("utf-8")
    except UnicodeError:
        raise EnvelopeError(MALFORMED, "kid is not UTF-8") from None
    return protected, sender, payload, tag


def sender_of(data):
    """The device id claimed by the unprotected header (no MAC check: it picks the secret)."""
    return _parts(data)[1]


def open_envelope(secret, data, device_id, mtype):
    """Verifies an envelope received on the topic of (device_id, mtype); returns the payload.

    Checks, in order: shape (malformed), MAC (bad_mac), payload schema (malformed), payload dev
    and header kid equal the topic's device (wrong_device), payload t equals the topic's type
    (wrong_type). Sequence numbers are the caller's job (SeqGuard).
    """
    protected, sender, payload, tag = _parts(data)
    if protected != _PROTECTED:  # the usual bytes need no decoding
        try:
            prot = cbor.loads(protected)
        except cbor.CBORError as e:
            raise EnvelopeError(MALFORMED, "protected header: " + str(e)) from None
        if type(prot) is not dict or type(prot.get(1)) is not int or prot[1] != ALG_HMAC_256:
            raise EnvelopeError(MALFORMED, "protected header must say alg 5 (HMAC 256/256)")
    mac_input = b"".join((_MAC0_TEXT, _bstr(protected), b"\x40", _bstr(payload)))
    if not _equal(hmac_sha256(secret, mac_input), tag):
        raise EnvelopeError(BAD_MAC, "MAC does not verify")
    try:
        p = cbor.loads(payload)
    except cbor.CBORError as e:
        raise EnvelopeError(MALFORMED, "payload: " + str(e)) from None
    if type(p) is not dict:
        raise EnvelopeError(MALFORMED, "payload must be a map")
    v = p.get("v")
    if type(v) is not int or v != 1:
        raise EnvelopeError(MALFORMED, "payload v must be 1")
    if type(p.get("t")) is not str:
        raise EnvelopeError(MALFORMED, "payload t must be text")
    mid = p.get("id")
    if type(mid) is not bytes or len(mid) != 16:
        raise EnvelopeError(MALFORMED, "payload id must be 16 bytes")
    if type(p.get("dev")) is not str:
        raise EnvelopeError(MALFORMED, "payload dev must be text")
    if not _is_uint(p.get("seq")):
        raise EnvelopeError(MALFORMED, "payload seq must be uint")
    if not _is_uint(p.get("ts")):
        raise EnvelopeError(MALFORMED, "payload ts must be uint")
    if type(p.get("body")) is not dict:
        raise EnvelopeError(MALFORMED, "payload body must be a map")
    if p["dev"] != device_id or sender != device_id:
        raise EnvelopeError(WRONG_DEVICE, "sent by %r, topic is for %r" % (p["dev"], device_id))
    if p["t"] != mtype:
        raise EnvelopeError(WRONG_TYPE, "payload says %r, topic says %r" % (p["t"], mtype))
    return p


class SeqGuard:
    """Highest accepted seq per sender; a receiver drops anything not above it (replays)."""

    def __init__(self, initial=None):
        self._high = {}
        if initial:
            for sender, seq in initial.items():
                if type(sender) is not str or not _is_uint(seq):
                    raise ValueError("SeqGuard state must map text to uint")
                self._high[sender] = seq

    def highest(self, sender):
        """The highest seq accepted from sender, or None before the first."""
        return self._high.get(sender)

    def check(self, sender, seq):
        if not _is_uint(seq):
            raise EnvelopeError(MALFORMED, "seq must be uint")
        high = self._high.get(sender)
        if high is not None and seq <= high:
            raise EnvelopeError(STALE_SEQ, "seq %d not above %d from %s" % (seq, high, sender))

    def accept(self, sender, seq):
        self.check(sender, seq)
        self._high[sender] = seq

    def state(self):
        """A copy of the per-sender highs, for the owner to persist and pass back later."""
        return dict(self._high)
