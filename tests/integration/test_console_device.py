"""The technician console on the real pty of a running device, on both runtimes.

A fresh key hierarchy (host_sim.issuance) signs a trust list and a coupon valid now; the device
runs against the session's mosquitto with its console on a pseudo-terminal. Over that pty: status
without login, the login gate and a wrong PIN, login, trust load (then rollback refused), coupon
check (ok and checked only), queue list, selftest (console, display, printer, link), log tail,
and reboot, which answers and then ends the process with the restart status. Also the console
on stdin/stdout (`console --config F`), from unprovisioned to a coupon check: replies only on
stdout.
"""
import json
import os
import subprocess
import sys

import pytest

from device.console.commands import EXIT_REBOOT
from device.staff.pins import hash_pin
from host_sim import issuance
from tests.support.terminal import DeviceProcess, Pty, runtime_cmd, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("keys"))
    with issuance.Keystore(d, create=True) as ks:
        root = ks.create_root("eddsa")
        ks.create_issuer("M-ACME", "eddsa")
        trust = issuance.text_form(issuance.TRUST_PREFIX, ks.trustlist())
        token = ks.create_campaign("SPRING", "Spring 10%", "pct", 10, iss="M-ACME",
                                   max_uses=1)[0]
    return {"root": root, "trust": trust, "token": token}


def _register(tmp_path, device_id, broker, console_port, root_key):
    cfg_path = str(tmp_path / (device_id + ".json"))
    subprocess.run(
        [sys.executable, "-m", "host_sim", "register", device_id, "--db",
         str(tmp_path / "host.db"), "--store", "S-001", "--merchant", "M-ACME", "--currency",
         "CNY", "--root-key", root_key, "--broker-port", str(broker.port), "--data-dir",
         str(tmp_path / device_id), "--console-port", console_port, "--tech-pin", "2468",
         "--config-out", cfg_path],
        cwd=ROOT, check=True, capture_output=True, timeout=30)
    return cfg_path


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_console_on_a_running_device(runtime, broker, keys, tmp_path):
    pty = Pty()
    dev = "T-C%s" % runtime[:2].upper()
    cfg_path = _register(tmp_path, dev, broker, pty.slave_path, keys["root"])
    proc = DeviceProcess(runtime, cfg_path, ROOT, tmp_path / "device.log")
    try:
        st = wait_until(lambda: _try(pty, "status"), 30, proc.tail)
        assert st["ok"] and st["provisioned"] and st["device_id"] == dev and st["rt"] == runtime
        assert st["queue"] == {"pending": 0, "amount": 0, "oldest_at": None}
        assert wait_until(lambda: pty.command("status")["online"], 30, proc.tail)

        assert pty.command("queue list")["error"] == "login_required"
        rep = pty.command("login 1111")
        assert rep["error"] == "wrong_pin" and rep["attempts_left"] == 4
        assert pty.command("login 2468")["ok"]

        rep = pty.command("trust load " + keys["trust"])
        assert rep == {"ok": True, "ver": 1, "keys": 1}
        assert pty.command("trust load " + keys["trust"])["error"] == "rollback"

        rep = pty.command("coupon check %s 2500" % keys["token"])
        assert rep["ok"] and rep["verdict"] == "ok" and rep["discount"] == 250
        assert rep["campaign"] == "SPRING" and rep["total"] == 2500
        # checked only: the same coupon is still good
        assert pty.command("coupon check %s 2500" % keys["token"])["verdict"] == "ok"
        assert pty.command("coupon check PC1:BROKEN 100")["verdict"] == "malformed"

        rep = pty.command("queue list")
        assert rep["ok"] and rep["pending"] == [] and rep["declined"] == []

        rep = pty.command("selftest")
        assert rep["ok"] and rep["passed"] is True, rep
        con = rep["drivers"]["console"]
        assert con["open"] and con["port"] == pty.slave_path and con["rx"] > 0
        assert rep["drivers"]["display"]["driver"] == "jsonl"
        assert rep["drivers"]["printer"]["driver"] == "file"
        assert rep["drivers"]["scanner"] == {"configured": False}
        assert rep["link"] == {"connected": True} and rep["storage"]["writable"]
        assert rep["trust_ver"] == 1 and rep["clock"]["trusted"]

        lines = pty.command("log tail 50")["lines"]
        assert any("installed trustlist ver 1" in line for line in lines)
        assert any("wrong technician PIN" in line for line in lines)

        assert pty.command("frobnicate")["error"] == "unknown_command"
        pty.write(b"\xff\xfe\n")
        assert json.loads(pty.read_line())["error"] == "bad_encoding"

        assert pty.command("reboot") == {"ok": True, "rebooting": True}
        proc.proc.wait(15)
        assert proc.proc.returncode == EXIT_REBOOT, proc.tail()
    finally:
        proc.stop()
        pty.close()


def _try(pty, line):
    try:
        return pty.command(line, timeout=1)
    except AssertionError:
        return None


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_stdin_console_provisions_and_only_json_goes_to_stdout(runtime, keys, tmp_path):
    cfg_path = str(tmp_path / "device.json")
    cfg = {"device_id": "T-STDIN", "store_id": "S-001", "merchant_id": "M-ACME",
           "currency": "CNY", "secret_hex": "ab" * 32, "root_keys": [keys["root"]],
           "data_dir": str(tmp_path / "data"), "pins": {"tech": hash_pin("2468", b"s" * 16)}}
    lines = ["status", "login 2468", "provision " + json.dumps(cfg), "queue list",
             "login 2468", "trust load " + keys["trust"], "coupon check %s 1000" % keys["token"],
             "reboot", "status"]
    cmd, env = runtime_cmd(runtime, ROOT)
    p = subprocess.run(cmd + ["-m", "device", "console", "--config", cfg_path],
                       input="\n".join(lines) + "\n", cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == EXIT_REBOOT, p.stderr
    out = [json.loads(line) for line in p.stdout.splitlines()]
    assert len(out) == 8  # nothing after reboot; log lines went to stderr
    assert out[0]["provisioned"] is False and out[1]["error"] == "not_provisioned"
    assert out[2]["ok"] and out[3]["error"] == "login_required" and out[4]["ok"]
    assert out[5]["ver"] == 1 and out[6]["verdict"] == "ok" and out[6]["discount"] == 100
    assert out[7] == {"ok": True, "rebooting": True}
    assert "provisioned as T-STDIN" in p.stderr
    with open(cfg_path) as f:
        assert json.load(f)["device_id"] == "T-STDIN"
