# Coupon verifier benchmark, same script on both runtimes; prints one JSON line.
#   PYTHONPATH=. .venv/bin/python tests/bench_coupon.py
#   MICROPYPATH=.:.frozen .venv/bin/micropython tests/bench_coupon.py
# check_ms_*: a whole SPEC 2.3 check of a shared vector; verify_ms_*: crypto.verify alone on the
# same signature; check_without_verify_ms: the verifier's own work; check_alloc_bytes_*
# (MicroPython): bytes allocated by one check with the GC off, an upper bound of its peak heap;
# revoked_10k_*_bytes: heap of 10 000 revoked 16-byte ctis as the sorted blob the store uses and
# as a plain set; revoked_lookup_us: one miss in the 10 000-entry blob.
# member_check_ms_*: a whole SPEC 8.1 check of a member card of tests/fixtures/member_codes.json
# (steps 1-8 shared with coupons, then the revocation list's "mem"), same runtime, same run;
# blocked_2k_members_*_bytes: 2 000 "mem" entries as the store keeps them (BlockedMembers) and
# as a dict mid -> ep.
import gc
import json
import os
import sys
import time

from device import crypto
from device.coupons.verifier import Verifier
from device.members.verifier import MemberVerifier
from device.trust import lists as trust
from device.trust.lists import BlockedMembers, RevokedSet, TrustStore
from protocol import base45

MICRO = sys.implementation.name == "micropython"
VECTORS = "../shared/vectors/coupons.json"
MEMBER_CODES = "tests/fixtures/member_codes.json"
MEMBER_CASES = (("es256", "static_card_es256_ok"), ("eddsa", "static_card_ok"))

if MICRO:
    def _us():
        return time.ticks_us()

    def _since(t0):
        return time.ticks_diff(time.ticks_us(), t0)
else:
    def _us():
        return time.perf_counter()

    def _since(t0):
        return (time.perf_counter() - t0) * 1e6


def _ms_per(fn, n):
    fn()  # warm: caches, first import of big-int paths
    gc.collect()
    t0 = _us()
    for _ in range(n):
        fn()
    return _since(t0) / n / 1000


def _line(pairs):
    """One JSON object, keys in this order, floats with 3 decimals on both runtimes."""
    out = []
    for k, v in pairs:
        if type(v) is float:
            v = "%.3f" % v
        else:
            v = json.dumps(v)
        out.append("%s: %s" % (json.dumps(k), v))
    return "{" + ", ".join(out) + "}"


def _alloc(fn):
    """Bytes allocated by one call with the GC off (MicroPython), None elsewhere."""
    if not MICRO:
        return None
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        fn()
        return gc.mem_alloc() - before
    finally:
        gc.enable()
        gc.collect()


def _heap_of(build):
    """Heap kept by what build() returns (made from a 10 000-entry list freed afterwards)."""
    if MICRO:
        gc.collect()
        f0 = gc.mem_free()
        keep = build()
        gc.collect()
        used = f0 - gc.mem_free()
        del keep
        gc.collect()
        return used
    import tracemalloc
    tracemalloc.start()
    keep = build()
    used = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del keep
    return used


def _ctis(n):
    return [os.urandom(16) for _ in range(n)]


def _members(n):
    """(alg, ms per member code check) for the fixture's ES256 and EdDSA cards."""
    with open(MEMBER_CODES) as f:
        m = json.load(f)
    store = TrustStore(None, None, [bytes.fromhex(m["root_key"])])
    store.install_text(m["trustlist"], trust.TRUST)
    store.install_text(m["revocations"], trust.REVOCATIONS)
    ver = MemberVerifier(store)
    tokens = {}
    for c in m["cases"]:
        tokens[c["name"]] = c["token"]
    out = []
    for alg, name in MEMBER_CASES:
        tok = tokens[name]

        def one(tok=tok):
            assert ver.check(tok, m["now"])["verdict"] == "ok"
        out.append(("member_check_ms_" + alg, _ms_per(one, n)))
    return out


def _mids(n):
    return [["M-%06d" % i, i % 5] for i in range(n)]


def main():
    with open(VECTORS) as f:
        v = json.load(f)
    store = TrustStore(None, None, [bytes.fromhex(v["root_pub_hex"])])
    store.install_text(v["trustlist"], trust.TRUST)
    store.install_text(v["revocations"], trust.REVOCATIONS)
    ver = Verifier(store)
    cases = {}
    for c in v["cases"]:
        cases[c["name"]] = c
    n = 40 if MICRO else 300
    out = [("rt", "micropython" if MICRO else "cpython"), ("crypto", crypto.backend)]
    for alg, name in (("es256", "es256_pct_ok"), ("eddsa", "pct_ok")):
        tok = cases[name]["token"]

        def one(tok=tok):
            r = ver.check(tok, 10000, v["store"], v["currency"], v["now"])
            assert r["verdict"] == "ok"
        prot_b, prot, unprot, payload, sig = trust.decode_sign1(base45.decode(tok[4:]))
        key = store.key(trust.header_kid(prot, unprot))
        tbs = trust.sig_structure(prot_b, payload)
        assert crypto.verify(key["alg"], key["pub"], tbs, sig)
        out.append(("check_ms_" + alg, _ms_per(one, n)))
        out.append(("verify_ms_" + alg, _ms_per(
            lambda key=key, tbs=tbs, sig=sig: crypto.verify(key["alg"], key["pub"], tbs, sig),
            n)))
        out.append(("check_alloc_bytes_" + alg, _alloc(one)))
    # The verifier's own work (base45, CBOR, claims, lookups) with the signature check stubbed.
    real = crypto.verify
    crypto.verify = lambda alg, pub, msg, sig: True
    try:
        tok = cases["pct_ok"]["token"]
        out.append(("check_without_verify_ms", _ms_per(
            lambda: ver.check(tok, 10000, v["store"], v["currency"], v["now"]), n * 5)))
    finally:
        crypto.verify = real
    out.append(("revoked_10k_blob_bytes", _heap_of(lambda: RevokedSet(_ctis(10000)))))
    out.append(("revoked_10k_set_bytes", _heap_of(lambda: set(_ctis(10000)))))
    rs = RevokedSet(_ctis(10000))
    probe = os.urandom(16)
    out.append(("revoked_lookup_us", _ms_per(lambda: probe in rs, 200) * 1000))
    rs = None
    gc.collect()
    out += _members(n)
    out.append(("blocked_2k_members_blob_bytes", _heap_of(lambda: BlockedMembers(_mids(2000)))))
    out.append(("blocked_2k_members_dict_bytes",
                _heap_of(lambda: dict((m, e) for m, e in _mids(2000)))))
    print(_line(out))


main()
