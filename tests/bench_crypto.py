# Signature-verify benchmark of the crypto port, same script on both runtimes; one JSON line.
#   PYTHONPATH=. .venv/bin/python tests/bench_crypto.py
#   MICROPYPATH=.:.frozen .venv/bin/micropython tests/bench_crypto.py
# Per backend available here ("cryptography" on CPython, "pure" on both) and alg:
#   <alg>_ms       mean of 50 verifies of a 150-byte message after warm-up, key cached
#   <alg>_best_ms  best mean over 5 batches of 10 (less disturbed by other load on the machine)
#   <alg>_first_ms one verify under a key not seen before (decode, comb table, verify); the
#                  fixed-base tables are warm by then
# and on MicroPython table_bytes: heap held by one key's comb table per alg.
import binascii
import gc
import json
import sys

from device import crypto
from device.crypto import ed25519, p256

MICRO = sys.implementation.name == "micropython"
if MICRO:
    import time

    def _us():
        return time.ticks_us()

    def _since(t0):
        return time.ticks_diff(time.ticks_us(), t0)
else:
    from time import perf_counter

    def _us():
        return perf_counter()

    def _since(t0):
        return (perf_counter() - t0) * 1e6

MSG = bytes(range(150))
ED_PUB = binascii.unhexlify("03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8")
ED_SIG = binascii.unhexlify(
    "ac372fd7f70bce716dfb3720dc248561475c3fcfa1b0e57201e25246d3290ca7"
    "6d24d424bed1c5cf6407ec75fdc97c0abbec3962c2e49b7e047f3e5c2e18240b")
ES_PUB = binascii.unhexlify(
    "04471c3e758c4904285bba7e53118ed0f524adeb0757d25bd2f8e7b0d76dfa714c"
    "dd520f7aca8a8b917acc37f51de8f0c9bbe3ad858382e702dc25a12d09f7a858")
ES_SIG = binascii.unhexlify(
    "a9a991b62bd1a670c91f2af6d4694a42b5c422db204695d0f64f7593b7fdeb90"
    "2d0d38e3beec25484449a28a66d89dee16fc17b1f16a56e15da23ce302c1ed4f")


def _mean_ms(fn, n):
    t0 = _us()
    for _ in range(n):
        fn()
    return _since(t0) / n / 1000


def _measure(out, name, verify, first):
    assert verify() and first()
    for _ in range(5):
        verify()
    out[name + "_ms"] = _round(_mean_ms(verify, 50))
    out[name + "_best_ms"] = _round(min(_mean_ms(verify, 10) for _ in range(5)))
    out[name + "_first_ms"] = _round(min(_mean_ms(first, 1) for _ in range(3)))


def _round(ms):
    return float("%.3f" % ms)  # round() leaves long float reprs on MicroPython


def _pure():
    """The pure modules called directly (what the port runs on MicroPython)."""
    out = {}
    A = ed25519.decode_point(ED_PUB)
    Q = p256.decode_point(ES_PUB)
    _measure(out, "ed25519", lambda: ed25519.verify_point(A, ED_PUB, MSG, ED_SIG),
             lambda: ed25519.verify(ED_PUB, MSG, ED_SIG))
    _measure(out, "es256", lambda: p256.verify_point(Q, MSG, ES_SIG),
             lambda: p256.verify(ES_PUB, MSG, ES_SIG))
    return out


def _port():
    """device.crypto.verify, the call the agent makes (key cache included)."""
    out = {}
    for name, alg, pub, sig in (("ed25519", crypto.EDDSA, ED_PUB, ED_SIG),
                                ("es256", crypto.ES256, ES_PUB, ES_SIG)):
        _measure(out, name, lambda alg=alg, pub=pub, sig=sig: crypto.verify(alg, pub, MSG, sig),
                 lambda alg=alg, pub=pub, sig=sig: crypto._verify(
                     alg, crypto._decode(alg, pub), pub, MSG, sig))
    return out


def _table_bytes(out):
    for name, mod, x, y in (("ed25519", ed25519, ed25519._BX, ed25519._BY),
                            ("es256", p256, p256._GX, p256._GY)):
        gc.collect()
        free = gc.mem_free()
        table = mod._comb_table(x, y)
        gc.collect()
        out[name + "_table_bytes"] = free - gc.mem_free()
        del table


def main():
    result = {"rt": "micropython" if MICRO else "cpython", "msg_bytes": len(MSG)}
    result[crypto.backend] = _port()
    if MICRO:
        _table_bytes(result["pure"])
    else:
        result["pure"] = _pure()
    print(json.dumps(result))


main()
