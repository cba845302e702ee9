"""The ROMFS image of the agent's code (tests/support/romfs.py), which `make bench-heap
BENCH_HEAP_ARGS=--romfs` runs the terminal from: MicroPython mounts it and runs the sources'
commands from it with the same output, without a source file on its path."""
import json
import os
import subprocess

from tests.cpy.test_coupon_check_cli import MP, V, _args
from tests.support import romfs

ROOT = romfs.ROOT


def _check(case, image=None):
    args = ["coupon-check"] + _args(case["total"], case["token"])
    if image is None:
        cmd, env = [MP, "-m", "device"], {"MICROPYPATH": ROOT + ":.frozen"}
    else:
        cmd = [MP, os.path.join("tests", "mp_romfs_run.py"), "-m", "device"]
        env = {"MICROPYPATH": ".frozen", "ROMFS_IMAGE": image}
    p = subprocess.run(cmd + args, cwd=ROOT, env=dict(os.environ, **env), capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_image_layout_and_names(tmp_path):
    data = romfs.image()
    assert data[:3] == b"\xd2\xcd\x31" and len(data) % 2 == 0
    for name in (b"device", b"protocol", b"agent.mpy", b"cbor.mpy"):
        assert name in data
    assert b"__pycache__" not in data


def test_commands_run_from_the_image_as_from_the_sources(tmp_path):
    image = str(tmp_path / "agent.romfs")
    assert romfs.build(image) == os.path.getsize(image) > 0
    picks = [c for c in V["cases"] if c["name"] in ("pct_ok", "es256_pct_ok", "revoked_cti",
                                                    "truncated")]
    assert len(picks) == 4
    for case in picks:
        out = _check(case, image)
        assert out == _check(case), case["name"]
        assert json.loads(out)["verdict"] == case["verdict"], case["name"]


def test_nothing_comes_from_the_sources(tmp_path):
    image = str(tmp_path / "agent.romfs")
    romfs.build(image)
    script = tmp_path / "where.py"
    script.write_text("import sys, vfs\n"
                      "vfs.mount(vfs.VfsRom(open(%r, 'rb').read()), '/rom')\n"
                      "sys.path[:] = ['/rom', '.frozen']\n"
                      "import device.agent, protocol.cbor\n"
                      "print(device.agent.__file__, protocol.cbor.__file__)\n" % image)
    p = subprocess.run([MP, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, MICROPYPATH=".frozen"))
    assert p.stdout.split() == ["/rom/device/agent.mpy", "/rom/protocol/cbor.mpy"], p.stderr
