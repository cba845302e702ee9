# mosquitto for the simulator: a config writer and a process started and stopped by PID.
# The plain dev setup is one anonymous listener on loopback with persistence off. Every config
# sets max_queued_messages 0 (unlimited): with the default 1000 a slow subscriber silently loses
# QoS 1 messages (PLATFORM_NOTES). The writer keeps listeners and extra lines as lists so the
# TLS listener and the ACL file can be added by the code that needs them.
import os
import pwd
import signal
import socket
import subprocess
import time

MOSQUITTO = "/usr/sbin/mosquitto"
BROKER_USER = "mosquitto"


class MosquittoError(RuntimeError):
    pass


def free_port(host="127.0.0.1"):
    """A TCP port that was free on host a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


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
               "max_queued_messages 0"]
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
        """Writes the config (and creates the log file) so the broker can use them after it
        drops root privileges to the mosquitto user."""
        with open(path, "w") as f:
            f.write(self.render())
        os.chmod(path, 0o644)
        if self.log_path:
            with open(self.log_path, "a"):
                pass
            _give_to_broker_user(self.log_path)
        return path


def _give_to_broker_user(path):
    # mosquitto started as root switches to the mosquitto user before opening its log file.
    if os.geteuid() != 0:
        return
    try:
        pw = pwd.getpwnam(BROKER_USER)
    except KeyError:
        return
    os.chown(path, pw.pw_uid, pw.pw_gid)


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
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if proc.stderr:
            proc.stderr.close()
        return proc.returncode

    def running(self):
        return self.proc is not None and self.proc.poll() is None


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
