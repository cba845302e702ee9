# Reading a service licence (SPEC 8.5): "PL1:" + base45(COSE_Sign1) signed by a provisioned root
# key, exactly like the lists of SPEC 2.2 (the Sign1 reading and the root-key check are the trust
# store's own: TrustStore.root_payload). Payload {"ver", "dev", "plan", "exp", "grace"}; unknown
# keys are ignored. Checks, in order; the first failure is the error code:
#   malformed       text, base45, COSE_Sign1 structure, payload fields
#   unknown_root    no provisioned root key verifies it
#   bad_signature   the root key it names does not verify it
#   wrong_device    it names another terminal
#   rollback        its ver is not above the installed one
from device.trust.lists import TrustError
from protocol import base45
from protocol import schema as s
from protocol.store_messages import MAX_LICENCE

PREFIX = "PL1:"
# base45 writes 2 bytes as 3 characters: the text of the largest licence a `licence` message
# may carry.
MAX_TEXT = len(PREFIX) + (MAX_LICENCE * 3 + 1) // 2
MAX_PLAN = 64
MAX_DEVICE_ID = 64


class LicenceError(ValueError):
    """A licence that cannot be installed; .code names why (see above, and `storage`)."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def parse_text(text):
    """'PL1:' + base45 -> the COSE bytes."""
    if type(text) is not str:
        raise LicenceError("malformed", "a licence text must be a string")
    text = text.strip()
    if not text.startswith(PREFIX):
        raise LicenceError("malformed", "a licence text starts with " + PREFIX)
    if len(text) > MAX_TEXT:
        raise LicenceError("malformed", "licence text over %d characters" % MAX_TEXT)
    try:
        return base45.decode(text[len(PREFIX):])
    except ValueError as e:
        raise LicenceError("malformed", "bad base45: %s" % e)


def text_of(raw):
    return PREFIX + base45.encode(raw)


def _fields(p):
    try:
        return {"ver": s.req(p, "ver", s.uint), "dev": s.req(p, "dev", s.text, 1, MAX_DEVICE_ID),
                "plan": s.req(p, "plan", s.text, 1, MAX_PLAN), "exp": s.req(p, "exp", s.integer),
                "grace": s.req(p, "grace", s.amount)}
    except s.MessageError as e:
        raise LicenceError("malformed", "licence %s" % e)


def verify(trust, raw, device_id, installed_ver=0):
    """The facts {"ver", "dev", "plan", "exp", "grace"} of a licence for this terminal that is
    newer than installed_ver; raises LicenceError. trust: the TrustStore holding the roots."""
    if not isinstance(raw, (bytes, bytearray)) or not 0 < len(raw) <= MAX_LICENCE:
        raise LicenceError("malformed", "a licence is 1..%d bytes" % MAX_LICENCE)
    try:
        p = trust.root_payload(raw)
    except TrustError as e:
        raise LicenceError(e.code, e.message)
    lic = _fields(p)
    if lic["dev"] != device_id:
        raise LicenceError("wrong_device", "licence for %s, not this terminal" % lic["dev"])
    if lic["ver"] <= installed_ver:
        raise LicenceError("rollback", "licence ver %d is not newer than %d"
                           % (lic["ver"], installed_ver))
    return lic
