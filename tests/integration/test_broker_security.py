# The locked-down broker (issue 5, SPEC 3) against a real mosquitto started with the config
# host_sim writes: TLS only, a client certificate from our CA plus the account's password, and
# ACLs that keep every terminal to its own topics. Peers are paho clients that verify the broker
# (CA + hostname), plus raw sockets for the refusals, plus MicroPython's ssl for the DER files.
#
# "Never arrives" is proved without sleeping: after the forbidden message the same sender sends
# an allowed one on the same connection; mosquitto handles a connection's packets in order and
# delivers to a subscriber in order, so once the allowed one is in, the forbidden one would be too.
import os
import socket
import ssl
import subprocess
import threading
import time
from types import SimpleNamespace

import paho.mqtt.client as paho
import pytest

from host_sim.certs import CertStore, der_twin
from host_sim.mosquitto import Mosquitto, secure_config, write_secure_broker
from host_sim.procs import free_port
from host_sim.registry import HOST_USERNAME, Registry
from protocol import limits, mqtt

ROOT = "pos/v1"
A, B, C, D = "T-A", "T-B", "T-C", "T-D"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WAIT = 5.0


def up(dev, kind="charge"):
    return "%s/dev/%s/up/%s" % (ROOT, dev, kind)


def down(dev, kind="charge_result"):
    return "%s/dev/%s/down/%s" % (ROOT, dev, kind)


def state(dev):
    return "%s/dev/%s/state" % (ROOT, dev)


FLEET_TRUST = ROOT + "/fleet/down/trustlist"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("secure-broker")
    reg = Registry(str(base / "host.db"))
    for dev in (A, B, C, D):
        reg.register(dev, "S-1", "M-1")
    store = CertStore(str(base / "certs"))
    store.ensure(devices=[A, B, C, D])
    # Another CA issuing a certificate with the same CN as A: only the issuer differs.
    foreign = CertStore(str(base / "foreign"))
    foreign.ensure(devices=[A])
    port = free_port()
    out = write_secure_broker(str(base / "broker"), reg, store, port, root=ROOT,
                              log_path=str(base / "broker" / "mosquitto.log"))
    broker = Mosquitto(out["conf"], port)
    broker.start()
    e = SimpleNamespace(base=base, reg=reg, store=store, foreign=foreign, port=port, out=out,
                        broker=broker, peers=[])
    try:
        yield e
    finally:
        for p in e.peers:
            p.close()
        broker.stop()
        reg.close()


@pytest.fixture(autouse=True)
def _close_peers(env):
    # Host peers share one client id (use_username_as_clientid): a peer left running by a failed
    # test would keep kicking the next test's host off, so every test's peers end with it.
    yield
    while env.peers:
        env.peers.pop().close()


class Peer:
    """A paho client over TLS (CA-verified, hostname checked) recording every topic it gets."""

    def __init__(self, env, username, client_id=None, clean_session=True, password=None):
        self.env = env
        if username == HOST_USERNAME:
            cert, key = env.store.host_paths()
            password = password or env.reg.host_broker_password()
        else:
            cert, key = env.store.device_paths(username)
            password = password or env.reg.broker_password(username)
        self.cond = threading.Condition()
        self.seen = []  # (topic, payload)
        self.subacks = {}
        self.rc = None
        self.disconnected = threading.Event()
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id or username,
                        clean_session=clean_session, protocol=paho.MQTTv311)
        c.tls_set(ca_certs=env.store.ca_pem, certfile=cert, keyfile=key)
        c.username_pw_set(username, password)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        self.client = c
        env.peers.append(self)
        c.connect("127.0.0.1", env.port, 30)
        c.loop_start()
        self._wait(lambda: self.rc is not None, "CONNACK")
        assert self.rc == 0, "%s refused: %s" % (username, self.rc)

    def _on_connect(self, client, userdata, flags, reason, properties):
        with self.cond:
            self.rc = reason.value
            self.cond.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason, properties):
        self.disconnected.set()

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.seen.append((msg.topic, msg.payload))
            self.cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, reasons, properties):
        with self.cond:
            self.subacks[mid] = [r.value for r in reasons]
            self.cond.notify_all()

    def _wait(self, pred, what):
        deadline = time.monotonic() + WAIT
        with self.cond:
            while not pred():
                left = deadline - time.monotonic()
                assert left > 0, "no %s within %.0f s" % (what, WAIT)
                self.cond.wait(left)

    def subscribe(self, *filters):
        """Returns the SUBACK codes (1 = granted QoS 1, 0x80 = refused)."""
        rc, mid = self.client.subscribe([(f, 1) for f in filters])
        assert rc == paho.MQTT_ERR_SUCCESS
        self._wait(lambda: mid in self.subacks, "SUBACK")
        return self.subacks[mid]

    def publish(self, topic, payload=b"x", retain=False):
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(WAIT)
        assert info.is_published(), "no PUBACK for %s" % topic

    def expect(self, topic, payload=None):
        self._wait(lambda: any(t == topic and payload in (None, p) for t, p in self.seen),
                   "message on %s" % topic)

    def topics(self):
        with self.cond:
            return [t for t, _ in self.seen]

    def close(self):
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None


def fresh(tag):
    # A payload unique to one test, so retained or earlier messages cannot satisfy a wait.
    return ("%s-%d" % (tag, time.monotonic_ns())).encode()


# ---------------------------------------------------------------- what a terminal may do

def test_device_writes_its_own_up_and_state(env):
    host = Peer(env, HOST_USERNAME, client_id="spy-1")
    assert host.subscribe("#") == [1]
    a = Peer(env, A)
    body, presence = fresh("charge"), fresh("state")
    a.publish(up(A), body)
    a.publish(state(A), presence, retain=True)
    host.expect(up(A), body)
    host.expect(state(A), presence)
    host.close()
    a.close()


def test_device_reads_its_own_down_and_the_fleet_lists(env):
    a = Peer(env, A)
    assert a.subscribe(ROOT + "/dev/%s/down/#" % A, ROOT + "/fleet/down/#") == [1, 1]
    host = Peer(env, HOST_USERNAME)
    result, trust = fresh("result"), fresh("trust")
    host.publish(down(A), result)
    host.publish(FLEET_TRUST, trust, retain=True)
    a.expect(down(A), result)
    a.expect(FLEET_TRUST, trust)
    host.close()
    a.close()


def test_sizes_a_list_at_the_maximum_passes_terminal_uploads_are_capped(env):
    # mosquitto 2.0 applies message_size_limit and max_packet_size to every client (neither
    # can be set per listener or account), so the cap on uploads is the one just above the
    # lists; a terminal's real uploads are under 2 KiB.
    a = Peer(env, A)
    assert a.subscribe(ROOT + "/fleet/down/#") == [1]
    host = Peer(env, HOST_USERNAME, client_id="spy-sizes")
    assert host.subscribe(ROOT + "/dev/%s/up/#" % A) == [1]
    listed = os.urandom(limits.LIST_MAX_BYTES)
    host.publish(FLEET_TRUST, listed, retain=True)
    a.expect(FLEET_TRUST, listed)
    a.publish(up(A), b"small")
    host.expect(up(A), b"small")
    # An upload over message_size_limit is dropped, and (measured on 2.0.11 with
    # max_queued_messages 0) its sender disconnected after the PUBACK.
    a.client.publish(up(A), os.urandom(limits.BROKER_MESSAGE_LIMIT + 1), qos=1)
    assert a.disconnected.wait(WAIT), "still connected after an over-limit upload"
    a.close()
    # A packet over max_packet_size: disconnected from its header, before the body is read.
    b = Peer(env, A)
    b.client.publish(up(A), os.urandom(limits.BROKER_PACKET_LIMIT), qos=1)
    assert b.disconnected.wait(WAIT), "still connected after an oversize packet"
    b.close()
    c = Peer(env, A)
    after = fresh("after")
    c.publish(up(A), after)
    host.expect(up(A), after)
    assert [len(p) for t, p in host.seen if t == up(A)] == [5, len(after)]  # nothing else came
    c.close()
    host.close()
    with open(os.path.join(os.path.dirname(env.out["conf"]), "mosquitto.log")) as f:
        assert "Client %s disconnected due to oversize packet" % A in f.read()


# ---------------------------------------------------------------- what it may not

def test_device_cannot_write_anything_else(env):
    host = Peer(env, HOST_USERNAME)
    assert host.subscribe("#") == [1]
    forbidden = [up(B), state(B), down(A), down(B), FLEET_TRUST, ROOT + "/dev/%s/other" % A,
                 "elsewhere/x"]
    ctx = _ctx(*env.store.device_paths(A), env.store.ca_pem)
    for topic in forbidden:
        sock = _session(env, ctx, A, env.reg.broker_password(A))
        try:
            sock.sendall(mqtt.publish(topic, b"forged", qos=1, pid=7))
            # mosquitto 2.0 acks a denied QoS 1 publish and then closes the connection, which
            # MQTT 3.1.1 allows [MQTT-3.3.5-2]: a terminal publishing out of bounds is cut off.
            assert _recv_all(sock) == mqtt.puback(7), topic
        finally:
            sock.close()
    a = Peer(env, A)
    marker = fresh("after")
    a.publish(up(A, "hello"), marker)
    host.expect(up(A, "hello"), marker)
    assert [t for t, p in host.seen if p == b"forged"] == []


def test_device_cannot_read_another_terminal(env):
    b = Peer(env, B)
    assert b.subscribe(ROOT + "/dev/%s/down/#" % B) == [1]
    b.publish(state(B), b"b-online", retain=True)
    a = Peer(env, A)
    # However A asks: B's own filter, wildcards over every device, everything.
    codes = a.subscribe(ROOT + "/dev/%s/down/#" % B, ROOT + "/dev/+/down/#", "#", state(B),
                        ROOT + "/dev/+/up/#")
    assert all(code in (1, 0x80) for code in codes)
    print("SUBACK codes for A's foreign filters:", codes)
    host = Peer(env, HOST_USERNAME)
    trust = fresh("trust")
    host.publish(FLEET_TRUST, trust, retain=True)
    assert a.subscribe(ROOT + "/fleet/down/#") == [1]
    a.expect(FLEET_TRUST, trust)  # B's retained state would have come before this
    secret, mine = fresh("for-b"), fresh("for-a")
    host.publish(down(B), secret)
    host.publish(down(B, "redeemed"), secret)
    host.publish(down(A), mine)
    b.expect(down(B), secret)  # the control: B does get its own
    b.expect(down(B, "redeemed"), secret)
    a.expect(down(A), mine)
    assert [t for t in a.topics() if "/%s/" % B in t or t.endswith("/" + B + "/state")] == []
    b.publish(up(B), fresh("b-up"))  # B's uplink is not readable by A either
    marker = fresh("host-again")
    host.publish(down(A), marker)
    a.expect(down(A), marker)
    assert [t for t in a.topics() if B in t] == []
    for p in (a, b, host):
        p.close()


def test_client_id_of_another_terminal_cannot_take_its_session(env):
    b = Peer(env, B, clean_session=False)
    assert b.subscribe(ROOT + "/dev/%s/down/#" % B) == [1]
    # C logs in with its own credentials but claims B's client id (and B's persistent
    # session); use_username_as_clientid makes its client id "T-C" instead.
    c = Peer(env, C, client_id=B, clean_session=False)
    c.subscribe("#")
    host = Peer(env, HOST_USERNAME)
    msg = fresh("still-b")
    host.publish(down(B), msg)
    b.expect(down(B), msg)
    assert not b.disconnected.is_set()
    marker = fresh("c-own")
    host.publish(down(C), marker)
    c.expect(down(C), marker)
    assert [t for t in c.topics() if B in t] == []
    for p in (b, c, host):
        p.close()


# ---------------------------------------------------------------- who gets in at all

def _ctx(cert=None, key=None, ca=None, tls12=False):
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    if tls12:
        # TLS 1.2 settles the client certificate inside the handshake; in 1.3 the server's
        # refusal arrives as an alert after the client's side of the handshake is done.
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _try(env, ctx, username=None, password=None, server_hostname="127.0.0.1"):
    """("handshake", error) | ("connack", rc) | ("closed", error-or-None)."""
    sock = socket.create_connection(("127.0.0.1", env.port), timeout=WAIT)
    try:
        try:
            sock = ctx.wrap_socket(sock, server_hostname=server_hostname)
        except (ssl.SSLError, OSError) as e:
            return ("handshake", e)
        try:
            sock.sendall(mqtt.connect("probe", 30, True, None, username, password))
            data = sock.recv(4)
        except (ssl.SSLError, OSError) as e:
            return ("closed", e)
        if not data:
            return ("closed", None)
        assert data[:2] == b"\x20\x02", data
        return ("connack", data[3])
    finally:
        sock.close()


def _session(env, ctx, username, password):
    """A raw TLS socket past CONNACK 0."""
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", env.port), timeout=WAIT),
                           server_hostname="127.0.0.1")
    sock.sendall(mqtt.connect(username + "-raw", 30, True, None, username, password))
    assert sock.recv(4) == mqtt.connack(False, 0)
    return sock


def _recv_all(sock):
    """Everything the broker sends until it closes the connection."""
    data = b""
    while True:
        try:
            chunk = sock.recv(1024)
        except TimeoutError:
            raise AssertionError("the broker kept the connection open; got %r" % data)
        except (ssl.SSLError, OSError):
            return data
        if not chunk:
            return data
        data += chunk


def test_only_our_ca_gets_past_tls(env):
    ca = env.store.ca_pem
    cert, key = env.store.device_paths(A)
    password = env.reg.broker_password(A)
    assert _try(env, _ctx(cert, key, ca), A, password) == ("connack", 0)
    other_cert, other_key = env.foreign.device_paths(A)  # same CN, other issuer
    for tls12 in (True, False):
        for c, k in ((other_cert, other_key), (None, None)):
            kind, err = _try(env, _ctx(c, k, ca, tls12), A, password)
            assert kind == ("handshake" if tls12 else "closed"), (kind, err)
            if tls12:
                assert isinstance(err, ssl.SSLError)


def test_credentials_are_checked(env):
    ctx = _ctx(*env.store.device_paths(A), env.store.ca_pem)
    password = env.reg.broker_password(A)
    assert _try(env, ctx, A, password) == ("connack", 0)
    refused = [
        _try(env, ctx),  # anonymous: no username at all
        _try(env, ctx, A, "0" * 64),  # wrong password
        _try(env, ctx, A, ""),
        _try(env, ctx, "T-GHOST", password),  # not registered
        _try(env, ctx, HOST_USERNAME, password),  # the host's name with a device's password
    ]
    assert refused == [("connack", 5)] * len(refused)


def test_plain_tcp_on_the_tls_port_fails(env):
    with socket.create_connection(("127.0.0.1", env.port), timeout=WAIT) as s:
        s.sendall(mqtt.connect("plain", 30, True, None, A, env.reg.broker_password(A)))
        try:
            data = s.recv(16)
        except OSError:  # reset by the broker
            data = b""
    assert data[:1] != b"\x20"  # never a CONNACK
    assert data == b"" or data[:1] == b"\x15"  # closed, or a TLS alert record


def test_clients_check_the_broker_name(env):
    ctx = _ctx(*env.store.device_paths(A), env.store.ca_pem)
    password = env.reg.broker_password(A)
    assert _try(env, ctx, A, password, server_hostname="localhost") == ("connack", 0)
    kind, err = _try(env, ctx, A, password, server_hostname="broker.example")
    assert kind == "handshake" and isinstance(err, ssl.SSLCertVerificationError)
    # And a client trusting only another CA refuses our broker.
    kind, err = _try(env, _ctx(*env.store.device_paths(A), env.foreign.ca_pem), A, password)
    assert kind == "handshake" and isinstance(err, ssl.SSLCertVerificationError)


# ---------------------------------------------------------------- operations

def test_new_password_and_reload_cut_a_terminal_off(env):
    old = env.reg.broker_password(D)
    d = Peer(env, D)
    d.client.reconnect_delay_set(30, 30)  # keep paho from retrying during the check
    env.reg.register(D, "S-1", "M-1")  # re-provisioning rotates the broker password
    new = env.reg.broker_password(D)
    assert new != old
    write_secure_broker(env.out["conf"].rsplit("/", 1)[0], env.reg, env.store, env.port,
                        root=ROOT, log_path=str(env.base / "broker" / "mosquitto.log"))
    env.broker.reload()
    assert d.disconnected.wait(WAIT), "the connected terminal kept its session"
    d.close()
    ctx = _ctx(*env.store.device_paths(D), env.store.ca_pem)
    assert _try(env, ctx, D, old) == ("connack", 5)
    assert _try(env, ctx, D, new) == ("connack", 0)


def test_identity_as_username_would_skip_the_password(env, tmp_path):
    # Why the config keeps use_identity_as_username false (host_sim/mosquitto.py): with it,
    # mosquitto takes the certificate CN as the username and checks no password at all.
    port = free_port()
    cert, key = env.store.server_paths()
    conf = secure_config(port, env.store.ca_pem, cert, key, env.out["passwd"], env.out["acl"])
    listener = conf.listeners[0]
    listener.lines = [ln.replace("use_identity_as_username false", "use_identity_as_username true")
                      for ln in listener.lines]
    other = Mosquitto(conf.write(str(tmp_path / "identity.conf")), port)
    other.start()
    try:
        probe = SimpleNamespace(port=port)
        ctx = _ctx(*env.store.device_paths(A), env.store.ca_pem)
        assert _try(probe, ctx, A, "0" * 64) == ("connack", 0)
        assert _try(probe, ctx) == ("connack", 0)
    finally:
        other.stop()
    ctx = _ctx(*env.store.device_paths(A), env.store.ca_pem)
    assert _try(env, ctx, A, "0" * 64) == ("connack", 5)  # ours checks it


MP_CLIENT = """
import sys, socket, ssl
from protocol import mqtt
ca, cert, key, port, user, password = sys.argv[1:7]
def load(path):
    with open(path, "rb") as f:
        return f.read()
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.verify_mode = ssl.CERT_REQUIRED
ctx.load_verify_locations(cadata=load(ca))
if cert != "-":
    ctx.load_cert_chain(load(cert), load(key))
s = socket.socket()
s.connect(socket.getaddrinfo("127.0.0.1", int(port))[0][-1])
try:
    s = ctx.wrap_socket(s, server_hostname="127.0.0.1")
    s.write(mqtt.connect(user, 30, True, None, user, password))
    data = s.read(4)
    print("connack", data[3] if data and len(data) == 4 else None)
except OSError as e:
    print("refused", e)
"""


def test_micropython_connects_with_the_der_files(env, tmp_path):
    mp = os.path.join(REPO, ".venv", "bin", "micropython")
    if not os.path.exists(mp):
        pytest.skip("no MicroPython in .venv")
    script = tmp_path / "mp_tls_client.py"
    script.write_text(MP_CLIENT)
    cert, key = env.store.device_paths(C)
    mp_env = dict(os.environ, MICROPYPATH=REPO + ":.frozen")

    def run(*args):
        out = subprocess.run([mp, str(script), env.store.ca_der] + [str(a) for a in args],
                             capture_output=True, text=True, timeout=30, env=mp_env, cwd=REPO)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    password = env.reg.broker_password(C)
    assert run(der_twin(cert), der_twin(key), env.port, C, password) == ["connack", "0"]
    assert run(der_twin(cert), der_twin(key), env.port, C, "0" * 64) == ["connack", "5"]
    assert run("-", "-", env.port, C, password)[0] == "refused"
