# Base45 (RFC 9285): the RFC's examples, the boundaries and every rejection.
from protocol.base45 import decode, encode
from tests.both.util import raises

RFC_EXAMPLES = [
    (b"AB", "BB8"),
    (b"Hello!!", "%69 VD92EX0"),
    (b"base-45", "UJCLQE7W581"),
    (b"ietf!", "QED8WEX0"),
]


def test_rfc9285_examples():
    for raw, text in RFC_EXAMPLES:
        assert encode(raw) == text
        assert decode(text) == raw


def test_empty():
    assert encode(b"") == ""
    assert decode("") == b""


def test_every_byte_value_round_trips():
    data = bytes(range(256))
    assert decode(encode(data)) == data
    assert decode(encode(data[:255])) == data[:255]
    assert encode(bytearray(b"AB")) == "BB8"


def test_output_uses_only_the_alphabet():
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
    for ch in encode(bytes(range(256))):
        assert ch in alphabet


def test_triple_boundary():
    assert decode("FGW") == b"\xff\xff"  # 15 + 16*45 + 32*2025 = 65535
    assert encode(b"\xff\xff") == "FGW"
    e = raises(ValueError, decode, "GGW")  # 65536
    assert "65535" in str(e)
    raises(ValueError, decode, ":::")


def test_pair_boundary():
    assert decode("U5") == b"\xff"  # 30 + 5*45 = 255
    assert encode(b"\xff") == "U5"
    e = raises(ValueError, decode, "V5")  # 256
    assert "255" in str(e)
    raises(ValueError, decode, "BB8::")


def test_length_mod_3_equal_1_rejected():
    for text in ("A", "BB8A", "QED8WEX0ABCDE"):
        e = raises(ValueError, decode, text)
        assert "length" in str(e)


def test_characters_outside_alphabet_rejected():
    for text in ("bb8", "BB8\r\n", "BB8==", "B_8", "\u00c9B8", "BB\u00e9", "BB8\x00\x00\x00",
                 "B\t", "QED8WEX0\ud800"):
        e = raises(ValueError, decode, text)
        assert "alphabet" in str(e), text


def test_wrong_types_raise_value_error():
    raises(ValueError, decode, b"BB8")
    raises(ValueError, encode, "AB")
