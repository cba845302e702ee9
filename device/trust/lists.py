# Trust list and revocation list (SPEC 2.2, and the revocation list's "mem" of SPEC 8.1):
# COSE_Sign1 lists signed by a provisioned root key, verified, installed atomically and kept
# across reboots; plus the COSE_Sign1 reading that signed codes (device/trust/signed.py) share
# with them, and the root-key verification the service licence (device/licence/) shares
# (TrustStore.root_payload).
import struct

from device import crypto
from protocol import base45, cbor, limits

TRUST = "trustlist"
REVOCATIONS = "revocations"
_PREFIXES = (("PT1:", TRUST), ("PR1:", REVOCATIONS))
_FILES = {TRUST: "/trustlist.cose", REVOCATIONS: "/revocations.cose"}

ERROR_CODES = ("malformed", "unknown_root", "bad_signature", "rollback", "wrong_kind", "storage",
               "too_large")

MAX_DEPTH = 16
ALG_ES256 = -7
ALG_EDDSA = -8
MAX_CTI = 32
MAX_MID = 64  # a member id is the charge's "mem": text of 1..64 characters


class TrustError(ValueError):
    """A list that cannot be installed; .code is one of ERROR_CODES."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


# ---------------------------------------------------------------- COSE_Sign1 (RFC 9052)

_MISSING = object()


def label(m, n):
    """Header/claim `n` of a decoded map, matching exact ints only (True == 1 in Python, but a
    CBOR true key is not label 1). Returns _MISSING when absent."""
    v = m.get(n, _MISSING)
    if v is _MISSING:
        return v
    for k in m:
        if k == n and type(k) is int:
            return v
    return _MISSING


def sign1_parts(raw):
    """COSE_Sign1 bytes (optionally tag 18) -> (protected bstr, protected map, unprotected map,
    payload start, payload end, signature): the payload is left where it is in raw, so a
    64 KiB list is never copied out of it. Raises ValueError (cbor.CBORError) on anything
    else, with loads()'s strictness (depth, lengths, trailing bytes)."""
    end = len(raw)
    major, n, i = cbor.head(raw, 0, end)
    depth = 1
    if major == 6:
        if n != 18:
            raise ValueError("tag %d is not COSE_Sign1" % n)
        depth = 2
        major, n, i = cbor.head(raw, i, end)
    if major != 4 or n != 4:
        raise ValueError("COSE_Sign1 is an array of 4")
    prot_b, i = cbor.item(raw, i, end, depth, MAX_DEPTH)
    unprot, i = cbor.item(raw, i, end, depth, MAX_DEPTH)
    major, n, i = cbor.head(raw, i, end)
    if type(prot_b) is not bytes or type(unprot) is not dict or major != 2:
        raise ValueError("COSE_Sign1 field types")
    if n > end - i:
        raise ValueError("payload longer than the input")
    start = i
    sig, i = cbor.item(raw, start + n, end, depth, MAX_DEPTH)
    if type(sig) is not bytes or len(sig) != 64:
        raise ValueError("signature must be 64 bytes")
    if i != end:
        raise ValueError("trailing bytes after the item")
    # RFC 9052 3: a zero-length protected bstr stands for the empty map.
    prot = cbor.loads(prot_b, MAX_DEPTH) if prot_b else {}
    if type(prot) is not dict:
        raise ValueError("protected header is not a map")
    return prot_b, prot, unprot, start, start + n, sig


def decode_sign1(raw):
    """COSE_Sign1 bytes (optionally tag 18) -> (protected bstr, protected map, unprotected map,
    payload bstr, signature). Raises ValueError (cbor.CBORError) on anything else."""
    if type(raw) is not bytes:
        raw = bytes(raw)
    prot_b, prot, unprot, start, end, sig = sign1_parts(raw)
    return prot_b, prot, unprot, raw[start:end], sig


def header_kid(prot, unprot):
    """kid from the protected map, else the unprotected one (_MISSING when in neither)."""
    kid = label(prot, 4)
    if kid is _MISSING:
        kid = label(unprot, 4)
    return kid


def _bstr_head(n):
    if n < 24:
        return bytes((0x40 | n,))
    if n < 0x100:
        return bytes((0x58, n))
    if n < 0x10000:
        return bytes((0x59, n >> 8, n & 0xFF))
    return b"\x5a" + struct.pack(">I", n)


def sig_structure(prot_b, payload):
    """CBOR ["Signature1", protected, h'', payload], written directly (no re-encoding)."""
    return b"".join((b"\x84\x6aSignature1", _bstr_head(len(prot_b)), prot_b, b"\x40",
                     _bstr_head(len(payload)), payload))


def _sig_structure_parts(prot_b, raw, start, end):
    """sig_structure() of the payload raw[start:end] as pieces for crypto.verify: the payload
    is hashed where it lies, never copied."""
    n = end - start
    prefix = b"".join((b"\x84\x6aSignature1", _bstr_head(len(prot_b)), prot_b, b"\x40",
                       _bstr_head(n)))
    return (prefix, memoryview(raw)[start:end])


def alg_for_key(pub):
    """The COSE alg a raw public key form implies: 32 bytes Ed25519, 33/65 bytes P-256."""
    n = len(pub)
    if n == 32:
        return ALG_EDDSA
    if n == 33 or n == 65:
        return ALG_ES256
    return None


def _is_int(v):
    return type(v) is int


def _is_uint(v):
    return type(v) is int and v >= 0


# ---------------------------------------------------------------- text forms

def parse_text(text):
    """'PT1:'/'PR1:' + base45 -> (TRUST | REVOCATIONS, COSE bytes)."""
    if type(text) is not str:
        raise TrustError("malformed", "list text must be a string")
    text = text.strip()
    for prefix, kind in _PREFIXES:
        if text.startswith(prefix):
            try:
                return kind, base45.decode(text[4:])
            except ValueError as e:
                raise TrustError("malformed", "bad base45: %s" % e)
    raise TrustError("malformed", "list text must start with PT1: or PR1:")


# ---------------------------------------------------------------- revoked serials

PAGE_BYTES = 1024  # revoked serials are kept in pages of this size: no large block is needed


class _Records:
    """n records of w bytes in pages of PAGE_BYTES (MicroPython's heap is not compacted: after
    hours of running it may lack one 60 KiB block but have plenty of 4 KiB ones)."""

    def __init__(self, w, n):
        self.w = w
        self.n = n
        self.per = max(1, PAGE_BYTES // w)
        self.pages = []
        left = n
        while left > 0:
            k = min(left, self.per)
            self.pages.append(bytearray(k * w))
            left -= k

    def get(self, k):
        i = (k % self.per) * self.w
        return self.pages[k // self.per][i:i + self.w]

    def put(self, k, data):
        i = (k % self.per) * self.w
        self.pages[k // self.per][i:i + self.w] = data

    def swap(self, a, b):
        x = self.get(a)
        self.put(a, self.get(b))
        self.put(b, x)

    def sort(self):
        """In place: heapsort, no second copy. Records already in order (the project's issuer
        writes its serials sorted) take one pass."""
        n = self.n
        get = self.get
        prev = get(0) if n else None
        for k in range(1, n):
            cur = get(k)
            if prev > cur:
                break
            prev = cur
        else:
            return
        for root in range(n // 2 - 1, -1, -1):
            self._sift(root, n)
        for size in range(n - 1, 0, -1):
            self.swap(0, size)
            self._sift(0, size)

    def _sift(self, root, size):
        get = self.get
        while True:
            child = 2 * root + 1
            if child >= size:
                return
            if child + 1 < size and get(child) < get(child + 1):
                child += 1
            if not get(root) < get(child):
                return
            self.swap(root, child)
            root = child

    def find(self, value):
        lo, hi = 0, self.n
        while lo < hi:
            mid = (lo + hi) >> 1
            v = self.get(mid)
            if v < value:
                lo = mid + 1
            elif v == value:
                return True
            else:
                hi = mid
        return False


class RevokedSet:
    """Revoked cti values, sorted per length in pages of fixed-size records, searched by
    bisection.

    On MicroPython a set of 16-byte bytes objects costs about 73 bytes per entry (object header +
    separate data block + table slot); the records cost exactly 16 (see tests/bench_coupon.py).
    A received list fills the records straight from its CBOR (revoked_from), never holding the
    serials as separate objects.
    """

    def __init__(self, ctis):
        self._groups = {}
        self.count = len(ctis)
        lengths = {}
        for c in ctis:
            lengths[len(c)] = lengths.get(len(c), 0) + 1
        fill = {}
        for w in lengths:
            self._groups[w] = _Records(w, lengths[w])
            fill[w] = 0
        for c in ctis:
            w = len(c)
            self._groups[w].put(fill[w], c)
            fill[w] += 1
        for rec in self._groups.values():
            rec.sort()

    def __contains__(self, cti):
        rec = self._groups.get(len(cti))
        return rec is not None and rec.find(cti)

    def __len__(self):
        return self.count


def revoked_from(raw, i, end):
    """The CBOR array of cti byte strings at raw[i] -> (RevokedSet, index after the array),
    streamed: one pass checks and counts the serials per length, a second copies each into
    its length's records, which are then sorted in place. The list's bytes plus the records
    are all the heap it takes. Anything but an array is returned decoded as it is (for the
    caller's type check); an item that is not a 1..32-byte string raises TrustError."""
    major, n, j = cbor.head(raw, i, end)
    if major != 4:
        return cbor.item(raw, i, end, 1, MAX_DEPTH)
    if 2 * n > end - j:  # every serial takes at least 2 bytes
        raise TrustError("malformed", "cti array longer than the list")
    counts = {}
    k = j
    for _ in range(n):
        major, w, k = cbor.head(raw, k, end)
        if major != 2 or not 1 <= w <= MAX_CTI or w > end - k:
            raise TrustError("malformed", "revoked cti must be 1..32 bytes")
        counts[w] = counts.get(w, 0) + 1
        k += w
    rs = RevokedSet([])
    rs.count = n
    fill = {}
    for w in counts:
        rs._groups[w] = _Records(w, counts[w])
        fill[w] = 0
    view = memoryview(raw)
    for _ in range(n):
        _, w, j = cbor.head(raw, j, end)
        rs._groups[w].put(fill[w], view[j:j + w])
        fill[w] += 1
        j += w
    for rec in rs._groups.values():
        rec.sort()
    return rs, j


def _list_payload(raw, i, end, kind):
    """The payload map of a list at raw[i:end], decoded in place; a revocation list's cti
    array straight into its RevokedSet (revoked_from)."""
    major, n, i = cbor.head(raw, i, end)
    if major != 5:
        raise TrustError("malformed", "payload is not a map")
    if 2 * n > end - i:
        raise TrustError("malformed", "payload: map longer than input")
    p = {}
    for _ in range(n):
        k, i = cbor.item(raw, i, end, 1, MAX_DEPTH)
        try:
            hash(k)  # MicroPython's `k in {}` does not hash, so ask explicitly
            dup = k in p
        except TypeError:
            raise TrustError("malformed", "payload: unhashable map key")
        if dup:
            raise TrustError("malformed", "payload: duplicate map key")
        if kind == REVOCATIONS and type(k) is str and k == "cti":
            p[k], i = revoked_from(raw, i, end)
        else:
            p[k], i = cbor.item(raw, i, end, 1, MAX_DEPTH)
    if i != end:
        raise TrustError("malformed", "payload: trailing bytes after the item")
    return p


def _first(e):
    return e[0]


class BlockedMembers:
    """The revocation list's "mem" entries [mid, ep] (SPEC 8.1): a card of member mid with
    epoch <= ep is blocked. Kept as the RevokedSet keeps serials: the UTF-8 mids sorted in one
    blob with 4-byte end offsets beside it and the epochs as 8-byte numbers in a third, searched
    by bisection: 12 bytes per entry plus the mid itself on both runtimes (a dict of str -> int
    costs several times that on MicroPython). A mid listed twice keeps its highest epoch."""

    def __init__(self, entries):
        # Sorted in place (the decoded list is ours): code point order is UTF-8 byte order. The
        # blobs are sized first and filled after, so no dict of every mid and no growing buffer
        # is needed on the way.
        entries.sort(key=_first)
        count = total = 0
        last = None
        for mid, _ in entries:
            if mid != last:
                last = mid
                count += 1
                total += len(mid.encode())
        mids = bytearray(total)
        ends = bytearray(4 * count)
        eps = bytearray(8 * count)
        i = end = 0
        last = None
        for mid, ep in entries:
            if mid == last:  # listed twice: the highest epoch
                if ep > int.from_bytes(eps[i * 8 - 8:i * 8], "big"):
                    eps[i * 8 - 8:i * 8] = ep.to_bytes(8, "big")
                continue
            last = mid
            k = mid.encode()
            mids[end:end + len(k)] = k
            end += len(k)
            ends[i * 4:i * 4 + 4] = end.to_bytes(4, "big")
            eps[i * 8:i * 8 + 8] = ep.to_bytes(8, "big")
            i += 1
        self.count = count
        self._mids = bytes(mids)
        self._ends = bytes(ends)
        self._eps = bytes(eps)

    def _end(self, i):
        return int.from_bytes(self._ends[i * 4:i * 4 + 4], "big") if i >= 0 else 0

    def epoch(self, mid):
        """The highest blocked epoch of member mid, or None when none of its cards is."""
        want = mid.encode()
        lo = 0
        hi = self.count
        while lo < hi:
            i = (lo + hi) >> 1
            v = self._mids[self._end(i - 1):self._end(i)]
            if v < want:
                lo = i + 1
            elif v == want:
                return int.from_bytes(self._eps[i * 8:i * 8 + 8], "big")
            else:
                hi = i
        return None

    def __len__(self):
        return self.count


# ---------------------------------------------------------------- list payloads

def _key_entry(e):
    if type(e) is not dict:
        raise TrustError("malformed", "trust list key is not a map")
    kid = e.get("kid")
    alg = e.get("alg")
    pub = e.get("pub")
    iss = e.get("iss")
    nbf = e.get("nbf")
    exp = e.get("exp")
    if type(kid) is not bytes or len(kid) != 8:
        raise TrustError("malformed", "key kid must be 8 bytes")
    if not _is_int(alg) or (alg != ALG_ES256 and alg != ALG_EDDSA):
        raise TrustError("malformed", "key alg must be -7 or -8")
    if type(pub) is not bytes or alg_for_key(pub) != alg:
        raise TrustError("malformed", "key pub does not fit its alg")
    if type(iss) is not str or not _is_int(nbf) or not _is_int(exp) or nbf > exp:
        raise TrustError("malformed", "key iss/nbf/exp")
    try:
        want = crypto.kid(alg, pub)
    except ValueError:
        raise TrustError("malformed", "key pub is not a valid point")
    if want != kid:
        raise TrustError("malformed", "key kid %s does not match its pub" % kid.hex())
    return kid, {"alg": alg, "pub": pub, "iss": iss, "nbf": nbf, "exp": exp}


def _trust_payload(p):
    keys = p.get("keys", _MISSING)
    if keys is _MISSING:
        if "cti" in p or "cmp" in p:
            raise TrustError("wrong_kind", "a revocation list, not a trust list")
        raise TrustError("malformed", "trust list has no keys")
    if type(keys) is not list:
        raise TrustError("malformed", "trust list keys must be an array")
    table = {}
    for e in keys:
        kid, key = _key_entry(e)
        if kid in table:
            raise TrustError("malformed", "duplicate kid %s" % kid.hex())
        table[kid] = key
    return table


def _revocation_payload(p):
    ctis = p.get("cti", _MISSING)  # a RevokedSet when it was an array (_list_payload)
    cmps = p.get("cmp", _MISSING)
    if ctis is _MISSING and "keys" in p:
        raise TrustError("wrong_kind", "a trust list, not a revocation list")
    if type(ctis) is not RevokedSet or type(cmps) is not list:
        raise TrustError("malformed", "revocation list needs cti and cmp arrays")
    for c in cmps:
        if type(c) is not str:
            raise TrustError("malformed", "revoked cmp must be text")
    return ctis, set(cmps), BlockedMembers(_member_entries(p))


def _member_entries(p):
    """The optional "mem": [[mid, ep], ...] (absent: no member card is blocked)."""
    mem = p.get("mem", _MISSING)
    if mem is _MISSING:
        return []
    if type(mem) is not list:
        raise TrustError("malformed", "revocation list mem must be an array")
    for e in mem:
        if type(e) is not list or len(e) != 2:
            raise TrustError("malformed", "a mem entry is [mid, ep]")
        mid, ep = e
        if type(mid) is not str or not 1 <= len(mid) <= MAX_MID or not _is_uint(ep) \
                or ep >= 1 << 64:
            raise TrustError("malformed", "a mem entry is [text 1..64, uint]")
    return mem


# ---------------------------------------------------------------- the store

class TrustStore:
    """The installed lists. fs=None keeps them in memory only (the stateless check command)."""

    def __init__(self, fs, data_dir, root_keys):
        self.fs = fs
        self.data_dir = data_dir
        self.roots = []
        for pub in root_keys:
            alg = alg_for_key(pub) if type(pub) is bytes else None
            if alg is None:
                raise TrustError("malformed", "root key must be 32, 33 or 65 bytes")
            try:
                kid = crypto.kid(alg, pub)
            except ValueError:
                raise TrustError("malformed", "root key is not a valid point")
            self.roots.append((kid, alg, pub))
        self.trust_ver = 0
        self.rev_ver = 0
        self._keys = {}
        self._digests = {}  # kind -> SHA-256 of the list installed
        self._rev_cti = RevokedSet([])
        self._rev_cmp = set()
        self._rev_mem = BlockedMembers([])
        self.load_errors = 0

    # -- verification -----------------------------------------------------------------------
    def _root_verify(self, alg, kid, tbs, sig):
        """Passes when a provisioned root key (the one the kid names, when there is one) signed
        tbs; TrustError unknown_root or bad_signature otherwise."""
        named = False
        for rkid, ralg, rpub in self.roots:
            if kid is not _MISSING and kid != rkid:
                continue
            named = kid is not _MISSING
            # a root key signs a list now and then: its table is not kept (crypto.verify)
            if type(alg) is int and alg == ralg and crypto.verify(ralg, rpub, tbs, sig,
                                                                    keep=False):
                return
        if named:
            raise TrustError("bad_signature", "signature does not verify under the root key")
        raise TrustError("unknown_root", "no root key verifies it")

    def root_payload(self, raw):
        """The payload map of a small COSE_Sign1 that a provisioned root key signed (the
        service licence of device/licence/). Raises TrustError: malformed, unknown_root,
        bad_signature."""
        if not isinstance(raw, (bytes, bytearray)):
            raise TrustError("malformed", "signed data must be bytes")
        try:
            prot_b, prot, unprot, payload, sig = decode_sign1(bytes(raw))
        except ValueError as e:
            raise TrustError("malformed", "not a COSE_Sign1: %s" % e)
        kid = header_kid(prot, unprot)
        if kid is not _MISSING and type(kid) is not bytes:
            raise TrustError("malformed", "kid must be a byte string")
        self._root_verify(label(prot, 1), kid, sig_structure(prot_b, payload), sig)
        try:
            p = cbor.loads(payload, MAX_DEPTH)
        except ValueError as e:
            raise TrustError("malformed", "payload: %s" % e)
        if type(p) is not dict:
            raise TrustError("malformed", "payload is not a map")
        return p

    def _verified_payload(self, raw, kind):
        """The payload map of a list that verifies under a root key. The list stays one buffer:
        its payload is decoded in place and its signature checked over the bytes where they
        lie."""
        if not isinstance(raw, (bytes, bytearray)):
            raise TrustError("malformed", "list must be bytes")
        if len(raw) > limits.LIST_MAX_BYTES:
            raise TrustError("too_large", "%s of %d bytes: the most a terminal takes is %d"
                             % (kind, len(raw), limits.LIST_MAX_BYTES))
        if type(raw) is not bytes:
            raw = bytes(raw)
        try:
            prot_b, prot, unprot, start, end, sig = sign1_parts(raw)
        except ValueError as e:
            raise TrustError("malformed", "not a COSE_Sign1: %s" % e)
        alg = label(prot, 1)
        kid = header_kid(prot, unprot)
        if kid is not _MISSING and type(kid) is not bytes:
            raise TrustError("malformed", "kid must be a byte string")
        # The payload is decoded before the signature is checked, and its fault reported only
        # for a list that verifies: a long revocation list's records are then allocated while
        # the heap is still in one piece, before the verifier's arithmetic scatters small
        # objects over it (MicroPython's heap is never compacted).
        try:
            p = _list_payload(raw, start, end, kind)
            fault = None
        except ValueError as e:  # cbor.CBORError or TrustError
            p = None
            fault = e
        self._root_verify(alg, kid, _sig_structure_parts(prot_b, raw, start, end), sig)
        if isinstance(fault, TrustError):
            raise fault
        if fault is not None:
            raise TrustError("malformed", "payload: %s" % fault)
        ver = p.get("ver")
        if not _is_uint(ver) or not _is_int(p.get("iat")):
            raise TrustError("malformed", "ver must be a uint and iat an int")
        return p, ver

    def _check(self, kind, raw, installed_ver):
        p, ver = self._verified_payload(raw, kind)
        parsed = _trust_payload(p) if kind == TRUST else _revocation_payload(p)
        if ver <= installed_ver:
            raise TrustError("rollback", "%s ver %d is not newer than %d"
                             % (kind, ver, installed_ver))
        return ver, parsed

    def _swap(self, kind, ver, parsed):
        if kind == TRUST:
            self._keys = parsed
            self.trust_ver = ver
        else:
            self._rev_cti, self._rev_cmp, self._rev_mem = parsed
            self.rev_ver = ver

    def has(self, kind):
        """True once a list of kind is installed (its ver may be 0: status shows 0 for none)."""
        return kind in self._digests

    def _install(self, kind, raw):
        # SPEC 2.2: greater than the installed one; with none installed any ver goes, 0 too
        installed = (self.trust_ver if kind == TRUST else self.rev_ver) if self.has(kind) else -1
        digest = crypto.sha256(raw) if isinstance(raw, (bytes, bytearray)) else None
        if digest is not None and digest == self._digests.get(kind):
            # the list installed, again (a retained list comes at every reconnect): verified
            # when it was installed, so not checked again (a verify builds tables a small heap
            # may not have room for)
            raise TrustError("rollback", "%s ver %d is the one installed" % (kind, installed))
        ver, parsed = self._check(kind, raw, installed)
        if self.fs is not None:
            try:
                data = raw if type(raw) is bytes else bytes(raw)
                self.fs.write_atomic(self.data_dir + _FILES[kind], data)
            except OSError as e:
                # Memory keeps the old list so what we use always matches what a reboot loads.
                raise TrustError("storage", "cannot save %s: %s" % (kind, e))
        self._swap(kind, ver, parsed)
        self._digests[kind] = digest
        return ver

    # -- public -----------------------------------------------------------------------------
    def open(self):
        """Loads the installed lists, verifying them again (roots may have rotated)."""
        if self.fs is None:
            return self
        self.fs.makedirs(self.data_dir)
        for kind in (TRUST, REVOCATIONS):
            raw = self.fs.read(self.data_dir + _FILES[kind])
            if raw is None:
                continue
            try:
                ver, parsed = self._check(kind, raw, -1)
            except TrustError:
                self.load_errors += 1
                continue
            self._swap(kind, ver, parsed)
            self._digests[kind] = crypto.sha256(raw)
        return self

    def install_trustlist(self, cose_bytes):
        return self._install(TRUST, cose_bytes)

    def install_revocations(self, cose_bytes):
        return self._install(REVOCATIONS, cose_bytes)

    def install_text(self, text, expect=None):
        """'PT1:...' or 'PR1:...' -> (kind, ver); expect names the kind the caller wants."""
        kind, raw = parse_text(text)
        if expect is not None and kind != expect:
            raise TrustError("wrong_kind", "expected a %s, got a %s" % (expect, kind))
        return kind, self._install(kind, raw)

    def key(self, kid):
        return self._keys.get(kid)

    def is_revoked(self, cti, cmp):
        return cti in self._rev_cti or cmp in self._rev_cmp

    def member_blocked(self, mid, ep):
        """A loss report blocks this card: the list's "mem" has [mid, E] with ep <= E."""
        blocked = self._rev_mem.epoch(mid)
        return blocked is not None and ep <= blocked

    def blocked_members_count(self):
        return len(self._rev_mem)

    def keys_count(self):
        return len(self._keys)

    def revoked_count(self):
        return len(self._rev_cti) + len(self._rev_cmp)
