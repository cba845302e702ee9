# CBOR: RFC 8949 Appendix A vectors and every rejection rule of protocol/cbor.py.
from binascii import unhexlify

from protocol.cbor import CBORError, Tag, dumps, loads
from tests.both.util import raises

try:
    from collections import OrderedDict
except ImportError:  # pragma: no cover - both runtimes have it
    OrderedDict = None

INF = float("inf")


def h(s):
    return unhexlify(s.replace(" ", ""))


def od(pairs):
    # MicroPython's plain dict does not keep insertion order; OrderedDict does on both.
    d = OrderedDict()
    for k, v in pairs:
        d[k] = v
    return d


# (value, encoding): our encoder writes exactly these bytes and the decoder reads them back.
ROUND_TRIP = [
    (0, "00"), (1, "01"), (10, "0a"), (23, "17"), (24, "1818"), (25, "1819"), (100, "1864"),
    (1000, "1903e8"), (1000000, "1a000f4240"), (1000000000000, "1b000000e8d4a51000"),
    (18446744073709551615, "1bffffffffffffffff"),
    (18446744073709551616, "c249010000000000000000"),
    (-18446744073709551616, "3bffffffffffffffff"),
    (-18446744073709551617, "c349010000000000000000"),
    (-1, "20"), (-10, "29"), (-100, "3863"), (-1000, "3903e7"),
    (1.1, "fb3ff199999999999a"), (1.0e300, "fb7e37e43c8800759c"), (-4.1, "fbc010666666666666"),
    (INF, "f97c00"), (-INF, "f9fc00"),
    (False, "f4"), (True, "f5"), (None, "f6"),
    (Tag(0, "2013-03-21T20:04:00Z"), "c074323031332d30332d32315432303a30343a30305a"),
    (Tag(1, 1363896240), "c11a514b67b0"),
    (Tag(1, 1363896240.5), "c1fb41d452d9ec200000"),
    (Tag(23, b"\x01\x02\x03\x04"), "d74401020304"),
    (Tag(24, b"dIETF"), "d818456449455446"),
    (Tag(32, "http://www.example.com"), "d82076687474703a2f2f7777772e6578616d706c652e636f6d"),
    (b"", "40"), (b"\x01\x02\x03\x04", "4401020304"),
    ("", "60"), ("a", "6161"), ("IETF", "6449455446"), ("\"\\", "62225c"),
    ("\u00fc", "62c3bc"), ("\u6c34", "63e6b0b4"), ("\U00010151", "64f0908591"),
    ([], "80"), ([1, 2, 3], "83010203"), ([1, [2, 3], [4, 5]], "8301820203820405"),
    (list(range(1, 26)), "98190102030405060708090a0b0c0d0e0f101112131415161718181819"),
    ({}, "a0"),
    (["a", {"b": "c"}], "826161a161626163"),
]

# Multi-key maps: built in order (OrderedDict) so the bytes are the same on both runtimes.
ORDERED_MAPS = [
    ([(1, 2), (3, 4)], "a201020304"),
    ([("a", 1), ("b", [2, 3])], "a26161016162820203"),
    ([("a", "A"), ("b", "B"), ("c", "C"), ("d", "D"), ("e", "E")],
     "a56161614161626142616361436164614461656145"),
]

# Appendix A floats in half/single/double form: decoded exactly (we always encode doubles).
FLOAT_DECODE = [
    ("f90000", 0.0), ("f93c00", 1.0), ("f93e00", 1.5), ("f97bff", 65504.0),
    ("fa47c35000", 100000.0), ("fa7f7fffff", 3.4028234663852886e+38),
    ("f90001", 5.960464477539063e-8), ("f90400", 0.00006103515625), ("f9c400", -4.0),
    ("fa7f800000", INF), ("faff800000", -INF), ("fb7ff0000000000000", INF),
    ("fbfff0000000000000", -INF),
]


def test_appendix_a_round_trip():
    for value, enc in ROUND_TRIP:
        assert dumps(value) == h(enc), (value, dumps(value), enc)
        back = loads(h(enc))
        assert back == value and type(back) is type(value), (enc, back)


def test_appendix_a_ordered_maps():
    for pairs, enc in ORDERED_MAPS:
        assert dumps(od(pairs)) == h(enc)
        assert loads(h(enc)) == dict(pairs)


def test_appendix_a_floats_decode():
    for enc, value in FLOAT_DECODE:
        got = loads(h(enc))
        assert type(got) is float and got == value, (enc, got)


def test_negative_zero_both_ways():
    assert dumps(-0.0) == h("fb8000000000000000")
    assert dumps(0.0) == h("fb0000000000000000")
    z = loads(h("f98000"))
    assert z == 0.0 and str(z) == "-0.0"


def test_nan_encodes_and_decodes():
    nan = float("nan")
    assert dumps(nan) == h("f97e00")
    for enc in ("f97e00", "fa7fc00000", "fb7ff8000000000000"):
        v = loads(h(enc))
        assert v != v


def test_tuple_and_bytearray_encode_like_list_and_bytes():
    assert dumps((1, 2)) == h("820102")
    assert dumps(bytearray(b"ab")) == h("426162")


def test_bignums_beyond_64_bits():
    for n in (2 ** 64, 2 ** 200 + 12345, -(2 ** 64) - 1, -(2 ** 130)):
        assert loads(dumps(n)) == n
    assert dumps(2 ** 72) == h("c2 4a 01 00 00 00 00 00 00 00 00 00")
    # Non-minimal bignum bytes (leading zeros, empty) still decode.
    assert loads(h("c2 43 000001")) == 1
    assert loads(h("c2 40")) == 0
    assert loads(h("c3 40")) == -1


def test_non_minimal_heads_decode():
    assert loads(h("1b0000000000000001")) == 1
    assert loads(h("1800")) == 0
    assert loads(h("5800")) == b""


def test_tag_value_object():
    t = Tag(17, [b"a", {}])
    assert t == Tag(17, [b"a", {}])
    assert t != Tag(18, [b"a", {}])
    assert t != Tag(17, [b"b", {}])
    assert t != [b"a", {}]
    assert repr(Tag(5, 1)) == "Tag(5, 1)"
    assert hash(Tag(1, "x")) == hash(Tag(1, "x"))


def test_tag_number_must_be_uint64():
    raises(CBORError, dumps, Tag(-1, 0))
    raises(CBORError, dumps, Tag(2 ** 64, 0))
    assert dumps(Tag(2 ** 64 - 1, 0)) == h("db ffffffffffffffff 00")


def test_unsupported_types_raise_cbor_error():
    raises(CBORError, dumps, {1, 2})
    raises(CBORError, dumps, object())
    raises(CBORError, dumps, [1, object()])


def test_cyclic_value_raises_cbor_error():
    a = []
    a.append(a)
    raises(CBORError, dumps, a)


def test_accepts_bytearray_and_memoryview_input():
    assert loads(bytearray(b"\x83\x01\x02\x03")) == [1, 2, 3]
    assert loads(memoryview(b"\x43abc")) == b"abc"
    raises(CBORError, loads, "83010203")
    raises(CBORError, loads, None)


# ---------------------------------------------------------------- rejections

def nested_arrays(n):
    return b"\x81" * (n - 1) + b"\x80"


def test_depth_16_ok_17_rejected():
    # Depth counts arrays, maps and tags; the top-level container is level 1.
    assert loads(nested_arrays(16)) is not None
    e = raises(CBORError, loads, nested_arrays(17))
    assert "deeper" in str(e)


def test_depth_counts_maps_and_tags_too():
    # 15 arrays + 1 map = 16 levels; + a tag = 17.
    assert loads(b"\x81" * 15 + b"\xa1\x01\x02") is not None
    raises(CBORError, loads, b"\x81" * 15 + b"\xa1\x01\xc1\x02")
    assert loads(b"\xc1" * 15 + b"\x81\x00") is not None
    raises(CBORError, loads, b"\xc1" * 16 + b"\x81\x00")
    # A bignum tag is a level like any tag.
    assert loads(b"\x81" * 15 + b"\xc2\x41\x01") == _nest(15, 1)
    raises(CBORError, loads, b"\x81" * 16 + b"\xc2\x41\x01")


def _nest(n, leaf):
    for _ in range(n):
        leaf = [leaf]
    return leaf


def test_scalars_do_not_count_as_depth():
    assert loads(nested_arrays(16)[:-1] + b"\x01") == _nest(15, 1)
    assert loads(b"\x01") == 1


def test_max_depth_parameter():
    assert loads(nested_arrays(3), max_depth=3) == [[[]]]
    raises(CBORError, loads, nested_arrays(4), max_depth=3)
    raises(CBORError, loads, b"\x80", max_depth=0)
    assert loads(b"\x01", max_depth=0) == 1


def test_deep_hostile_input_is_cbor_error():
    raises(CBORError, loads, b"\x81" * 20000 + b"\x80")
    raises(CBORError, loads, b"\x81" * 5000 + b"\x80", max_depth=100000)


def test_trailing_bytes_rejected():
    assert loads(b"\x01") == 1
    raises(CBORError, loads, b"\x01\x02")
    raises(CBORError, loads, b"\x80\x00")


def test_empty_and_truncated_input():
    for enc in ("", "18", "19 01", "1a 000000", "1b 00000000000000", "f9 00", "fa 000000",
                "fb 00000000000000", "82 01", "a1 01", "c1", "38"):
        raises(CBORError, loads, h(enc))


def test_byte_string_length_boundary():
    assert loads(h("43 616263")) == b"abc"
    e = raises(CBORError, loads, h("44 616263"))
    assert "longer than input" in str(e)
    # A declared 2**64-1 length fails fast instead of allocating.
    raises(CBORError, loads, h("5b ffffffffffffffff 00"))


def test_text_string_length_boundary():
    assert loads(h("63 616263")) == "abc"
    raises(CBORError, loads, h("64 616263"))
    raises(CBORError, loads, h("7a ffffffff 61"))


def test_array_count_needs_one_byte_per_item():
    assert loads(h("83 010203")) == [1, 2, 3]
    e = raises(CBORError, loads, h("84 010203"))
    assert "array" in str(e)
    raises(CBORError, loads, h("9b ffffffffffffffff 00"))
    raises(CBORError, loads, h("9a 10000000") + b"\x00" * 100)


def test_map_count_needs_two_bytes_per_entry():
    assert loads(h("a2 0102 0304")) == {1: 2, 3: 4}
    e = raises(CBORError, loads, h("a3 0102 0304"))
    assert "map" in str(e)
    # 3 bytes left for 2 entries: the count check rejects before decoding anything.
    raises(CBORError, loads, h("a2 01 02 03"))
    raises(CBORError, loads, h("bb ffffffffffffffff 0000"))


def test_indefinite_lengths_rejected():
    for enc in ("5f 42 0102 ff", "7f 6161 ff", "9f 01 ff", "bf 6161 01 ff", "5f ff", "9f ff"):
        e = raises(CBORError, loads, h(enc))
        assert "indefinite" in str(e), enc


def test_invalid_utf8_rejected():
    for bad in ("61 ff", "61 80", "62 c328", "62 c080", "63 eda080", "64 f4908080",
                "63 e08080", "64 f0808080", "62 c1bf", "61 f5", "62 e282", "63 f09f98"):
        e = raises(CBORError, loads, h(bad))
        assert "UTF-8" in str(e), bad
    # The extremes that are valid.
    assert loads(h("64 f48fbfbf")) == "\U0010ffff"
    assert loads(h("63 ed9fbf")) == "\ud7ff"
    assert loads(h("63 ee8080")) == "\ue000"
    assert loads(h("62 c280")) == "\x80"


def test_unhashable_map_keys_rejected():
    for enc in ("a1 80 01", "a1 a0 01", "a1 c1 80 01"):
        e = raises(CBORError, loads, h(enc))
        assert "unhashable" in str(e), enc
    assert loads(h("a1 c1 01 02")) == {Tag(1, 1): 2}


def test_duplicate_map_keys_rejected():
    e = raises(CBORError, loads, h("a2 01 02 01 03"))
    assert "duplicate" in str(e)
    raises(CBORError, loads, h("a2 6161 01 6161 02"))
    # 1 and true are the same Python key.
    raises(CBORError, loads, h("a2 01 02 f5 03"))


def test_reserved_additional_info_rejected():
    for major in range(8):
        for ai in (28, 29, 30):
            e = raises(CBORError, loads, bytes([(major << 5) | ai]) + b"\x00" * 9)
            assert "reserved" in str(e)


def test_break_code_rejected():
    e = raises(CBORError, loads, h("ff"))
    assert "break" in str(e)
    raises(CBORError, loads, h("82 01 ff"))


def test_simple_values_other_than_false_true_null_rejected():
    for enc in ("f7", "f0", "e0", "f3", "f8 ff", "f8 20", "f8 18"):
        e = raises(CBORError, loads, h(enc))
        assert "simple" in str(e), enc


def test_bignum_tag_must_wrap_bytes():
    for enc in ("c2 01", "c3 80", "c2 61 61", "c3 c2 41 01"):
        e = raises(CBORError, loads, h(enc))
        assert "bignum" in str(e), enc


def test_cbor_error_is_value_error():
    assert issubclass(CBORError, ValueError)


def test_all_short_inputs_raise_only_cbor_error():
    # Every 1- and 2-byte input either decodes or raises CBORError.
    for a in range(256):
        for tail in (b"", b"\x00", b"\x18", b"\xff", b"\x80"):
            try:
                loads(bytes([a]) + tail)
            except CBORError:
                pass
