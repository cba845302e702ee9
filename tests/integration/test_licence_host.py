"""The service licence end to end through the host's own tools (issues 13 and 10's engine):
`python -m host_sim licence plan/issue/renew` signs PL1 licences with the keystore's root key and
queues them in the host outbox; the serving host sends the current one after every hello and a
renewal at once; the terminal installs it (both runtimes)."""
import subprocess
import sys

import pytest

from tests.support.shop import ROOT
from tests.support.terminal import wait_until

DAY = 86400


def licence(shop, *argv):
    p = subprocess.run([sys.executable, "-m", "host_sim", "licence", "--db", shop.db,
                        "--keystore", shop.keys] + list(argv), cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_host_issued_licence_reaches_the_terminal_and_a_renewal_follows(shop, runtime):
    shop.run_host()
    t = shop.terminal("T-HL" + runtime[:2].upper(), runtime, status_interval_s=1)
    st = t.wait_status(lambda s: s["online"], 30)
    assert st["lic"]["st"] == "none"
    licence(shop, "plan", "basic", "--price", "9900", "--cycle", "month")
    licence(shop, "issue", t.device_id, "--plan", "basic")
    st = t.wait_status(lambda s: s["lic"]["st"] == "ok", 10)
    first_exp = st["lic"]["exp"]
    assert first_exp > 0
    # A renewal is pushed at once and the terminal takes the later licence.
    licence(shop, "renew", t.device_id)
    st = t.wait_status(lambda s: (s["lic"]["exp"] or 0) > first_exp, 10)
    assert st["lic"]["st"] == "ok"
    # After a restart the hello brings the current licence again (and the terminal kept it).
    t.stop()
    t.start()
    st = t.wait_status(lambda s: s["online"], 30)
    assert st["lic"]["exp"] > first_exp
    wait_until(lambda: "licence" in shop.host_log(), 10, shop.host_log)
