# The broker PKI (host_sim/certs.py) and the locked-down broker's files (host_sim/mosquitto.py):
# chains checked by cryptography's RFC 5280 verifier and by an OpenSSL handshake in memory,
# file modes, idempotence, and the ACL/password files for a registry with two terminals.
import datetime
import ipaddress
import json
import os
import shutil
import sqlite3
import ssl
import subprocess
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from host_sim import __main__ as cli
from host_sim.certs import CertError, CertStore, der_twin
from host_sim.mosquitto import (
    MosquittoError,
    acl_text,
    check_password_entry,
    password_entry,
    secure_config,
    write_secure_broker,
)
from host_sim.registry import HOST_USERNAME, Registry, RegistryError
from protocol import limits

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEVICES = ["T-1", "T-2"]


@pytest.fixture
def store(tmp_path):
    s = CertStore(str(tmp_path / "certs"))
    s.ensure(devices=DEVICES)
    return s


@pytest.fixture
def reg(tmp_path):
    r = Registry(str(tmp_path / "host.db"))
    for dev in DEVICES:
        r.register(dev, "S-1", "M-1")
    yield r
    r.close()


def load(path):
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def snapshot(directory):
    out = {}
    for base, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(base, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = f.read()
    return out


# ---------------------------------------------------------------- chain and names

def test_every_certificate_chains_to_the_ca(store):
    ca = load(store.ca_pem)
    ca.verify_directly_issued_by(ca)
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"
    trust = verification.Store([ca])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = verification.PolicyBuilder().store(trust).time(now)
    server = load(store.server_paths()[0])
    for name in (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))):
        chain = builder.build_server_verifier(name).verify(server, [])
        assert chain[-1] == ca
    with pytest.raises(verification.VerificationError):
        builder.build_server_verifier(x509.DNSName("broker.example")).verify(server, [])
    # Client certificates carry no SAN (the CN names the terminal), which cryptography's
    # client verifier insists on; OpenSSL checks them in the handshake test below.
    for cert_path, cn in [(store.host_paths()[0], HOST_USERNAME)] + \
            [(store.device_paths(d)[0], d) for d in DEVICES]:
        cert = load(cert_path)
        cert.verify_directly_issued_by(ca)
        assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc
        assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == [cn]
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        # a client certificate is no server certificate
        with pytest.raises(verification.VerificationError):
            builder.build_server_verifier(x509.DNSName("localhost")).verify(cert, [])


def test_server_names_are_the_requested_ones(store):
    server = load(store.server_paths()[0])
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans) == {x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                         x509.DNSName("localhost")}
    assert store.ensure_server(["127.0.0.1", "localhost", "broker.lan", "::1"]) is True
    server = load(store.server_paths()[0])
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"localhost", "broker.lan"}
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    for bad in ([], "localhost", ["bad host"], ["-x..y"], [7]):
        with pytest.raises(CertError):
            store.ensure_server(bad)


def _handshake(server_ctx, client_ctx, hostname):
    """A TLS handshake in memory: both sides' SSLObjects, or the first error raised."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=hostname)
    done = {"s": False, "c": False}
    for _ in range(20):
        for key, obj, out, peer_in in (("c", client, c_out, s_in), ("s", server, s_out, c_in)):
            if not done[key]:
                try:
                    obj.do_handshake()
                    done[key] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(out.read())
        if all(done.values()):
            # TLS 1.3: the server's verdict on the client certificate comes with its next read.
            client.write(b"ping")
            s_in.write(c_out.read())
            assert server.read(4) == b"ping"
            return server, client
    raise AssertionError("handshake did not finish")


def test_openssl_accepts_the_chain_in_a_mutual_handshake(store, tmp_path):
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(*store.server_paths())
    server_ctx.load_verify_locations(store.ca_pem)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.verify_flags |= ssl.VERIFY_X509_STRICT

    def client(cert_pair, ca=store.ca_pem):
        ctx = ssl.create_default_context(cafile=ca)
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT
        ctx.load_cert_chain(*cert_pair)
        return ctx

    for host in ("127.0.0.1", "localhost"):
        server, _ = _handshake(server_ctx, client(store.device_paths("T-1")), host)
        cn = dict(x[0] for x in server.getpeercert()["subject"])["commonName"]
        assert cn == "T-1"
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server_ctx, client(store.device_paths("T-1")), "broker.example")
    other = CertStore(str(tmp_path / "other"))
    other.ensure(devices=["T-1"])
    with pytest.raises(ssl.SSLError):  # client certificate from a foreign CA
        _handshake(server_ctx, client(other.device_paths("T-1")), "127.0.0.1")


# ---------------------------------------------------------------- files

def test_keys_are_private_and_der_twins_match(store):
    keys = [store.ca_key, store.server_paths()[1], store.host_paths()[1]]
    for dev in DEVICES:
        cert, key = store.device_paths(dev)
        keys += [key, der_twin(key)]
        with open(der_twin(cert), "rb") as f:
            assert f.read() == load(cert).public_bytes(serialization.Encoding.DER)
        with open(der_twin(key), "rb") as f:
            der_key = serialization.load_der_private_key(f.read(), None)
        assert der_key.public_key() == load(cert).public_key()
        assert os.stat(der_twin(cert)).st_mode & 0o777 == 0o644
    for key in keys:
        assert os.stat(key).st_mode & 0o777 == 0o600, key
    for d in (store.dir, os.path.join(store.dir, "devices"), os.path.dirname(keys[1])):
        assert os.stat(d).st_mode & 0o777 == 0o700, d
    with open(store.ca_der, "rb") as f:
        assert f.read() == load(store.ca_pem).public_bytes(serialization.Encoding.DER)
    assert der_twin(store.ca_pem) == store.ca_der
    assert store.device_broker("T-1") == {"tls": True, "ca": store.ca_pem,
                                          "cert": store.device_paths("T-1")[0],
                                          "key": store.device_paths("T-1")[1]}


def test_existing_valid_files_are_kept(store):
    before = snapshot(store.dir)
    again = CertStore(store.dir)
    report = again.ensure(devices=DEVICES)
    assert report == {"written": [], "kept": ["ca", "server", "host", "device:T-1",
                                              "device:T-2"]}
    assert snapshot(store.dir) == before
    # Losing one device's key reissues that device only.
    os.remove(again.device_paths("T-2")[1])
    report = again.ensure(devices=DEVICES)
    assert report["written"] == ["device:T-2"]
    after = snapshot(store.dir)
    changed = sorted(k for k in after if after[k] != before.get(k))
    assert changed == [os.path.join("devices", "T-2", n)
                       for n in ("cert.der", "cert.pem", "key.der", "key.pem")]
    # A lost DER twin is written again from the kept pair.
    os.remove(der_twin(again.device_paths("T-1")[0]))
    assert again.ensure_device("T-1") is True
    assert snapshot(store.dir) == after


def test_untrusted_or_stale_files_are_replaced(store):
    before = snapshot(store.dir)
    # A key others could read is not trusted.
    os.chmod(store.device_paths("T-1")[1], 0o644)
    assert CertStore(store.dir).ensure_device("T-1") is True
    assert os.stat(store.device_paths("T-1")[1]).st_mode & 0o777 == 0o600
    # A certificate not matching its key (a crash between the two writes) is replaced.
    shutil.copy(store.device_paths("T-1")[1], store.device_paths("T-2")[1])
    assert CertStore(store.dir).ensure_device("T-2") is True
    # A new CA (the old one damaged) reissues every leaf.
    with open(store.ca_pem, "wb") as f:
        f.write(b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
    report = CertStore(store.dir).ensure(devices=DEVICES)
    assert report["kept"] == [] and len(report["written"]) == 5
    after = snapshot(store.dir)
    assert after["ca-key.pem"] != before["ca-key.pem"]
    load(store.device_paths("T-2")[0]).verify_directly_issued_by(load(store.ca_pem))
    # Close to expiry: a clock two years on renews the leaves, not the ten-year CA.
    later = CertStore(store.dir, clock=lambda: time.time() + 715 * 86400)
    report = later.ensure(devices=DEVICES)
    assert report["kept"] == ["ca"]


def test_bad_names_are_refused(store):
    for bad in ("a/b", "", "x" * 65, "sp ace", HOST_USERNAME, ".", "..", 7, None):
        with pytest.raises(CertError):
            store.device_paths(bad)
    with pytest.raises(CertError):
        store.ensure(devices=["ok", "no#pe"])


# ---------------------------------------------------------------- broker files

def test_acl_and_password_file_for_two_devices(reg, store, tmp_path):
    out = write_secure_broker(str(tmp_path / "broker"), reg, store, 18883)
    with open(out["acl"]) as f:
        lines = [ln for ln in f.read().splitlines() if ln and not ln.startswith("#")]
    assert lines == ["pattern write pos/v1/dev/%u/up/#",
                     "pattern write pos/v1/dev/%u/state",
                     "pattern read pos/v1/dev/%u/down/#",
                     "pattern read pos/v1/fleet/down/#",
                     "user " + HOST_USERNAME,
                     "topic readwrite #"]
    with open(out["passwd"]) as f:
        entries = f.read().splitlines()
    assert [e.split(":", 1)[0] for e in entries] == DEVICES + [HOST_USERNAME]
    passwords = dict(reg.broker_accounts())
    for entry in entries:
        user = entry.split(":", 1)[0]
        assert entry.split(":", 1)[1].startswith("$7$101$")
        assert passwords[user] not in entry  # only the hash is written
        assert check_password_entry(entry, passwords[user])
        assert not check_password_entry(entry, passwords[user][:-1] + "x")
    assert os.stat(out["passwd"]).st_mode & 0o777 == 0o600
    assert out["accounts"] == DEVICES + [HOST_USERNAME]
    with open(out["conf"]) as f:
        conf = f.read().splitlines()
    for line in ("allow_anonymous false", "max_queued_messages 0", "set_tcp_nodelay true",
                 "require_certificate true",
                 "use_identity_as_username false", "use_username_as_clientid true",
                 "listener 18883 127.0.0.1", "cafile " + store.ca_pem,
                 "certfile " + store.server_paths()[0], "keyfile " + store.server_paths()[1],
                 "password_file " + out["passwd"], "acl_file " + out["acl"],
                 "message_size_limit %d" % limits.BROKER_MESSAGE_LIMIT,
                 "max_packet_size %d" % limits.BROKER_PACKET_LIMIT):
        assert line in conf, line
    assert [ln for ln in conf if ln.startswith("listener")] == ["listener 18883 127.0.0.1"]
    # Another root is pasted in verbatim; one that could escape an ACL line is refused.
    assert "pattern read shop/7/dev/%u/down/#" in acl_text("shop/7")
    for root in ("pos/%u", "pos v1", "pos/+/x", "", "pos//v1"):
        with pytest.raises(MosquittoError):
            acl_text(root)


def test_password_entry_is_what_mosquitto_passwd_writes(tmp_path):
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not os.path.exists(tool):
        pytest.skip("mosquitto_passwd not installed")
    path = tmp_path / "pw"
    path.write_text("")
    subprocess.run([tool, "-b", str(path), "T-9", "correct horse"], check=True,
                   capture_output=True, timeout=10)
    theirs = path.read_text().strip()
    salt = theirs.split("$")[3]
    import base64
    assert password_entry("T-9", "correct horse", salt=base64.b64decode(salt)) == theirs
    assert check_password_entry(theirs, "correct horse")
    for user in ("a:b", "", "sp ace", "new\nline"):
        with pytest.raises(MosquittoError):
            password_entry(user, "pw")


def test_a_device_id_that_cannot_be_a_username_is_refused(tmp_path, store):
    reg = Registry(str(tmp_path / "colon.db"))
    try:
        reg.register("T:1", "S-1", "M-1")  # a legal topic level, but ":" splits passwd lines
        with pytest.raises(MosquittoError):
            write_secure_broker(str(tmp_path / "b"), reg, store, 18883)
    finally:
        reg.close()
    with pytest.raises(MosquittoError):
        secure_config(18883, "relative/ca.pem", "/c", "/k", "/p", "/a")


# ---------------------------------------------------------------- registry credentials

def test_registry_broker_credentials(reg, store, tmp_path):
    p1 = reg.broker_password("T-1")
    assert len(p1) == 64 and int(p1, 16) >= 0 and p1 != reg.broker_password("T-2")
    assert reg.broker_password("T-1") == p1  # stable
    reg.register("T-1", "S-1", "M-1")
    assert reg.broker_password("T-1") != p1  # re-provisioning rotates it
    host = reg.host_broker_password()
    other = Registry(reg.path)
    try:
        assert other.host_broker_password() == host
    finally:
        other.close()
    assert "broker_password" not in reg.device("T-1")  # reports print device rows
    with pytest.raises(RegistryError):
        reg.register(HOST_USERNAME, "S-1", "M-1")
    with pytest.raises(RegistryError):
        reg.broker_password("nope")
    cfg = reg.device_config("T-2", dict(store.device_broker("T-2"), port=8883), "var/T-2",
                            ["ab" * 32], "CNY")
    b = cfg["broker"]
    assert (b["tls"], b["username"], b["password"]) == (True, "T-2", reg.broker_password("T-2"))
    assert (b["ca"], b["cert"], b["key"]) == (store.ca_pem,) + store.device_paths("T-2")
    plain = reg.device_config("T-2", {"port": 1883}, "var/T-2", ["ab" * 32], "CNY")["broker"]
    assert plain["username"] is None and plain["password"] is None  # never sent in clear
    for broker in ({"tls": True}, {"tls": True, "ca": store.ca_pem, "username": "T-1"},
                   {"tls": True, "ca": store.ca_pem, "password": "guess"},
                   {"tls": True, "ca": 7}):
        with pytest.raises(RegistryError):
            reg.device_config("T-2", broker, "var/T-2", ["ab" * 32], "CNY")


def test_an_older_database_gains_broker_passwords(tmp_path):
    path = str(tmp_path / "old.db")
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE devices (device_id TEXT PRIMARY KEY, secret BLOB NOT NULL,"
        " store_id TEXT NOT NULL, merchant_id TEXT NOT NULL, created_at INTEGER NOT NULL,"
        " last_seq INTEGER, host_seq INTEGER NOT NULL DEFAULT 0, online INTEGER NOT NULL"
        " DEFAULT 0, last_hello TEXT, last_status TEXT, last_seen INTEGER);"
        "INSERT INTO devices (device_id, secret, store_id, merchant_id, created_at)"
        " VALUES ('T-OLD', x'%s', 'S-1', 'M-1', 1);" % ("00" * 32))
    conn.close()
    reg = Registry(path)
    try:
        pw = reg.broker_password("T-OLD")
        assert len(pw) == 64 and reg.broker_password("T-OLD") == pw
        assert reg.broker_accounts()[0] == ("T-OLD", pw)
    finally:
        reg.close()


# ---------------------------------------------------------------- command line

def test_cli_certs_and_broker_config(tmp_path, capsys):
    certs = str(tmp_path / "c")
    assert cli.main(["certs", "--dir", certs, "--device", "T-1"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["written"] == ["ca", "server", "host", "device:T-1"]
    db = str(tmp_path / "host.db")
    reg = Registry(db)
    reg.register("T-1", "S-1", "M-1")
    reg.register("T-2", "S-1", "M-1")
    reg.close()
    out = str(tmp_path / "broker")
    assert cli.main(["broker-config", "--db", db, "--certs", certs, "--port", "18999",
                     "--out", out]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["certs_written"] == ["device:T-2"]  # T-1's was kept
    assert res["accounts"] == ["T-1", "T-2", HOST_USERNAME]
    for name in ("mosquitto.conf", "passwd", "acl"):
        assert os.path.exists(os.path.join(out, name))
    assert cli.main(["broker-config", "--db", str(tmp_path / "none.db"), "--certs", certs,
                     "--port", "18999", "--out", out]) == 1
    assert cli.main(["certs", "--dir", certs, "--device", "a/b"]) == 1
    # scripts/make-certs (make certs) runs the same command through .venv/bin/python.
    run = subprocess.run([os.path.join(REPO, "scripts", "make-certs"), "--dir", certs],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["written"] == []
