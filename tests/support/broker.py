"""A real mosquitto broker for tests: own config, own loopback port, own log file.

    b = Broker(); b.start(); ... b.port ...; b.stop(); b.start()  # same port again
    b.kill()      # SIGKILL, no goodbye
    b.pause()     # SIGSTOP: sockets stay open but nothing answers (dead-link tests)
    b.log()       # the whole log so far (mosquitto writes its log file line by line)

Every broker still running at interpreter exit is killed (atexit), so a crashed test run leaves
no broker behind; pytest fixtures close them explicitly (tests/conftest.py).
"""
import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from host_sim.procs import free_port, stop_process
from protocol import limits

_LIVE = set()


def mosquitto_path():
    for path in ("/usr/sbin/mosquitto", shutil.which("mosquitto")):
        if path and os.access(path, os.X_OK):
            return path
    return None


class BrokerError(Exception):
    pass


class Broker:
    """mosquitto on 127.0.0.1:<free port>; `extra` config lines (anything mosquitto.conf
    accepts: a TLS listener, an ACL file...) are appended. `log_types` defaults to everything:
    packet-level lines such as "Received PINGREQ" are what the keepalive tests look for.
    `message_size_limit` is the project's (protocol/limits.py) unless a test lifts it (0).
    """

    host = "127.0.0.1"

    def __init__(self, extra=(), port=None, log_types=("all",), workdir=None,
                 message_size_limit=limits.BROKER_MESSAGE_LIMIT):
        self.exe = mosquitto_path()
        if self.exe is None:
            raise BrokerError("mosquitto not found: run scripts/ensure-mosquitto")
        self.port = port or free_port(self.host)
        self._port_fixed = port is not None  # a free port that got taken may be swapped once
        self._started_once = False
        self.extra = list(extra)
        self.log_types = list(log_types)
        self.message_size_limit = message_size_limit  # 0: none (oversized-message tests)
        self._own_dir = workdir is None
        self.dir = workdir or tempfile.mkdtemp(prefix="mosquitto-")
        self.conf_path = os.path.join(self.dir, "mosquitto.conf")
        self.log_path = os.path.join(self.dir, "mosquitto.log")
        self.proc = None
        self._paused = False
        self._write_config()

    def _write_config(self):
        lines = [
            "listener %d %s" % (self.port, self.host),
            "allow_anonymous true",
            # the default (1000) drops QoS 1 messages under load: see PLATFORM_NOTES
            "max_queued_messages 0",
            # no ~40 ms stall of a PUBLISH behind a PUBACK (PLATFORM_NOTES 2026-12-02)
            "set_tcp_nodelay true",
            "message_size_limit %d" % self.message_size_limit,
            "persistence false",
            "log_dest file " + self.log_path,
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "connection_messages true",
        ]
        # error and notice lines are what start() reads to know the listener is up
        lines += ["log_type " + t for t in ["error", "notice"] + self.log_types]
        if os.geteuid() == 0:
            # As root mosquitto would switch to the `mosquitto` user, which cannot open files in
            # this private temp dir (nor certificates other tests generate): stay root instead.
            lines.append("user root")
        lines += self.extra
        with open(self.conf_path, "w") as f:
            f.write("\n".join(lines) + "\n")

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=10.0):
        """Starts mosquitto and waits until its port accepts. A restart keeps the port."""
        try:
            return self._start(timeout)
        except BrokerError:
            if self._port_fixed or self._started_once:
                raise
            # someone took the free port between probing and binding it: try another one
            self.port = free_port(self.host)
            self._write_config()
            return self._start(timeout)

    def _start(self, timeout):
        if self.running:
            raise BrokerError("broker already running on port %d" % self.port)
        self._paused = False
        mark = len(self.log())
        self.proc = subprocess.Popen([self.exe, "-c", self.conf_path],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, cwd=self.dir)
        _LIVE.add(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace")
                self.proc = None
                _LIVE.discard(self)
                raise BrokerError("mosquitto exited at start-up: %s %s" % (err, self.log()))
            # the port may accept because someone else listens there: trust mosquitto's log
            news = self.log()[mark:]
            if "Error:" in news:
                self.kill()
                raise BrokerError("mosquitto failed at start-up: %s" % news)
            if " running" in news and self._accepts():
                self._started_once = True
                return self
            time.sleep(0.02)
        self.kill()
        raise BrokerError("mosquitto did not listen on port %d within %.0f s"
                          % (self.port, timeout))

    def _accepts(self):
        try:
            socket.create_connection((self.host, self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def stop(self, timeout=5.0):
        """SIGTERM by PID, then wait; SIGKILL when it does not exit in time."""
        if self.proc is None:
            return
        if self.running:
            self.resume()
            stop_process(self.proc, timeout)
        self._reap()

    def kill(self):
        if self.proc is None:
            return
        if self.running:
            self.proc.kill()
            self.proc.wait(5)
        self._reap()

    def _reap(self):
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None
        self._paused = False
        _LIVE.discard(self)

    def pause(self):
        """SIGSTOP: the TCP connections stay up but no packet is answered."""
        if self.running and not self._paused:
            self.proc.send_signal(signal.SIGSTOP)
            self._paused = True

    def resume(self):
        if self.running and self._paused:
            self.proc.send_signal(signal.SIGCONT)
            self._paused = False

    def restart(self):
        self.stop()
        return self.start()

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def wait_log(self, text, timeout=5.0, start=0):
        """Waits until `text` appears in the log after character offset `start`; returns the
        offset just past it."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.log().find(text, start)
            if found >= 0:
                return found + len(text)
            if time.monotonic() >= deadline:
                raise BrokerError("%r not in the broker log within %.1f s" % (text, timeout))
            time.sleep(0.05)

    def close(self):
        """Stops the broker and removes its directory."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start() if not self.running else self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "<Broker 127.0.0.1:%d %s>" % (self.port, "up" if self.running else "down")


@atexit.register
def _kill_leftovers():
    for b in list(_LIVE):
        try:
            b.kill()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
