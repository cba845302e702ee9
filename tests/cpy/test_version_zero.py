"""SPEC 2.2 and 8.5: a list or a licence installs when its `ver` is greater than the installed
one; with none installed, any `ver` is newer, 0 included (it used to be refused as a
rollback: the terminal counted "none" as version 0). CPython: the lists and licences are
signed here (tests/support)."""
import os

import pytest

from device.licence.installed import InstalledLicence
from device.licence.reading import LicenceError
from device.metrics import Metrics
from device.ports.storage import PosixFS
from device.trust.lists import TrustError, TrustStore
from tests.both.test_licence import Clock, Log, Ticks, fx
from tests.support import coupons as gen
from tests.support import licences

ROOT = gen.Key("root")


def store(d=None):
    fs = PosixFS() if d else None
    return TrustStore(fs, d or "", [ROOT.pub]).open()


def test_lists_of_version_0_install_once(tmp_path):
    d = str(tmp_path / "trust")
    s = store(d)
    assert not s.has("trustlist")
    assert s.install_trustlist(gen.trust_list(ROOT, 0, [gen.Key("issuer")])) == 0
    assert s.install_revocations(gen.revocation_list(ROOT, 0, [b"\x01" * 16], [])) == 0
    assert s.has("trustlist") and s.keys_count() == 1 and s.is_revoked(b"\x01" * 16, "x")
    again = store(d)  # after a reboot: loaded from flash, and 0 is now the installed ver
    assert again.has("trustlist") and again.trust_ver == 0 and again.keys_count() == 1
    with pytest.raises(TrustError) as e:
        again.install_trustlist(gen.trust_list(ROOT, 0, [gen.Key("other")]))
    assert e.value.code == "rollback"
    assert again.install_trustlist(gen.trust_list(ROOT, 1, [gen.Key("other")])) == 1


def test_a_licence_of_version_0_installs_when_none_is(tmp_path):
    d = str(tmp_path / "lic")
    os.makedirs(d)
    f = fx()
    trust = TrustStore(None, "", [bytes.fromhex(f["root_hex"])])
    lic = InstalledLicence(PosixFS(), d, trust, f["device"], Clock(), Metrics(), Log(),
                           Ticks()).open()
    root = licences.root_key()
    assert lic.install(licences.licence(root, 0, f["device"], f["now"] + 90 * 86400))["ver"] == 0
    with pytest.raises(LicenceError) as e:
        lic.install(licences.licence(root, 0, f["device"], f["now"] + 99 * 86400))
    assert e.value.code == "rollback"
