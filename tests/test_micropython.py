"""Runs every tests/both module under the MicroPython unix port (one pytest case per module)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MP = os.path.join(os.path.dirname(sys.executable), "micropython")
MODULES = sorted(n[:-3] for n in os.listdir(os.path.join(ROOT, "tests", "both"))
                 if n.startswith("test_") and n.endswith(".py"))


@pytest.mark.parametrize("module", MODULES)
def test_module_on_micropython(module):
    if not os.path.exists(MP):
        pytest.fail("MicroPython unix port missing: run make test (it installs it)")
    env = dict(os.environ, MICROPYPATH=ROOT + ":.frozen")
    p = subprocess.run([MP, "-X", "heapsize=8M", "tests/mp_run.py", "tests.both." + module],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-6000:] + p.stderr[-3000:]
    assert " 0 failed" in p.stdout and "IMPORT ERROR" not in p.stdout
