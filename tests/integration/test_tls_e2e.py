"""Issue 5 end to end: the locked-down broker, the host and real terminals, all over TLS.

Everything is made the way an operator would, with the command line: `host_sim certs` (private
CA), `host_sim register --certs` (device config with its TLS broker section), `host_sim
broker-config` (mosquitto.conf, passwd, acl), then mosquitto, `host_sim serve --certs` (the host
as user pos-host) and `python -m device run` / `micropython -m device run`.

- each runtime connects (CA-verified broker, host name checked, client certificate, password)
  and the host records its hello, which it stores only after checking the envelope's MAC;
- a terminal whose broker password was rotated (re-registered, passwd rewritten, SIGHUP) is cut
  off and refused from then on, while its new config gets in.
"""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from host_sim.mosquitto import Mosquitto, check_password_entry
from host_sim.procs import free_port
from host_sim.registry import Registry
from tests.support.broker import mosquitto_path
from tests.support.terminal import DeviceProcess, Pty, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROOT_KEY = "6b302cf1c2a95a0f2791d08a3db8949042ac04ab98a163ae605a2e70418feffe"
DEVICES = {"cpython": "T-TLS-CP", "micropython": "T-TLS-MP"}
ROTATED = "T-TLS-RO"


def cli(*args):
    out = subprocess.run([sys.executable, "-m", "host_sim"] + [str(a) for a in args], cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, "host_sim %s: %s" % (args[0], out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def register(shop, device_id, name=None, console=None):
    path = shop.base / ((name or device_id) + ".json")
    extra = ["--console-port", console.slave_path] if console else []
    rep = cli("register", device_id, "--db", shop.db, "--store", "S-001", "--merchant", "M-ACME",
              "--currency", "CNY", "--root-key", ROOT_KEY, "--broker-port", shop.port,
              "--data-dir", shop.base / device_id, "--certs", shop.certs, "--config-out", path,
              *extra)
    assert rep["tls"] is True
    with open(path) as f:
        return str(path), json.load(f)


def device_row(shop, device_id):
    reg = Registry(shop.db)
    try:
        return reg.device(device_id)
    finally:
        reg.close()


def broker_log(shop):
    try:
        with open(shop.log, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    if mosquitto_path() is None:
        pytest.fail("mosquitto missing: run scripts/ensure-mosquitto")
    base = tmp_path_factory.mktemp("tls-e2e")
    shop = SimpleNamespace(base=base, db=str(base / "host.db"), certs=str(base / "certs"),
                           port=free_port(), log=str(base / "broker" / "mosquitto.log"),
                           procs=[])
    cli("certs", "--dir", shop.certs)
    shop.console = Pty()  # the rotated terminal's console: is it online?
    shop.configs = {dev: register(shop, dev) for dev in DEVICES.values()}
    shop.configs[ROTATED] = register(shop, ROTATED, console=shop.console)
    shop.broker_config = ("broker-config", "--db", shop.db, "--certs", shop.certs,
                          "--port", shop.port, "--out", base / "broker", "--log", shop.log)
    out = cli(*shop.broker_config)
    assert sorted(out["accounts"]) == sorted(list(DEVICES.values()) + [ROTATED, "pos-host"])
    shop.broker = Mosquitto(out["conf"], shop.port)
    shop.broker.start()
    host_log = open(base / "host.log", "w")
    host = subprocess.Popen(
        [sys.executable, "-u", "-m", "host_sim", "serve", "--db", shop.db,
         "--broker-port", str(shop.port), "--certs", shop.certs, "--connect-timeout", "20"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), stdout=host_log,
        stderr=subprocess.STDOUT)

    def host_tail():
        with open(base / "host.log") as f:
            return f.read()[-2000:]

    shop.host_tail = host_tail
    try:
        wait_until(lambda: "host up" in host_tail() or host.poll() is not None, 25)
        assert host.poll() is None, host_tail()
        assert "(TLS)" in host_tail()
        yield shop
    finally:
        for p in shop.procs:
            p.stop()
        host.terminate()
        try:
            host.wait(10)
        except subprocess.TimeoutExpired:
            host.kill()
            host.wait()
        host_log.close()
        shop.broker.stop()
        shop.console.close()


def start_device(shop, runtime, cfg_path, name):
    p = DeviceProcess(runtime, cfg_path, ROOT, shop.base / (name + ".log"))
    shop.procs.append(p)
    return p


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_terminal_says_a_verified_hello_over_tls(shop, runtime):
    dev = DEVICES[runtime]
    cfg_path, cfg = shop.configs[dev]
    b = cfg["broker"]
    # what `register --certs` wrote: TLS to our broker with the device's own credentials
    assert b["tls"] is True and b["port"] == shop.port and b["username"] == dev
    assert b["ca"] == os.path.join(shop.certs, "ca.pem")
    assert b["cert"] == os.path.join(shop.certs, "devices", dev, "cert.pem")
    assert b["key"] == os.path.join(shop.certs, "devices", dev, "key.pem")
    for path in (b["ca"], b["cert"], b["key"]):
        assert os.path.exists(path) and os.path.exists(path[:-4] + ".der")
    reg = Registry(shop.db)
    try:
        assert b["password"] == reg.broker_password(dev)
    finally:
        reg.close()

    proc = start_device(shop, runtime, cfg_path, dev)
    row = wait_until(lambda: (device_row(shop, dev) or {}).get("last_hello") and
                     device_row(shop, dev), 30, proc.tail)
    hello = row["last_hello"]
    assert hello["rt"] == runtime and hello["boot"] == 1
    assert row["last_seq"] is not None  # the envelope passed the MAC and seq checks
    assert wait_until(lambda: device_row(shop, dev)["online"], 10, proc.tail)
    assert "hello %s " % dev in shop.host_tail()
    assert proc.alive()
    proc.stop()


def test_a_rotated_password_locks_the_old_terminal_out(shop):
    old_path, old_cfg = shop.configs[ROTATED]
    proc = start_device(shop, "cpython", old_path, ROTATED + "-old")
    wait_until(lambda: (device_row(shop, ROTATED) or {}).get("last_hello"), 30, proc.tail)
    assert shop.console.command("status")["online"] is True

    # re-provisioning rotates the password; the broker learns it from the rewritten passwd
    new_path, new_cfg = register(shop, ROTATED, ROTATED + "-new", console=shop.console)
    assert new_cfg["broker"]["password"] != old_cfg["broker"]["password"]
    cli(*shop.broker_config)
    with open(os.path.join(str(shop.base), "broker", "passwd")) as f:
        entry = [ln for ln in f if ln.startswith(ROTATED + ":")][0]
    assert check_password_entry(entry, new_cfg["broker"]["password"])
    assert not check_password_entry(entry, old_cfg["broker"]["password"])
    mark = len(broker_log(shop))
    shop.broker.reload()

    # cut off at once, then refused at every retry (it is the only terminal running now;
    # mosquitto names no client id on a refused login)
    kicked = "Client %s disconnected." % ROTATED
    wait_until(lambda: kicked in broker_log(shop)[mark:], 10, lambda: broker_log(shop)[mark:])
    refused = "disconnected, not authorised."
    wait_until(lambda: broker_log(shop)[mark:].split(kicked)[1].count(refused) >= 2, 15,
               lambda: broker_log(shop)[mark:][-2000:])
    assert proc.alive()  # the terminal carries on, offline
    assert shop.console.command("status")["online"] is False
    proc.stop()

    # the new config (new password, new secret) gets in: the refusal was the password's
    proc = start_device(shop, "cpython", new_path, ROTATED + "-new")
    wait_until(lambda: (device_row(shop, ROTATED)["last_hello"] or {}).get("boot") == 2, 30,
               proc.tail)
    assert shop.console.command("status")["online"] is True
    proc.stop()
