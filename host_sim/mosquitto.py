# mosquitto for the simulator: config writers and a process started and stopped by PID.
# Two setups, both on loopback only with persistence off:
# - dev: one anonymous plain listener (run_dev_broker);
# - locked down (issue 5, SPEC 3): one TLS listener demanding a client certificate from our CA
#   AND the account's password, and an ACL that confines each terminal to its own topics
#   (secure_config, write_secure_broker).
# Every config sets max_queued_messages 0 (unlimited): with the default 1000 a slow subscriber
# silently loses QoS 1 messages (PLATFORM_NOTES), set_tcp_nodelay true (no ~40 ms stall of a
# PUBLISH behind a PUBACK), and message_size_limit just above the largest list
# (protocol/limits.py), so no larger message ever reaches a terminal. The locked-down one also
# sets max_packet_size: the cap on every client's packets, terminal uploads included.
# Started as root, mosquitto would switch to the `mosquitto` user, which cannot read our 0600
# keys; like tests/support/broker.py the configs say `user root` instead, so private keys never
# need to be readable by a second account.
import base64
import hashlib
import os
import signal
import socket
import subprocess
import time

from host_sim.files import write_atomic
from host_sim.procs import free_port, stop_process
from host_sim.registry import HOST_USERNAME
from protocol import limits, topics

MOSQUITTO = "/usr/sbin/mosquitto"
PBKDF2_ITERATIONS = 101  # mosquitto_passwd's default; our passwords are 256 random bits
SALT_BYTES = 12  # what mosquitto_passwd uses for $7$


class MosquittoError(RuntimeError):
    pass


class Listener:
    """One `listener PORT HOST` block with the lines that apply to it (TLS files, protocol)."""

    def __init__(self, port, host="127.0.0.1", lines=()):
        if type(port) is not int or not 0 < port < 65536:
            raise MosquittoError("listener port must be 1..65535")
        self.port = port
        self.host = host
        self.lines = list(lines)

    def render(self):
        return ["listener %d %s" % (self.port, self.host)] + self.lines


class BrokerConfig:
    """A mosquitto.conf: global settings, listeners, then extra global lines (acl_file, ...)."""

    def __init__(self, port, host="127.0.0.1", log_path=None, allow_anonymous=True):
        self.listeners = [Listener(port, host)]
        self.log_path = log_path
        self.allow_anonymous = allow_anonymous
        self.extra = []

    @property
    def port(self):
        return self.listeners[0].port

    def add_listener(self, port, host="127.0.0.1", lines=()):
        listener = Listener(port, host, lines)
        self.listeners.append(listener)
        return listener

    def add_lines(self, *lines):
        self.extra.extend(lines)

    def render(self):
        out = ["# written by host_sim.mosquitto",
               # Listener settings apply per listener, not just to the default one.
               "per_listener_settings false",
               "allow_anonymous %s" % ("true" if self.allow_anonymous else "false"),
               "persistence false",
               "max_queued_messages 0",
               # a PUBLISH written behind a PUBACK must not wait for the peer's delayed ACK
               # (~40 ms, PLATFORM_NOTES 2026-12-02)
               "set_tcp_nodelay true",
               "message_size_limit %d" % limits.BROKER_MESSAGE_LIMIT]
        if os.geteuid() == 0:
            out.append("user root")
        if self.log_path:
            out += ["log_dest file %s" % self.log_path, "log_type error", "log_type warning",
                    "log_type notice", "log_type information", "connection_messages true",
                    "log_timestamp true"]
        else:
            out.append("log_dest none")
        for listener in self.listeners:
            out += listener.render()
        out += self.extra
        return "\n".join(out) + "\n"

    def write(self, path):
        _write_text(path, self.render(), 0o644)
        return path


class Mosquitto:
    """A mosquitto process for one config file; stop() sends SIGTERM to its PID."""

    def __init__(self, conf_path, port, host="127.0.0.1", binary=MOSQUITTO):
        self.conf_path = conf_path
        self.port = port
        self.host = host
        self.binary = binary
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self, timeout=10.0):
        if self.proc is not None and self.proc.poll() is None:
            raise MosquittoError("mosquitto already running (pid %d)" % self.proc.pid)
        if not os.path.exists(self.binary):
            raise MosquittoError("%s not found: apt-get install mosquitto" % self.binary)
        self.proc = subprocess.Popen([self.binary, "-c", self.conf_path],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace").strip()
                self.proc = None
                raise MosquittoError("mosquitto exited at start: %s" % err)
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self.proc.pid
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise MosquittoError("mosquitto did not listen on %s:%d within %.1f s"
                             % (self.host, self.port, timeout))

    def stop(self, timeout=5.0):
        """SIGTERM, then SIGKILL if it has not exited within timeout; returns the exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        code = stop_process(proc, timeout)
        if proc.stderr:
            proc.stderr.close()
        return code

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def reload(self):
        """SIGHUP: mosquitto re-reads the password and ACL files and disconnects clients whose
        credentials no longer pass (TLS files are only read at start)."""
        if not self.running():
            raise MosquittoError("mosquitto is not running")
        self.proc.send_signal(signal.SIGHUP)


def run_dev_broker(workdir, port=None, host="127.0.0.1"):
    """Writes the plain dev config into workdir and starts mosquitto; returns the Mosquitto."""
    os.makedirs(workdir, exist_ok=True)
    port = port or free_port(host)
    conf = BrokerConfig(port, host, log_path=os.path.join(os.path.abspath(workdir),
                                                          "mosquitto.log"))
    path = conf.write(os.path.join(workdir, "mosquitto.conf"))
    broker = Mosquitto(path, port, host)
    broker.start()
    return broker


# ---------------------------------------------------------------- the locked-down broker
#
# Authentication: require_certificate true AND use_identity_as_username false, so a client needs
# both a certificate from our CA and the password of the account it names. We chose this over
# use_identity_as_username true (the certificate CN as the username, no password) because:
# - mosquitto cannot have both: with use_identity_as_username it skips the password check
#   entirely (tested in tests/integration/test_broker_security.py), so the choice is "certificate
#   as identity" or "certificate as admission + password as identity";
# - revocation: rewriting the password file and SIGHUP (Mosquitto.reload) cuts a retired or
#   stolen terminal off at once, its open session included (tested); with certificate
#   identities it takes a CRL to maintain, and on SIGHUP mosquitto 2.0.11 applies a new CRL to
#   new connections only: a session already open stays up (measured);
# - a leaked CA key would, with certificate identities, mint any identity, the host's (every
#   topic) included; here it only gets past TLS, and each account still needs its password;
# - the two credentials live apart (keys in certs/, passwords in the registry): a leak of either
#   store alone impersonates no one, and nobody without a CA-issued key reaches the MQTT layer
#   at all (no password guessing from the network).
# The cost: the broker does not tie the certificate's CN to the username, so impersonating B
# takes B's password plus any one CA-issued key. The passwords are 256 random bits held only by B
# and the registry. use_username_as_clientid true stops another account from taking over B's
# client id, which would kick B off and inherit its persistent session.


def password_entry(username, password, salt=None, iterations=PBKDF2_ITERATIONS):
    """One password_file line in mosquitto's PBKDF2-SHA512 form:
    username:$7$ITERATIONS$base64(salt)$base64(PBKDF2-HMAC-SHA512(password, salt, 64 bytes)).
    Written here, not with `mosquitto_passwd -b`, which would show passwords in argv."""
    _check_username(username)
    if type(password) is not str or not password or "\n" in password:
        raise MosquittoError("bad password for %r" % (username,))
    if type(iterations) is not int or iterations < 1:
        raise MosquittoError("iterations must be a positive int")
    salt = os.urandom(SALT_BYTES) if salt is None else bytes(salt)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return "%s:$7$%d$%s$%s" % (username, iterations, base64.b64encode(salt).decode(),
                               base64.b64encode(digest).decode())


def check_password_entry(line, password):
    """True when the password_file line holds this password (the broker's own check)."""
    try:
        _, rest = line.rstrip("\n").split(":", 1)
        empty, kind, iterations, salt, digest = rest.split("$")
        if empty or kind != "7":
            return False
        got = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt),
                                  int(iterations), 64)
        return got == base64.b64decode(digest)
    except (ValueError, TypeError):
        return False


def password_file_text(accounts):
    """The password_file for [(username, password)]; each username once."""
    seen = set()
    lines = []
    for username, password in accounts:
        if username in seen:
            raise MosquittoError("username %r twice" % (username,))
        seen.add(username)
        lines.append(password_entry(username, password))
    return "\n".join(lines) + "\n"


def acl_text(root=topics.DEFAULT_ROOT, host_user=HOST_USERNAME):
    """The acl_file of SPEC 3: a terminal (username = device id) may write only its own up/#
    and state, and read only its own down/# and the fleet lists; the host reads and writes
    everything. Patterns apply to every account, so a newly registered terminal needs no new
    ACL lines, only its password_file entry."""
    _check_root(root)
    _check_username(host_user)
    return "\n".join([
        "# written by host_sim.mosquitto: SPEC 3 topic rights, %u = the account (device id)",
        "pattern write %s/dev/%%u/up/#" % root,
        "pattern write %s/dev/%%u/state" % root,
        "pattern read %s/dev/%%u/down/#" % root,
        "pattern read %s/fleet/down/#" % root,
        "",
        "user %s" % host_user,
        "topic readwrite #",
    ]) + "\n"


def secure_config(port, ca, cert, key, passwd_path, acl_path, host="127.0.0.1", log_path=None):
    """A BrokerConfig with only a TLS listener (see the authentication note above)."""
    for path in (ca, cert, key, passwd_path, acl_path) + ((log_path,) if log_path else ()):
        if type(path) is not str or not os.path.isabs(path) or "\n" in path:
            raise MosquittoError("config paths must be absolute, one line: %r" % (path,))
    conf = BrokerConfig(port, host, log_path=log_path, allow_anonymous=False)
    conf.listeners[0].lines += [
        "cafile %s" % ca,
        "certfile %s" % cert,
        "keyfile %s" % key,
        "require_certificate true",
        "use_identity_as_username false",
        "use_username_as_clientid true",
    ]
    conf.add_lines("password_file %s" % passwd_path, "acl_file %s" % acl_path,
                   # caps every client's packets, terminal uploads included (global in 2.0)
                   "max_packet_size %d" % limits.BROKER_PACKET_LIMIT)
    return conf


def write_secure_broker(out_dir, registry, store, port, root=topics.DEFAULT_ROOT,
                        host="127.0.0.1", log_path=None):
    """Writes mosquitto.conf, passwd and acl for every account in the registry into out_dir.

    store: a host_sim.certs.CertStore whose CA and server certificate exist (store.ensure()).
    Returns {"conf", "passwd", "acl", "port", "accounts"}.
    """
    _check_root(root)
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    # A device row named like the host (possible only in a database older than the check in
    # Registry.register) makes the username appear twice: password_file_text refuses it.
    accounts = registry.broker_accounts()
    cert, key = store.server_paths()
    for path in (store.ca_pem, cert, key):
        if not os.path.exists(path):
            raise MosquittoError("%s is missing: make the certificates first" % path)
    paths = {"conf": os.path.join(out_dir, "mosquitto.conf"),
             "passwd": os.path.join(out_dir, "passwd"),
             "acl": os.path.join(out_dir, "acl")}
    _write_text(paths["passwd"], password_file_text(accounts), 0o600)
    _write_text(paths["acl"], acl_text(root), 0o644)
    log_path = os.path.abspath(log_path) if log_path else None
    secure_config(port, store.ca_pem, cert, key, paths["passwd"], paths["acl"], host,
                  log_path).write(paths["conf"])
    paths["port"] = port
    paths["accounts"] = [u for u, _ in accounts]
    return paths


def _check_username(username):
    # A password_file line is "username:hash": a ":" or line break would split it elsewhere.
    if type(username) is not str or not username or len(username) > 64 \
            or any(c in ":\r\n" or not 0x21 <= ord(c) <= 0x7E for c in username):
        raise MosquittoError("%r cannot be a broker username (printable ASCII, no ':')"
                             % (username,))


def _check_root(root):
    try:
        topics.fleet(root, "trustlist")
    except ValueError as e:
        raise MosquittoError(str(e))
    # The root is pasted into ACL lines: no pattern escapes, blanks or line breaks.
    if any(c in "% " or not 0x21 <= ord(c) <= 0x7E for c in root):
        raise MosquittoError("topic root %r is not plain printable ASCII" % (root,))


def _write_text(path, text, mode):
    # Atomic, with the mode set before any byte lands (the password file is private).
    try:
        write_atomic(path, text, mode)
    except OSError as e:
        raise MosquittoError("cannot write %s: %s" % (path, e))
