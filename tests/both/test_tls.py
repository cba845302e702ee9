# device/ports/tls.py on both runtimes: the one PEM reader (lenient for the link's files, strict
# for `tls install`), the DER twins MicroPython loads, and tls_context with a client
# certificate. Real TLS connections are in tests/integration/test_tls_e2e.py and test_link.py.
import binascii
import hashlib

from device.ports import runtime as rt
from device.ports.tls import (
    TlsError,
    der_twin,
    load_der,
    pem_blocks,
    pem_text,
    pem_to_der,
    tls_context,
)
from tests.both.util import raises, tmpdir

# Two throwaway self-signed P-256 certificates (valid 2020..2120) with their keys, made with
# `cryptography`; the *_SHA values are SHA-256 of the DER forms it wrote.
CERT_A = b"""-----BEGIN CERTIFICATE-----
MIIBQjCB6aADAgECAhRYQP2ohY4EYVO6nuq29eYVu/QVljAKBggqhkjOPQQDAjAW
MRQwEgYDVQQDDAt0ZXN0IHNob3AgQTAgFw0yMDAxMDEwMDAwMDBaGA8yMTIwMDEw
MTAwMDAwMFowFjEUMBIGA1UEAwwLdGVzdCBzaG9wIEEwWTATBgcqhkjOPQIBBggq
hkjOPQMBBwNCAATELAZzqxASKRcyBXz3SX/78EeMK7vl6yC+ZhJtxJDHvjPR2zVP
mpbaGlwRA6kAJZFrFgGVTJT8vN6dB6mmUeBsoxMwETAPBgNVHRMBAf8EBTADAQH/
MAoGCCqGSM49BAMCA0gAMEUCIQDsXsi154jSEB6cqaOkKDP23CDC8D7dONz9j2x8
ZXxzHQIgGiY/TDYr8ABSdrnIpIz0+1USYMAr8qBbwIYvNKf9trQ=
-----END CERTIFICATE-----
"""
KEY_A = b"""-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgkbN7H55PIio2VjLm
enW8b4yDPF+99U7ysNvZA4GgQ4ChRANCAATELAZzqxASKRcyBXz3SX/78EeMK7vl
6yC+ZhJtxJDHvjPR2zVPmpbaGlwRA6kAJZFrFgGVTJT8vN6dB6mmUeBs
-----END PRIVATE KEY-----
"""
EC_KEY_A = b"""-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIJGzex+eTyIqNlYy5np1vG+MgzxfvfVO8rDb2QOBoEOAoAoGCCqGSM49
AwEHoUQDQgAExCwGc6sQEikXMgV890l/+/BHjCu75esgvmYSbcSQx74z0ds1T5qW
2hpcEQOpACWRaxYBlUyU/LzenQepplHgbA==
-----END EC PRIVATE KEY-----
"""
CERT_B = b"""-----BEGIN CERTIFICATE-----
MIIBQTCB6aADAgECAhRPwC/baAZxNT8D6SH5a1QbJL15cTAKBggqhkjOPQQDAjAW
MRQwEgYDVQQDDAt0ZXN0IHNob3AgQjAgFw0yMDAxMDEwMDAwMDBaGA8yMTIwMDEw
MTAwMDAwMFowFjEUMBIGA1UEAwwLdGVzdCBzaG9wIEIwWTATBgcqhkjOPQIBBggq
hkjOPQMBBwNCAATPelL6bhQvmie+6SH4Q59l2Xu6iRZcEJNLVG7z7i+j/RygAubQ
0AbMAE38l6ov7cOi7DWRhc+hphwKVEz5XRgooxMwETAPBgNVHRMBAf8EBTADAQH/
MAoGCCqGSM49BAMCA0cAMEQCIBBI8I1giNMnXIUHLg+veZmkV3pkHPG8bf2KdQC3
Qad9AiA8oS7cG/67uI9zCvuK0VoUCmSI+38kh3mINI9q2Jfx9w==
-----END CERTIFICATE-----
"""
CERT_A_SHA = "8223fef05ed99a0d04d6cab7a89e8da29749267137e2851335ccca29f46aa139"
KEY_A_SHA = "244f66de347248683ba6d4af4f866fd05a3a182a504137c262be5ccc0a6c36fd"
EC_KEY_A_SHA = "044ae36a4ce060ecc426933d2d463d6e9f3c028fe8d3d682187a3f634f8064b6"
CERT_B_SHA = "c6a69dfc32684b84c2bb17806d3f92d13bef4fe6488dfa6351f6c98310146f9d"


def sha(data):
    return binascii.hexlify(hashlib.sha256(data).digest()).decode()


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return path


def config_error(fn, *args):
    return raises(TlsError, fn, *args)


# ------------------------------------------------------------------ PEM -> DER


def test_pem_to_der_gives_every_certificate_of_a_bundle():
    ders = pem_to_der(CERT_A + b"\n" + CERT_B)
    assert [sha(d) for d in ders] == [CERT_A_SHA, CERT_B_SHA]
    # CRLF files and surrounding text do not matter
    crlf = b"issuer notes\r\n" + CERT_B.replace(b"\n", b"\r\n")
    assert [sha(d) for d in pem_to_der(crlf)] == [CERT_B_SHA]


def test_pem_to_der_picks_the_blocks_of_the_kind_asked_for():
    both = KEY_A + CERT_A
    assert [sha(d) for d in pem_to_der(both)] == [CERT_A_SHA]
    assert [sha(d) for d in pem_to_der(both, b"PRIVATE KEY")] == [KEY_A_SHA]
    assert [sha(d) for d in pem_to_der(EC_KEY_A, b"PRIVATE KEY")] == [EC_KEY_A_SHA]
    e = config_error(pem_to_der, KEY_A)
    assert "CERTIFICATE" in str(e)
    config_error(pem_to_der, CERT_A, b"PRIVATE KEY")


def test_pem_to_der_passes_der_through():
    der = pem_to_der(CERT_A)[0]
    assert pem_to_der(der) == [der]
    assert pem_to_der(bytearray(der)) == [der]


def test_pem_to_der_refuses_encrypted_keys():
    encrypted = KEY_A.replace(b"PRIVATE KEY", b"ENCRYPTED PRIVATE KEY")
    assert "encrypted" in str(config_error(pem_to_der, encrypted, b"PRIVATE KEY"))
    legacy = EC_KEY_A.replace(b"KEY-----\n", b"KEY-----\nProc-Type: 4,ENCRYPTED\n", 1)
    config_error(pem_to_der, legacy, b"PRIVATE KEY")
    config_error(pem_to_der, b"-----BEGIN CERTIFICATE-----\n")  # never ends: no block


def test_strict_pem_blocks_for_tls_install():
    der = pem_to_der(CERT_A)[0]
    assert pem_blocks(CERT_A.decode()) == [("CERTIFICATE", der)]
    assert pem_blocks(CERT_A + b"\n\n" + KEY_A)[1][0] == "PRIVATE KEY"
    assert pem_text("CERTIFICATE", der) == CERT_A  # the canonical form round-trips
    assert "outside" in str(config_error(pem_blocks, "notes\n" + CERT_A.decode()))
    assert pem_blocks("notes\n" + CERT_A.decode(), False) == [("CERTIFICATE", der)]
    assert "base64" in str(config_error(pem_blocks, CERT_A.replace(b"MIIB", b"MI!B")))
    not_der = pem_text("CERTIFICATE", b"\x30\x05\x02\x01\x01")  # length byte wrong
    assert "not DER" in str(config_error(pem_blocks, not_der))
    assert "END" in str(config_error(pem_blocks, CERT_A.replace(b"-----END", b"-----END X")))
    config_error(pem_blocks, b"\xff\xfe")
    config_error(pem_blocks, "")


def test_load_der_prefers_the_der_twin():
    d = tmpdir("mqtt-der")
    assert der_twin(d + "/ca.pem") == d + "/ca.der"
    assert der_twin(d + "/ca.crt") == d + "/ca.crt.der"
    pem = write(d + "/ca.pem", CERT_A)
    assert [sha(x) for x in load_der(pem, b"CERTIFICATE")] == [CERT_A_SHA]  # no twin yet
    write(d + "/ca.der", pem_to_der(CERT_B)[0])
    assert [sha(x) for x in load_der(pem, b"CERTIFICATE")] == [CERT_B_SHA]  # the twin wins
    key = write(d + "/key.pem", KEY_A)
    assert [sha(x) for x in load_der(key, b"PRIVATE KEY")] == [KEY_A_SHA]
    wrong = write(d + "/wrong.pem", KEY_A)
    e = config_error(load_der, wrong, b"CERTIFICATE")
    assert "wrong.pem" in str(e)
    raises(OSError, load_der, d + "/missing.pem", b"CERTIFICATE")


# ------------------------------------------------------------------ tls_context


def test_tls_context_loads_ca_and_client_certificate():
    d = tmpdir("mqtt-tls")
    broker = {"tls": True, "ca": write(d + "/ca.pem", CERT_B),
              "cert": write(d + "/cert.pem", CERT_A), "key": write(d + "/key.pem", KEY_A)}
    assert tls_context(broker) is not None
    broker["key"] = write(d + "/ec.pem", EC_KEY_A)  # the SEC1 form works as well
    assert tls_context(broker) is not None
    assert tls_context({"tls": True, "ca": broker["ca"]}) is not None  # no client cert


def test_tls_context_refuses_bad_tls_files_with_a_config_error():
    d = tmpdir("mqtt-tls-bad")
    ca = write(d + "/ca.pem", CERT_A)
    cert = write(d + "/cert.pem", CERT_A)
    key = write(d + "/key.pem", KEY_A)
    e = config_error(tls_context, {"tls": True, "ca": ca, "cert": cert})
    assert "both or neither" in str(e)
    config_error(tls_context, {"tls": True, "ca": ca, "key": key})
    config_error(tls_context, {"tls": True, "ca": d + "/missing.pem"})
    config_error(tls_context, {"tls": True, "ca": ca, "cert": cert, "key": d + "/nokey.pem"})
    junk = write(d + "/junk.pem",
                 b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    config_error(tls_context, {"tls": True, "ca": ca, "cert": cert, "key": junk})
    config_error(tls_context, {"tls": True, "ca": write(d + "/text.pem", b"not a certificate")})
    if rt.MICROPYTHON:  # no system CA store to fall back on
        config_error(tls_context, {"tls": True})
