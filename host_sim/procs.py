# Child processes the simulator and the tests start (mosquitto, PostgreSQL, host and device
# processes) and the loopback ports they listen on: one way to pick a port, one way to stop.
import signal
import socket
import subprocess


def free_port(host="127.0.0.1"):
    """A TCP port that was free on host a moment ago (the caller retries if it got taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def stop_process(proc, timeout=10.0, sig="SIGTERM"):
    """Signals proc by its PID (SIGTERM unless told), then SIGKILL if it has not exited within
    timeout; always reaps it. Returns its exit code (None when proc is None)."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            proc.send_signal(getattr(signal, sig))
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode
