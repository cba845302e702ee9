# What a newcomer tripped over (issue 17), as real processes on both runtimes: the stdin console
# given bytes that are not UTF-8, the console of `run` after a provision on stdin, `--help`
# everywhere, console commands given an argument they do not take, CSV files of tokens.
import json
import os
import subprocess
import sys
import time

import pytest

from device.staff import pins
from tests.support.terminal import runtime_cmd

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNTIMES = ["cpython", "micropython"]


def _device(runtime, args, stdin, timeout=30):
    cmd, env = runtime_cmd(runtime, ROOT)
    return subprocess.run(cmd + ["-m", "device"] + args, input=stdin, cwd=ROOT, env=env,
                          capture_output=True, timeout=timeout)


def _config(d):
    return {"device_id": "T-0901", "store_id": "S-001", "merchant_id": "M-ACME",
            "currency": "CNY", "secret_hex": "ab" * 32, "root_keys": ["cd" * 32],
            "data_dir": str(d / "data"), "broker": {"port": 9},
            "pins": {"tech": pins.hash_pin("2468", b"salt-salt-salt-1", 1000)}}


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_stdin_console_answers_bytes_that_are_not_utf8(runtime, tmp_path):
    p = _device(runtime, ["console", "--config", str(tmp_path / "d.json")],
                b"\xff\xfe\nstatus\nbogus\n")
    assert p.returncode == 0, p.stderr[-2000:]
    replies = [json.loads(line) for line in p.stdout.splitlines()]
    assert replies[0]["error"] == "bad_encoding"
    assert replies[1]["ok"] and replies[1]["provisioned"] is False
    assert replies[2]["error"] == "unknown_command"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_run_console_on_stdin_keeps_answering_after_provision(runtime, tmp_path):
    cmd, env = runtime_cmd(runtime, ROOT)
    proc = subprocess.Popen(cmd + ["-m", "device", "run", "--config", str(tmp_path / "d.json")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, cwd=ROOT, env=env)
    try:
        proc.stdin.write(("provision %s\n" % json.dumps(_config(tmp_path))).encode())
        proc.stdin.flush()
        time.sleep(1.5)
        proc.stdin.write(b"login 2468\nstatus\nstatus now\n")
        proc.stdin.flush()
        time.sleep(2)
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0]
    replies = [json.loads(line) for line in out.splitlines()]
    assert replies[0]["ok"] and replies[0]["reboot_needed"] is False
    assert replies[1] == {"ok": True, "role": "tech", "idle_timeout_s": 600}
    assert replies[2]["ok"] and replies[2]["device_id"] == "T-0901"
    assert replies[3]["error"] == "bad_argument"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_every_command_has_help(runtime, tmp_path):
    for args in (["--help"], ["help"], ["run", "--help"], ["console", "--help"],
                 ["coupon-check", "--help"]):
        p = _device(runtime, args, b"")
        assert p.returncode == 0, (args, p.stderr)
        assert b"usage:" in p.stdout, args
    assert _device(runtime, ["coupon-check", "--frobnicate"], b"").returncode == 2
    p = _device(runtime, ["console", "--config", str(tmp_path / "d.json")],
                b"help\nhelp me\n")
    replies = [json.loads(line) for line in p.stdout.splitlines()]
    names = [c["command"] for c in replies[0]["commands"]]
    assert "status" in names and "coupon check" in names and "factory-reset" in names
    assert replies[1]["error"] == "bad_argument"


def test_host_sim_commands_have_help():
    for args in (["--help"], ["serve", "--help"], ["register", "--help"],
                 ["report", "--help"]):
        p = subprocess.run([sys.executable, "-m", "host_sim"] + args, cwd=ROOT,
                           capture_output=True, timeout=30)
        assert p.returncode == 0 and b"usage" in p.stdout.lower(), (args, p.stderr)


def test_issued_csv_has_plain_line_ends_and_a_pasted_cr_is_named(tmp_path):
    from host_sim.issuance import write_csv

    vec = json.load(open(os.path.join(ROOT, "..", "shared", "vectors", "coupons.json")))
    case = [c for c in vec["cases"] if c["verdict"] == "ok"][0]
    path = write_csv(str(tmp_path / "c.csv"), [case["token"]])
    raw = open(path, "rb").read()
    assert b"\r" not in raw and raw.count(b"\n") == 2
    args = ["--root-key", vec["root_pub_hex"], "--trustlist", vec["trustlist"],
            "--store", vec["store"], "--currency", vec["currency"], "--now", str(vec["now"]),
            "--total", str(case["total"])]
    p = subprocess.run([sys.executable, "-m", "device", "coupon-check"] + args
                       + [case["token"] + "\r"], cwd=ROOT, capture_output=True, timeout=30)
    # SPEC 2.3 step 1: a CR is not base45, so malformed, as on the terminal; stderr says why
    got = json.loads(p.stdout)
    assert got["verdict"] == "malformed" and p.returncode == 0, p.stdout
    assert b"line end" in p.stderr, p.stderr


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_list_options_take_the_text_or_a_file(runtime, tmp_path):
    vec = json.load(open(os.path.join(ROOT, "..", "shared", "vectors", "coupons.json")))
    case = [c for c in vec["cases"] if c["verdict"] == "revoked"][0]
    (tmp_path / "tl.txt").write_text(vec["trustlist"] + "\r\n")
    (tmp_path / "rl.txt").write_text(vec["revocations"] + "\n")
    base = ["coupon-check", "--root-key", vec["root_pub_hex"], "--store", vec["store"],
            "--currency", vec["currency"], "--now", str(vec["now"]), "--total",
            str(case["total"])]
    for tl, rl in ((vec["trustlist"], vec["revocations"]),
                   (str(tmp_path / "tl.txt"), str(tmp_path / "rl.txt"))):
        p = _device(runtime, base + ["--trustlist", tl, "--revocations", rl, case["token"]],
                    b"")
        assert json.loads(p.stdout)["verdict"] == "revoked", (p.stdout, p.stderr)
    p = _device(runtime, base + ["--trustlist", str(tmp_path / "nope"), case["token"]], b"")
    assert p.returncode == 2 and b"--trustlist" in p.stderr


def test_a_second_issuer_for_a_merchant_warns(tmp_path):
    keys = str(tmp_path / "keys")
    run = lambda *a: subprocess.run([sys.executable, "-m", "host_sim.issue", "--keys", keys]  # noqa: E731
                                    + list(a), cwd=ROOT, capture_output=True, timeout=30)
    assert run("init-root").returncode == 0
    first = run("issuer", "M-ACME")
    assert first.returncode == 0 and "warning" not in json.loads(first.stdout)
    second = run("issuer", "M-ACME")
    assert second.returncode == 0 and b"rotate" in second.stderr
    assert "rotate M-ACME" in json.loads(second.stdout)["warning"]
