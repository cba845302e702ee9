# The terminal's self-test for the console's `selftest`: each peripheral's state, a storage
# write/read-back probe, the clock, the broker link, the trust lists and the journal's health.
from device import config, crypto
from device.trust.lists import TRUST


def run(peripherals, fs, data_dir, clock, link_state, trust, journal):
    """The self-test as reply fields: passed is False when a driver, storage, the clock or the
    journal fails (damage not yet acknowledged); an offline link or no trust list only warns.
    journal() -> {"bad_records", "skipped_bytes", "unacknowledged"}."""
    failures = []
    warnings = []
    drivers = {}
    for name in config.DRIVER_KEYS:
        st = peripherals.state(name)
        drivers[name] = st
        if st.get("error"):
            failures.append(name)
    storage = storage_check(fs, data_dir)
    if not storage["writable"]:
        failures.append("storage")
    clk = {"now": clock.now(), "trusted": clock.trusted()}
    if not clk["trusted"]:
        failures.append("clock")
    link = {"connected": link_state.online}
    if not link_state.online:
        warnings.append("link")
    if not trust.has(TRUST):
        warnings.append("trustlist")
    jr = journal()
    if jr.get("unacknowledged"):
        failures.append("journal")
    return {"passed": not failures, "failures": failures, "warnings": warnings,
            "drivers": drivers, "link": link, "storage": storage, "clock": clk,
            "trust_ver": trust.trust_ver, "rev_ver": trust.rev_ver,
            "trust_keys": trust.keys_count(), "revoked": trust.revoked_count(),
            "blocked_members": trust.blocked_members_count(), "journal": jr}


def storage_check(fs, data_dir):
    path = data_dir + "/selftest.tmp"
    probe = crypto.random_bytes(16)
    try:
        fs.write_atomic(path, probe)
        ok = fs.read(path) == probe
        fs.remove(path)
    except OSError as e:
        return {"writable": False, "error": str(e)}
    return {"writable": ok, "error": None if ok else "read back differs"}
