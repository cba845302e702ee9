"""Test helpers for driving a real device process: pseudo-terminals and process control."""
import json
import os
import select
import signal
import subprocess
import sys
import time
import tty

from host_sim.procs import stop_process  # noqa: F401 - the tests' one way to stop a child


def wait_until(fn, timeout, tail=None, interval=0.1):
    """Polls fn until it returns something truthy; fails with the device's log tail if not."""
    end = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError("timed out after %.0f s\n%s" % (timeout, tail() if tail else ""))
        time.sleep(interval)


def start_host(root, db, broker_port, log_path, *extra):
    """`python -m host_sim serve` as a child; returns once it has subscribed ("host up"): a
    device's hello sent before that is not kept for the host."""
    proc = subprocess.Popen([sys.executable, "-u", "-m", "host_sim", "serve", "--db", str(db),
                             "--broker-host", "127.0.0.1", "--broker-port", str(broker_port)]
                            + list(extra), cwd=root, stdout=open(log_path, "w"),
                            stderr=subprocess.STDOUT)

    def log():
        with open(log_path) as f:
            return f.read()

    try:
        wait_until(lambda: "host up" in log() or proc.poll() is not None, 30, log)
        assert proc.poll() is None, log()
    except BaseException:
        stop_process(proc)
        raise
    return proc


class Pty:
    """A pseudo-terminal pair: the device opens slave_path, the test talks on the master."""

    def __init__(self):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no line discipline, as a real serial line
        self.slave_path = os.ttyname(self.slave)
        self._buf = b""

    def write(self, data):
        os.write(self.master, data)

    def read_line(self, timeout=10):
        end = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError("no line from the device; got %r" % self._buf[-200:])
            r, _, _ = select.select([self.master], [], [], left)
            if r:
                self._buf += os.read(self.master, 65536)
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def command(self, line, timeout=10):
        """Sends one console command and returns its JSON reply."""
        self._buf = b""
        self.write(line.encode() + b"\n")
        return json.loads(self.read_line(timeout))

    def close(self):
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


def runtime_cmd(runtime, root, heap="4M", romfs=None):
    """romfs: a ROMFS image of the agent's code (tests/support/romfs.py) that MicroPython runs
    instead of the sources, through tests/mp_romfs_run.py."""
    if runtime == "micropython":
        mp = os.path.join(os.path.dirname(sys.executable), "micropython")
        if romfs is not None:
            return ([mp, "-X", "heapsize=" + heap, os.path.join(root, "tests", "mp_romfs_run.py")],
                    dict(os.environ, MICROPYPATH=".frozen", ROMFS_IMAGE=str(romfs)))
        return [mp, "-X", "heapsize=" + heap], dict(os.environ, MICROPYPATH=root + ":.frozen")
    return [sys.executable, "-u"], dict(os.environ, PYTHONPATH=root)


class DeviceProcess:
    """`python -m device run --config F` (or micropython) as a child process, logged to a file."""

    def __init__(self, runtime, config_path, root, log_path, args=None, env=None, heap="4M",
                 romfs=None):
        """env: variables added to the child's environment (POS_CLOCK_CORRECTION_S...)."""
        cmd, base = runtime_cmd(runtime, root, heap, romfs)
        env = dict(base, **(env or {}))
        self.log_path = str(log_path)
        self._log = open(self.log_path, "a")
        self.proc = subprocess.Popen(cmd + ["-m", "device"] + (args or ["run", "--config",
                                                                       str(config_path)]),
                                     cwd=root, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT)

    def tail(self, n=3000):
        with open(self.log_path) as f:
            return f.read()[-n:]

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        """Power cut: SIGKILL, nothing flushed, no goodbye."""
        if self._log.closed:
            return
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def stop(self):
        if self._log.closed:
            return
        stop_process(self.proc)
        self._log.close()
