# CBOR (RFC 8949) for coupons and envelopes, on CPython and MicroPython.
#
# dumps() writes exactly what cbor2.dumps() writes with default options for every value it takes:
# shortest-form heads, definite lengths, maps in the dict's iteration order, ints beyond 64 bits
# as bignum tags 2/3, finite floats always as 8-byte doubles, +-inf as f97c00/f9fc00 and every
# NaN as f97e00 (cbor2 6.3 does the same).
# MicroPython's plain dict does not keep insertion order: pass a collections.OrderedDict where
# byte-exact output matters there (the MAC/signature always covers the bytes as sent, so order
# never affects verification).
#
# loads() is strict because its input comes from scanners and the network:
# - the input must be exactly one item (trailing bytes are an error);
# - depth: every array, map and tag is one level (the item at the top is level 1 if it is one
#   of those); max_depth=16 allows 16 nested containers and rejects the 17th; scalars add nothing;
# - a declared length is checked against the remaining input before anything is allocated
#   (n bytes of a string, >= n bytes for n array items, >= 2n bytes for n map entries);
# - indefinite lengths, break codes, reserved additional info 28..30 are rejected;
# - text must be valid UTF-8 (no overlongs, surrogates or code points > U+10FFFF);
# - map keys must be hashable and unique (RFC 9052 forbids duplicate labels; cbor2 would keep
#   the last one);
# - simple values: false/true/null decode to False/True/None; undefined and every other simple
#   value are rejected (nothing here uses them, and accepting them would put extra types into
#   every schema check; cbor2 returns its own undefined/CBORSimpleValue objects);
# - tags 2/3 must wrap a byte string and decode to int; every other tag decodes to Tag.
# Any failure raises CBORError, never IndexError, RecursionError or MemoryError.
import struct

_UINT64_END = 1 << 64


class CBORError(ValueError):
    pass


class Tag:
    """A tagged item that is not a bignum: Tag(17, [...]) is a COSE_Mac0."""

    def __init__(self, tag, value):
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and self.tag == other.tag and self.value == other.value

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        # Raises TypeError when the value is unhashable, like a tuple holding a list.
        return hash((self.tag, self.value))

    def __repr__(self):
        return "Tag(%d, %r)" % (self.tag, self.value)


# ---------------------------------------------------------------- encoding

def _head(out, major, n):
    mt = major << 5
    if n < 24:
        out.append(mt | n)
    elif n < 0x100:
        out.append(mt | 24)
        out.append(n)
    elif n < 0x10000:
        out += struct.pack(">BH", mt | 25, n)
    elif n < 0x100000000:
        out += struct.pack(">BI", mt | 26, n)
    else:
        out += struct.pack(">BQ", mt | 27, n)


def _encode_int(out, n):
    if 0 <= n < _UINT64_END:
        _head(out, 0, n)
        return
    if -_UINT64_END <= n < 0:
        _head(out, 1, -1 - n)
        return
    # Bignum: the magnitude as a minimal big-endian byte string, like cbor2.
    if n >= 0:
        out.append(0xC2)
    else:
        out.append(0xC3)
        n = -1 - n
    # Byte length from the hex digits: MicroPython ints have no bit_length().
    raw = n.to_bytes((len("%x" % n) + 1) // 2, "big")
    _head(out, 2, len(raw))
    out += raw


def _encode_float(out, x):
    if x != x:
        out += b"\xf9\x7e\x00"
    elif x == _INF:
        out += b"\xf9\x7c\x00"
    elif x == -_INF:
        out += b"\xf9\xfc\x00"
    else:
        out.append(0xFB)
        out += struct.pack(">d", x)


_INF = float("inf")
_KEYS_MAX = 128
_KEY_BYTES = {}  # short texts already encoded (head + UTF-8): map keys, and short values


def _text_bytes(s):
    raw = s.encode("utf-8")
    out = bytearray()
    _head(out, 3, len(raw))
    out += raw
    return bytes(out)


def _encode(out, obj):
    # Exact type checks first (fast path), then subclasses such as namedtuple. Maps and lists
    # of fewer than 24 entries, and their common values (small ints, short texts and ids), are
    # written in place: a sale record is one such map, and its commit waits on this (issue 14).
    t = type(obj)
    if t is not dict and t is not list and isinstance(obj, dict):
        t = dict  # a subclass (OrderedDict): its items in its own order
    append = out.append
    if t is dict:
        n = len(obj)
        if n < 24:
            append(0xA0 | n)
        else:
            _head(out, 5, n)
        keys = _KEY_BYTES
        for k in obj:
            v = obj[k]  # not items(): on MicroPython each pair would be a new tuple on the heap
            enc = keys.get(k)  # the cache holds texts only (a str subclass encodes as its text)
            if enc is not None:
                out += enc
            elif type(k) is str:
                enc = _text_bytes(k)
                if len(enc) <= 17 and len(keys) < _KEYS_MAX:
                    keys[k] = enc  # map keys: a few names again and again
                out += enc
            else:
                _encode(out, k)
            tv = type(v)
            if tv is int and v >= 0:
                if v < 24:
                    append(v)
                elif v < 0x100:
                    append(0x18)
                    append(v)
                elif v < 0x10000:
                    append(0x19)
                    append(v >> 8)
                    append(v & 0xFF)
                elif v < 0x100000000:
                    append(0x1A)
                    out += v.to_bytes(4, "big")
                else:
                    _encode_int(out, v)
            elif tv is bytes:
                n = len(v)
                if n < 24:
                    append(0x40 | n)
                else:
                    _head(out, 2, n)
                out += v
            elif tv is str:
                # the same cache as the keys, written out again: a call per value costs the
                # sale commit on MicroPython
                enc = keys.get(v)
                if enc is None:
                    enc = _text_bytes(v)
                    if len(enc) <= 9 and len(keys) < _KEYS_MAX:
                        keys[v] = enc  # short values come again too ("sale", "CNY")
                out += enc
            elif v is True:
                append(0xF5)
            elif v is False:
                append(0xF4)
            else:
                _encode(out, v)
    elif t is list or t is tuple:
        n = len(obj)
        if n < 24:
            append(0x80 | n)
        else:
            _head(out, 4, n)
        for v in obj:
            _encode(out, v)
    elif obj is True:
        append(0xF5)
    elif obj is False:
        append(0xF4)
    elif obj is None:
        append(0xF6)
    elif t is int:
        _encode_int(out, obj)
    elif t is str:
        raw = obj.encode("utf-8")
        _head(out, 3, len(raw))
        out += raw
    elif t is bytes or t is bytearray:
        _head(out, 2, len(obj))
        out += obj
    elif isinstance(obj, (list, tuple)):
        _encode(out, list(obj))
    elif t is float:
        _encode_float(out, obj)
    elif t is Tag:
        tag = obj.tag
        if type(tag) is not int or not 0 <= tag < _UINT64_END:
            raise CBORError("tag number must be an int in 0..2**64-1")
        _head(out, 6, tag)
        _encode(out, obj.value)
    elif isinstance(obj, int):
        _encode_int(out, int(obj))
    elif isinstance(obj, str):
        _encode(out, str(obj))
    elif isinstance(obj, (bytes, bytearray)):
        _encode(out, bytes(obj))
    elif isinstance(obj, float):
        _encode_float(out, float(obj))
    else:
        raise CBORError("cannot encode %s" % type(obj).__name__)


# Writers for hand-written encoders of one fixed shape (device/sales/sale.py: the sale record,
# whose commit the clerk waits on). Each takes exactly its type and raises CBORError for
# anything else, so such an encoder can hand the value to dumps() instead of writing it wrong.
def put_uint(out, v):
    if type(v) is not int or v < 0:
        raise CBORError("not an unsigned int")
    if v < 24:
        out.append(v)
    elif v < _UINT64_END:
        _head(out, 0, v)
    else:
        raise CBORError("unsigned int over 64 bits")


def put_text(out, s):
    if type(s) is not str:
        raise CBORError("not a text")
    enc = _KEY_BYTES.get(s)
    if enc is None:
        enc = _text_bytes(s)
        if len(enc) <= 9 and len(_KEY_BYTES) < _KEYS_MAX:
            _KEY_BYTES[s] = enc
    out += enc


def put_bytes(out, b):
    if type(b) is not bytes:
        raise CBORError("not bytes")
    n = len(b)
    if n < 24:
        out.append(0x40 | n)
    else:
        _head(out, 2, n)
    out += b


def put_bool(out, v):
    if v is True:
        out.append(0xF5)
    elif v is False:
        out.append(0xF4)
    else:
        raise CBORError("not a bool")


def encode_into(out, obj):
    """Appends obj as dumps() would write it (no error translation: callers fall back)."""
    _encode(out, obj)


def head_bytes(major, n):
    """The head of an item: major type and argument, shortest form (as dumps writes it)."""
    out = bytearray()
    _head(out, major, n)
    return bytes(out)


def dumps(obj):
    out = bytearray()
    try:
        _encode(out, obj)
    except UnicodeError:
        raise CBORError("text is not encodable as UTF-8") from None
    except RuntimeError:
        # RecursionError on CPython, RuntimeError on MicroPython: a cyclic or absurdly deep value.
        raise CBORError("value nested too deeply") from None
    return bytes(out)


# ---------------------------------------------------------------- decoding

def _utf8_valid(b):
    """Strict UTF-8 (RFC 3629): what CPython's decoder enforces and MicroPython's does not."""
    i = 0
    n = len(b)
    while i < n:
        c = b[i]
        if c < 0x80:
            i += 1
            continue
        lo = 0x80
        hi = 0xBF
        if 0xC2 <= c <= 0xDF:
            k = 1
        elif c == 0xE0:
            k = 2
            lo = 0xA0  # overlong below U+0800
        elif c == 0xED:
            k = 2
            hi = 0x9F  # surrogates U+D800..DFFF
        elif 0xE1 <= c <= 0xEF:
            k = 2
        elif c == 0xF0:
            k = 3
            lo = 0x90  # overlong below U+10000
        elif 0xF1 <= c <= 0xF3:
            k = 3
        elif c == 0xF4:
            k = 3
            hi = 0x8F  # beyond U+10FFFF
        else:
            return False
        if i + k >= n:
            return False
        d = b[i + 1]
        if d < lo or d > hi:
            return False
        j = i + 2
        i += k + 1
        while j < i:
            if b[j] & 0xC0 != 0x80:
                return False
            j += 1
    return True


def _decoder_is_strict():
    try:
        b"\xed\xa0\x80".decode("utf-8")
    except UnicodeError:
        return True
    return False


# CPython's decoder rejects surrogates and overlongs itself; MicroPython's only checks structure.
_STRICT_UTF8 = _decoder_is_strict()


def _text(raw):
    try:
        s = raw.decode("utf-8")
    except UnicodeError:
        raise CBORError("invalid UTF-8 in text") from None
    if not _STRICT_UTF8 and len(s) != len(raw) and not _utf8_valid(raw):
        raise CBORError("invalid UTF-8 in text")
    return s


def _half(raw):
    return struct.unpack(">e", raw)[0]


def _item(data, i, end, depth, max_depth):
    """Decodes the item at data[i]; returns (value, index after it)."""
    if i >= end:
        raise CBORError("truncated input")
    ib = data[i]
    i += 1
    major = ib >> 5
    ai = ib & 31

    if major == 7:
        if ai == 20:
            return False, i
        if ai == 21:
            return True, i
        if ai == 22:
            return None, i
        if ai == 25:
            if i + 2 > end:
                raise CBORError("truncated input")
            return _half(data[i:i + 2]), i + 2
        if ai == 26:
            if i + 4 > end:
                raise CBORError("truncated input")
            return struct.unpack(">f", data[i:i + 4])[0], i + 4
        if ai == 27:
            if i + 8 > end:
                raise CBORError("truncated input")
            return struct.unpack(">d", data[i:i + 8])[0], i + 8
        if ai == 31:
            raise CBORError("unexpected break code")
        if 28 <= ai <= 30:
            raise CBORError("reserved additional info %d" % ai)
        raise CBORError("unsupported simple value")

    # The argument: a value, a length or a tag number.
    if ai < 24:
        n = ai
    elif ai == 24:
        if i >= end:
            raise CBORError("truncated input")
        n = data[i]
        i += 1
    elif ai == 25:
        if i + 2 > end:
            raise CBORError("truncated input")
        n = (data[i] << 8) | data[i + 1]
        i += 2
    elif ai == 26:
        if i + 4 > end:
            raise CBORError("truncated input")
        n = struct.unpack(">I", data[i:i + 4])[0]
        i += 4
    elif ai == 27:
        if i + 8 > end:
            raise CBORError("truncated input")
        n = struct.unpack(">Q", data[i:i + 8])[0]
        i += 8
    elif ai == 31:
        raise CBORError("indefinite length not allowed")
    else:
        raise CBORError("reserved additional info %d" % ai)

    if major == 0:
        return n, i
    if major == 1:
        return -1 - n, i
    if major == 2:
        if n > end - i:
            raise CBORError("byte string longer than input")
        return data[i:i + n], i + n
    if major == 3:
        if n > end - i:
            raise CBORError("text string longer than input")
        return _text(data[i:i + n]), i + n

    # Containers: arrays, maps and tags each take one level.
    if depth >= max_depth:
        raise CBORError("nesting deeper than %d" % max_depth)
    depth += 1
    if major == 4:
        if n > end - i:
            raise CBORError("array longer than input")
        items = []
        append = items.append
        for _ in range(n):
            v, i = _small(data, i, end, depth, max_depth)
            append(v)
        return items, i
    if major == 5:
        if 2 * n > end - i:
            raise CBORError("map longer than input")
        m = {}
        for _ in range(n):
            ib = data[i] if i < end else 0
            if 0x60 <= ib < 0x78 and i + 1 + (ib - 0x60) <= end:
                # a short text key (nearly every key here): decoded once, then looked up
                j = i + 1 + ib - 0x60
                raw = data[i:j]
                if type(raw) is not bytes:
                    raw = bytes(raw)
                k = _KEYS.get(raw)
                if k is None:
                    k = _text(raw[1:])
                    if len(_KEYS) < _KEYS_MAX:
                        _KEYS[raw] = k
                i = j
                if k in m:
                    raise CBORError("duplicate map key")
            else:
                k, i = _item(data, i, end, depth, max_depth)
                try:
                    hash(k)  # MicroPython's `k in {}` does not hash, so ask explicitly
                    dup = k in m
                except TypeError:
                    raise CBORError("unhashable map key") from None
                if dup:
                    raise CBORError("duplicate map key")
            m[k], i = _small(data, i, end, depth, max_depth)
        return m, i
    # major == 6: a tag
    v, i = _item(data, i, end, depth, max_depth)
    if n == 2 or n == 3:
        if type(v) is not bytes:
            raise CBORError("bignum tag must wrap a byte string")
        v = int.from_bytes(v, "big")
        return (v if n == 2 else -1 - v), i
    return Tag(n, v), i


def _small(data, i, end, depth, max_depth):
    """_item with the common small items decoded in place: uints below 24, false/true/null,
    byte strings shorter than 24 bytes."""
    if i < end:
        ib = data[i]
        if ib < 0x18:
            return ib, i + 1
        if 0x40 <= ib < 0x58:
            j = i + 1 + ib - 0x40
            if j <= end:
                return data[i + 1:j], j
        elif ib == 0xF4:
            return False, i + 1
        elif ib == 0xF5:
            return True, i + 1
        elif ib == 0xF6:
            return None, i + 1
    return _item(data, i, end, depth, max_depth)


_KEYS = {}  # encoded short text (head + UTF-8) -> the text: map keys come again and again
_ARG_BYTES = {24: 1, 25: 2, 26: 4, 27: 8}


def head(data, i, end):
    """The head of the item at data[i] without decoding its contents: (major type, argument,
    index after the head). For streaming a large array or map item by item (a revocation
    list's serials); the same strictness as loads()."""
    if i >= end:
        raise CBORError("truncated input")
    ib = data[i]
    major = ib >> 5
    ai = ib & 31
    if major == 7:
        raise CBORError("not a head with an argument")
    if ai < 24:
        return major, ai, i + 1
    size = _ARG_BYTES.get(ai)
    if size is None:
        if ai == 31:
            raise CBORError("indefinite length not allowed")
        raise CBORError("reserved additional info %d" % ai)
    if i + 1 + size > end:
        raise CBORError("truncated input")
    return major, int.from_bytes(bytes(data[i + 1:i + 1 + size]), "big"), i + 1 + size


def item(data, i, end, depth=0, max_depth=16):
    """Decodes the one item at data[i] (bytes; depth: the containers around it); returns
    (value, index after it). loads() for a part of a buffer, without copying it out."""
    try:
        return _item(data, i, end, depth, max_depth)
    except (MemoryError, RuntimeError):
        raise CBORError("input too large or too deep") from None


def loads(data, max_depth=16):
    if type(data) is not bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise CBORError("expected bytes")
        data = bytes(data)
    end = len(data)
    try:
        value, i = _item(data, 0, end, 0, max_depth)
    except (MemoryError, RuntimeError):
        # Only reachable with a caller-chosen huge max_depth or a tiny heap.
        raise CBORError("input too large or too deep") from None
    if i != end:
        raise CBORError("trailing bytes after the item")
    return value
