# The terminal's self-test for the console's `selftest`: each peripheral driver's state, a
# storage write/read-back probe, the clock, the broker link and the trust lists.
import os

from device import config


def run(a, fs):
    """The self-test of agent a (fs: its storage) as reply fields: passed is False when a
    driver, storage or the clock fails; an offline link or no trust list only warns."""
    failures = []
    warnings = []
    drivers = {}
    started = bool(a.drivers) or a.display is not None or a.printer is not None
    errors = getattr(a, "driver_errors", None) or {}
    for name in config.DRIVER_KEYS:
        st = driver_state(a, name, started, errors)
        drivers[name] = st
        if st.get("error"):
            failures.append(name)
    storage = storage_check(fs, a.data_dir)
    if not storage["writable"]:
        failures.append("storage")
    clock = {"now": a.clock.now(), "trusted": a.clock.trusted()}
    if not clock["trusted"]:
        failures.append("clock")
    link = {"connected": a.online}
    if not a.online:
        warnings.append("link")
    if not a.trust_ver():
        warnings.append("trustlist")
    return {"passed": not failures, "failures": failures, "warnings": warnings,
            "drivers": drivers, "link": link, "storage": storage, "clock": clock,
            "trust_ver": a.trust_ver(), "rev_ver": a.rev_ver(),
            "trust_keys": a.trust.keys_count(),
            "revoked": a.trust.revoked_count()}


def storage_check(fs, data_dir):
    path = data_dir + "/selftest.tmp"
    probe = os.urandom(16)
    try:
        fs.write_atomic(path, probe)
        ok = fs.read(path) == probe
        fs.remove(path)
    except OSError as e:
        return {"writable": False, "error": str(e)}
    return {"writable": ok, "error": None if ok else "read back differs"}


def driver_state(a, name, started, errors):
    if a.cfg.get(name) is None:
        return {"configured": False}
    if name in errors:
        return {"configured": True, "open": False, "error": errors[name]}
    if not started:
        return {"configured": True, "open": False, "error": None, "note": "agent not running"}
    st = None
    if name == "display" and a.display is not None:
        st = a.display.state()
    elif name == "printer" and a.printer is not None:
        st = a.printer.state()
    elif name in a.drivers:
        st = a.drivers[name][0].state()
        framer = {"scanner": "scan_framer", "keypad": "key_framer"}.get(name)
        if framer and getattr(a, framer, None) is not None:
            st.update(getattr(a, framer).state())
    if st is None:
        return {"configured": True, "open": False, "error": "not open"}
    st["configured"] = True
    st["open"] = st.get("open", True)
    st["error"] = None if st["open"] else "closed"
    return st
