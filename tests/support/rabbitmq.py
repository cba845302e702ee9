"""A throwaway RabbitMQ node with its MQTT plugin, from the Debian package
(scripts/ensure-rabbitmq), for the clustered-broker profile (`make test-cluster`).

    node = RabbitMQ(); node.start(); node.mqtt_port, node.amqp_url; node.close()

Everything lives in a temp dir: mnesia, logs, the enabled-plugins file, the config, the Erlang
cookie (HOME). Its own epmd runs on a free loopback port (started first, as our child) so
nothing is shared with another node on the machine; the node and epmd are stopped by PID.
"""
import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time

from host_sim.procs import free_port, stop_process

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
_LIVE = set()


class RabbitError(Exception):
    pass


def missing_reason():
    if not os.access(SERVER, os.X_OK):
        return "rabbitmq-server is not installed (scripts/ensure-rabbitmq installs it as root)"
    if shutil.which("epmd") is None and not os.path.exists("/usr/bin/epmd"):
        return "epmd (erlang-base) is missing"
    try:
        import pika  # noqa: F401
    except ImportError:
        return "pika is not installed (make setup)"
    return None


class RabbitMQ:
    host = "127.0.0.1"

    def __init__(self, name=None):
        reason = missing_reason()
        if reason:
            raise RabbitError(reason)
        self.dir = tempfile.mkdtemp(prefix="rabbitmq-")
        self.name = "%s@localhost" % (name or "fleet%s" % os.urandom(3).hex())
        self.amqp_port = self.mqtt_port = self.dist_port = self.epmd_port = None
        self.proc = self.epmd = None

    @property
    def amqp_url(self):
        return "amqp://guest:guest@%s:%d/%%2F" % (self.host, self.amqp_port)

    def _env(self):
        env = dict(os.environ)
        env.update({
            "HOME": self.dir,  # the Erlang cookie
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": self.host,
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": self.host,
            "RABBITMQ_MNESIA_BASE": os.path.join(self.dir, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(self.dir, "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(self.dir, "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": os.path.join(self.dir, "rabbitmq"),
            "RABBITMQ_PID_FILE": os.path.join(self.dir, "rabbit.pid"),
        })
        return env

    def start(self, timeout=90.0):
        self.amqp_port, self.mqtt_port = free_port(), free_port()
        self.dist_port, self.epmd_port = free_port(), free_port()
        with open(os.path.join(self.dir, "enabled_plugins"), "w") as f:
            f.write("[rabbitmq_mqtt].\n")
        with open(os.path.join(self.dir, "rabbitmq.conf"), "w") as f:
            f.write("\n".join([
                "listeners.tcp.default = %s:%d" % (self.host, self.amqp_port),
                "mqtt.listeners.tcp.default = %s:%d" % (self.host, self.mqtt_port),
                "mqtt.allow_anonymous = true",
                "mqtt.exchange = amq.topic",
                "loopback_users = none",
                "log.console = false",
                "log.file.level = warning",
                # the test machine's disk is shared: do not stop publishers at 50 MB free
                "disk_free_limit.absolute = 10MB",
            ]) + "\n")
        self.epmd = subprocess.Popen(["epmd", "-port", str(self.epmd_port), "-address",
                                      self.host], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _LIVE.add(self)
        out = open(os.path.join(self.dir, "server.out"), "w")
        self.proc = subprocess.Popen([SERVER], env=self._env(), cwd=self.dir,
                                     stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT)
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RabbitError("rabbitmq-server exited: %s" % self.output()[-3000:])
            if _accepts(self.host, self.mqtt_port) and _accepts(self.host, self.amqp_port):
                return self
            time.sleep(0.2)
        self.stop()
        raise RabbitError("rabbitmq did not listen within %.0f s: %s"
                          % (timeout, self.output()[-3000:]))

    def output(self):
        try:
            with open(os.path.join(self.dir, "server.out"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc, timeout=30)  # SIGTERM: RabbitMQ stops gracefully
            self.proc = None
        if self.epmd is not None:
            stop_process(self.epmd, timeout=5)
            self.epmd = None
        _LIVE.discard(self)

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _accepts(host, port):
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


@atexit.register
def _stop_leftovers():
    for node in list(_LIVE):
        try:
            node.stop()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
