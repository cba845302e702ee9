"""The foundation end to end: a real mosquitto, host_sim and the device on each runtime.

- the device connects and host_sim receives a verified hello;
- after a restart, boot and seq are larger;
- a forged MAC, a stale seq and a message sealed for another device are dropped and counted,
  visible in the console's status and in the status heartbeat.
"""
import json
import os
import subprocess
import sys
import time

import paho.mqtt.client as mqtt
import pytest

from host_sim.registry import Registry
from protocol import envelope, topics
from tests.support.terminal import DeviceProcess, Pty, start_host, stop_process, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROOT_KEY = "6b302cf1c2a95a0f2791d08a3db8949042ac04ab98a163ae605a2e70418feffe"


@pytest.fixture
def host(broker, tmp_path):
    db = str(tmp_path / "host.db")
    proc = start_host(ROOT, db, broker.port, tmp_path / "host.log",
                      "--client-id", "host-" + tmp_path.name)
    yield db
    stop_process(proc)


def _register(db, tmp_path, device_id, broker, console_port):
    cfg_path = str(tmp_path / (device_id + ".json"))
    subprocess.run(
        [sys.executable, "-m", "host_sim", "register", device_id, "--db", db, "--store", "S-001",
         "--merchant", "M-ACME", "--currency", "CNY", "--root-key", ROOT_KEY,
         "--broker-port", str(broker.port), "--data-dir", str(tmp_path / device_id),
         "--console-port", console_port, "--config-out", cfg_path],
        cwd=ROOT, check=True, capture_output=True, timeout=30)
    cfg = json.load(open(cfg_path))
    cfg["status_interval_s"] = 1
    json.dump(cfg, open(cfg_path, "w"))
    return cfg_path, cfg


def _hello(db, device_id):
    reg = Registry(db)
    try:
        d = reg.device(device_id)
        return d and d["last_hello"] and (d["last_hello"], d["last_seq"])
    finally:
        reg.close()


def _publish(broker, topic, payload):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="attacker-%d" % os.getpid())
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    c.publish(topic, payload, qos=1).wait_for_publish(5)
    c.loop_stop()
    c.disconnect()


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_hello_restart_and_drops(runtime, broker, host, tmp_path):
    pty = Pty()
    dev = "T-%s" % runtime[:2].upper()
    cfg_path, cfg = _register(host, tmp_path, dev, broker, pty.slave_path)

    procs = []
    try:
        _scenario(runtime, broker, host, tmp_path, pty, dev, cfg_path, cfg, procs)
    finally:
        # A failed assertion must not leave a terminal running.
        for p in procs:
            p.stop()
        pty.close()


def _scenario(runtime, broker, host, tmp_path, pty, dev, cfg_path, cfg, procs):
    proc = DeviceProcess(runtime, cfg_path, ROOT, tmp_path / "device.log")
    procs.append(proc)
    first = wait_until(lambda: _hello(host, dev), 30, proc.tail)
    hello, seq1 = first
    assert hello["rt"] == runtime and hello["boot"] == 1 and hello["queue"] == 0

    proc.stop()
    proc = DeviceProcess(runtime, cfg_path, ROOT, tmp_path / "device.log")
    procs.append(proc)
    second = wait_until(lambda: (_hello(host, dev) or (None, 0))[0]["boot"] == 2
                        and _hello(host, dev), 30, proc.tail)
    assert second[1] > seq1

    secret = bytes.fromhex(cfg["secret_hex"])
    root = cfg["broker"]["root"]
    down = topics.down(root, dev, "config")
    body = {"status_interval_s": 5}

    def seal(key, seq, who=dev):
        return envelope.seal(key, who, "config", seq, int(time.time()), body, os.urandom(16))

    _publish(broker, down, seal(secret, 1000))              # accepted: seq 1000
    _publish(broker, down, seal(b"\x00" * 32, 2000))        # forged MAC
    _publish(broker, down, seal(secret, 999))               # stale seq
    _publish(broker, down, seal(secret, 3000, "T-OTHER"))   # sealed for another device

    def drops():
        rep = pty.command("status")
        m = rep["metrics"]
        return (m.get("drop_bad_mac"), m.get("drop_stale_seq"), m.get("drop_wrong_device"))

    assert wait_until(lambda: drops() == (1, 1, 1) or None, 20, proc.tail)
    rep = pty.command("status")
    assert rep["ok"] and rep["device_id"] == dev and rep["rt"] == runtime and rep["online"]
    assert rep["drops"] == 3 and rep["queue"] == {"pending": 0, "amount": 0, "oldest_at": None}

    # The heartbeat tells the host too.
    def host_drops():
        reg = Registry(host)
        try:
            st = reg.device(dev)["last_status"]
            return st and st["drops"] == 3
        finally:
            reg.close()

    assert wait_until(host_drops, 20, proc.tail)
