"""`make bench`: the speed figures, each against a baseline measured in the same run.

    PYTHONPATH=. .venv/bin/python -m tests.bench [--only coupons,queue,drain] [--reps 3]
        [--drain-n 5000] [--drain-limit-s 150] [--no-doc] [--doc-from var/bench/last.json]

Sections (each rewrites its own part of docs/bench.md, between <!-- bench:NAME --> and
<!-- /bench:NAME -->; everything else in the file is left as it is):
- coupons: tests/bench_coupon.py and tests/bench_crypto.py as subprocesses on CPython and on
  MicroPython, --reps times each, alternating, medians; here on CPython the bare `cryptography`
  verify of the same signatures and the check with the pure verifiers; on MicroPython the heap
  one check needs (a ballast probe fed to micropython on stdin).
- queue: tests/bench_queue.py on both runtimes (it takes its own medians), booting the same
  journal files.
- drain: tests/bench_drain.py (mosquitto, host_sim serve, a terminal process), a CPython then a
  MicroPython terminal.
Prints a table; the raw figures go to var/bench/last.json.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
MP = os.path.join(os.path.dirname(sys.executable), "micropython")
DOC = os.path.join(ROOT, "docs", "bench.md")
VECTORS = os.path.join(ROOT, "..", "shared", "vectors", "coupons.json")
SECTIONS = ("coupons", "queue", "drain")
CASES = (("es256", "es256_pct_ok", "ES256"), ("eddsa", "pct_ok", "EdDSA"))
MP_QUEUE_HEAP = "4M"  # the pending records stay on flash: 5000 need a few hundred KiB
COMMAND = "make bench"
LONG_COMMAND = "PYTHONPATH=. .venv/bin/python -m tests.bench"

# The smallest free heap with which one coupon check still succeeds on MicroPython: fill the
# heap with ballast until only `room` bytes are free, check, binary search on room. Warm: the
# comb tables built; first: as after a boot, the base point's and the key's tables built by it.
HEAP_PROBE = """
import gc
import json

from device import crypto

from device.trust import lists as trust
from device.coupons.verifier import Verifier
from device.trust.lists import TrustStore

with open("../shared/vectors/coupons.json") as f:
    v = json.load(f)
store = TrustStore(None, None, [bytes.fromhex(v["root_pub_hex"])])
store.install_text(v["trustlist"], trust.TRUST)
store.install_text(v["revocations"], trust.REVOCATIONS)
ver = Verifier(store)
args = (10000, v["store"], v["currency"], v["now"])
tokens = {}
for c in v["cases"]:
    if c["name"] == "es256_pct_ok":
        tokens["es256"] = c["token"]
    elif c["name"] == "pct_ok":
        tokens["eddsa"] = c["token"]
v = None


def check(tok):
    return ver.check(tok, *args)["verdict"] == "ok"


def fits(tok, room, first):
    if first:
        crypto.drop_tables()
    gc.collect()
    ballast = [None] * 4096
    i = 0
    size = 65536
    while size >= 16 and i < len(ballast):
        while i < len(ballast) and gc.mem_free() - size - 64 > room:
            try:
                ballast[i] = bytearray(size)
            except MemoryError:
                break
            i += 1
        size //= 2
    try:
        ok = check(tok)
    except MemoryError:
        ok = False
    ballast = None
    gc.collect()
    return ok


out = {}
for alg in tokens:
    tok = tokens[alg]
    assert check(tok)
    for first in (False, True):
        lo, hi = 0, 1 << 20
        while hi - lo > 256:
            mid = (lo + hi) // 2
            if fits(tok, mid, first):
                hi = mid
            else:
                lo = mid
        out[alg + ("_first" if first else "")] = hi
print(json.dumps(out))
"""


class BenchError(RuntimeError):
    pass


# -- running things ------------------------------------------------------------------------------
def _env():
    return dict(os.environ, PYTHONPATH=ROOT, MICROPYPATH=ROOT + ":.frozen")


def run_json(cmd, timeout, stdin=None):
    """Runs cmd in the repo root and returns the JSON of its last stdout line."""
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, timeout=timeout,
                           input=stdin.encode() if stdin is not None else None)
    except subprocess.TimeoutExpired:
        raise BenchError("%s: no answer within %d s" % (" ".join(cmd), timeout))
    lines = p.stdout.decode(errors="replace").strip().splitlines()
    if p.returncode != 0 or not lines:
        raise BenchError("%s failed (exit %d): %s" % (" ".join(cmd), p.returncode,
                                                      p.stderr.decode(errors="replace")[-1500:]))
    return json.loads(lines[-1])


def run_lines(cmd, timeout):
    """Runs cmd in the repo root and returns the JSON of every stdout line that is JSON."""
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError("%s: no answer within %d s" % (" ".join(cmd), timeout))
    out = []
    for line in p.stdout.decode(errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    if p.returncode != 0 or not out:
        raise BenchError("%s failed (exit %d): %s" % (" ".join(cmd), p.returncode,
                                                      p.stderr.decode(errors="replace")[-1500:]))
    return out


def med(values):
    return statistics.median(values)


def _med_key(runs, *path):
    vals = []
    for r in runs:
        for k in path:
            r = r[k]
        vals.append(r)
    return med(vals)


# -- machine -------------------------------------------------------------------------------------
def machine():
    mp = subprocess.run([MP, "-c", "import sys; v = sys.implementation.version;"
                         " print('%d.%d.%d' % v[:3] + ('-' + v[3] if len(v) > 3 and v[3] else '')"
                         " + ' (' + sys.version.split('; ')[1] + ')')"],
                        cwd=ROOT, env=_env(), capture_output=True, timeout=30)
    return {"nproc": os.cpu_count(), "python": sys.version.split()[0],
            "micropython": mp.stdout.decode().strip() or "unknown",
            "cpu": _cpu_model()}


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _load():
    return "%.1f" % os.getloadavg()[0]


# -- coupons -------------------------------------------------------------------------------------
def _coupon_material():
    """(verifier, args, {alg: (token, key, tbs, sig)}) from the shared vectors."""
    from device.coupons.verifier import Verifier
    from device.trust import lists as trust
    from device.trust.lists import TrustStore
    from protocol import base45

    with open(VECTORS) as f:
        v = json.load(f)
    store = TrustStore(None, None, [bytes.fromhex(v["root_pub_hex"])])
    store.install_text(v["trustlist"], trust.TRUST)
    store.install_text(v["revocations"], trust.REVOCATIONS)
    tokens = {c["name"]: c["token"] for c in v["cases"]}
    out = {}
    for alg, name, _ in CASES:
        tok = tokens[name]
        prot_b, prot, unprot, payload, sig = trust.decode_sign1(base45.decode(tok[4:]))
        key = store.key(trust.header_kid(prot, unprot))
        out[alg] = (tok, key, bytes(trust.sig_structure(prot_b, payload)), bytes(sig))
    return Verifier(store), (10000, v["store"], v["currency"], v["now"]), out


def _ms_per(fn, n):
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1000


def bare_cryptography(material, n=300):
    """ms per `cryptography` verify of the coupon signatures: key objects and DER made once."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    out = {}
    for alg, (_, key, tbs, sig) in material.items():
        if alg == "eddsa":
            pub = Ed25519PublicKey.from_public_bytes(key["pub"])
            out[alg] = _ms_per(lambda pub=pub, tbs=tbs, sig=sig: pub.verify(sig, tbs), n)
        else:
            pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key["pub"])
            der = encode_dss_signature(int.from_bytes(sig[:32], "big"),
                                       int.from_bytes(sig[32:], "big"))
            out[alg] = _ms_per(lambda pub=pub, tbs=tbs, der=der: pub.verify(
                der, tbs, ec.ECDSA(hashes.SHA256())), n)
    return out


def pure_on_cpython(verifier, args, material, n=100):
    """Check and verify ms with device.crypto running the pure verifiers, as on MicroPython.

    device/crypto.py picks its backend at import from the runtime; here its two backend hooks
    are swapped for the pure modules' (the same code as its MicroPython branch) and put back.
    """
    from device import crypto
    from device.crypto import ed25519, p256

    def decode(alg, pub):
        return ed25519.decode_point(pub) if alg == crypto.EDDSA else p256.decode_point(pub)

    def verify(alg, key, pub, msg, sig):
        if alg == crypto.EDDSA:
            return ed25519.verify_point(key, pub, msg, sig)
        return p256.verify_point(key, msg, sig)

    saved = crypto._decode, crypto._verify
    crypto._keys.clear()
    crypto._decode, crypto._verify = decode, verify
    out = {}
    try:
        for alg, (tok, key, tbs, sig) in material.items():
            def one(tok=tok):
                assert verifier.check(tok, *args)["verdict"] == "ok"
            out["check_" + alg] = _ms_per(one, n)
            out["verify_" + alg] = _ms_per(
                lambda key=key, tbs=tbs, sig=sig: crypto.verify(key["alg"], key["pub"], tbs, sig),
                n)
    finally:
        crypto._decode, crypto._verify = saved
        crypto._keys.clear()
    return out


def bench_coupons(reps):
    verifier, args, material = _coupon_material()
    runs = {"cpy_coupon": [], "mp_coupon": [], "cpy_crypto": [], "mp_crypto": [], "bare": [],
            "pure": []}
    for _ in range(reps):
        runs["cpy_coupon"].append(run_json([PY, "tests/bench_coupon.py"], 120))
        runs["bare"].append(bare_cryptography(material))
        runs["mp_coupon"].append(run_json([MP, "tests/bench_coupon.py"], 120))
        runs["cpy_crypto"].append(run_json([PY, "tests/bench_crypto.py"], 120))
        runs["pure"].append(pure_on_cpython(verifier, args, material))
        runs["mp_crypto"].append(run_json([MP, "tests/bench_crypto.py"], 120))
    heap = run_json([MP], 120, stdin=HEAP_PROBE)  # deterministic: once is enough
    r = {"reps": reps, "heap_needed": heap, "alloc": {}, "table_bytes": {}}
    for alg, _, _ in CASES:
        short = "ed25519" if alg == "eddsa" else "es256"
        r[alg] = {
            "cpy_check_ms": _med_key(runs["cpy_coupon"], "check_ms_" + alg),
            "cpy_port_verify_ms": _med_key(runs["cpy_coupon"], "verify_ms_" + alg),
            "cpy_bare_ms": _med_key(runs["bare"], alg),
            "pure_check_ms": _med_key(runs["pure"], "check_" + alg),
            "pure_verify_ms": _med_key(runs["pure"], "verify_" + alg),
            "cpy_pure_point_ms": _med_key(runs["cpy_crypto"], "pure", short + "_ms"),
            "mp_check_ms": _med_key(runs["mp_coupon"], "check_ms_" + alg),
            "mp_verify_ms": _med_key(runs["mp_coupon"], "verify_ms_" + alg),
            "mp_point_ms": _med_key(runs["mp_crypto"], "pure", short + "_ms"),
            "mp_alloc_bytes": runs["mp_coupon"][-1]["check_alloc_bytes_" + alg],
            "mp_table_bytes": runs["mp_crypto"][-1]["pure"][short + "_table_bytes"],
            "mp_heap_bytes": heap[alg],
            "mp_first_heap_bytes": heap[alg + "_first"],
            "cpy_member_ms": _med_key(runs["cpy_coupon"], "member_check_ms_" + alg),
            "mp_member_ms": _med_key(runs["mp_coupon"], "member_check_ms_" + alg),
        }
    r["cpy_without_verify_ms"] = _med_key(runs["cpy_coupon"], "check_without_verify_ms")
    r["mp_without_verify_ms"] = _med_key(runs["mp_coupon"], "check_without_verify_ms")
    for rt in ("cpy", "mp"):
        last = runs[rt + "_coupon"][-1]
        r[rt + "_members_blob_bytes"] = last["blocked_2k_members_blob_bytes"]
        r[rt + "_members_dict_bytes"] = last["blocked_2k_members_dict_bytes"]
    return r


def coupon_rows(r):
    rows = []
    for alg, _, label in CASES:
        a = r[alg]
        rows += [
            ("CPython %s checks/s (whole SPEC 2.3 check)" % label,
             "%.0f/s" % (1000 / a["cpy_check_ms"]),
             "bare `cryptography` verify %.0f/s" % (1000 / a["cpy_bare_ms"]),
             "%.2f" % (a["cpy_bare_ms"] / a["cpy_check_ms"])),
            ("CPython %s device.crypto.verify" % label, _ms(a["cpy_port_verify_ms"]),
             "bare verify " + _ms(a["cpy_bare_ms"]),
             "%.2f" % (a["cpy_port_verify_ms"] / a["cpy_bare_ms"])),
            ("CPython, pure verifiers: %s check" % label, _ms(a["pure_check_ms"]),
             "pure verify, same signature " + _ms(a["pure_verify_ms"]),
             "%.2f" % (a["pure_check_ms"] / a["pure_verify_ms"])),
            ("MicroPython %s check" % label, _ms(a["mp_check_ms"]),
             "pure verify, same signature " + _ms(a["mp_verify_ms"]),
             "%.2f" % (a["mp_check_ms"] / a["mp_verify_ms"])),
            ("MicroPython %s check vs CPython pure" % label, _ms(a["mp_check_ms"]),
             "CPython pure check " + _ms(a["pure_check_ms"]),
             "%.2f" % (a["mp_check_ms"] / a["pure_check_ms"])),
            ("MicroPython %s verify, 150-byte message (bench_crypto)" % label,
             _ms(a["mp_point_ms"]), "CPython pure " + _ms(a["cpy_pure_point_ms"]),
             "%.2f" % (a["mp_point_ms"] / a["cpy_pure_point_ms"])),
            ("MicroPython heap one %s check needs" % label, _kb(a["mp_heap_bytes"]),
             "allocated by one check, GC off " + _kb(a["mp_alloc_bytes"]),
             "%.2f" % (a["mp_heap_bytes"] / a["mp_alloc_bytes"])),
            ("MicroPython heap the first %s check after a boot needs (comb tables built)"
             % label, _kb(a["mp_first_heap_bytes"]),
             "warm check " + _kb(a["mp_heap_bytes"]),
             "%.2f" % (a["mp_first_heap_bytes"] / a["mp_heap_bytes"])),
            ("CPython %s member code check (SPEC 8.1)" % label, _ms(a["cpy_member_ms"]),
             "coupon check " + _ms(a["cpy_check_ms"]),
             "%.2f" % (a["cpy_member_ms"] / a["cpy_check_ms"])),
            ("MicroPython %s member code check (SPEC 8.1)" % label, _ms(a["mp_member_ms"]),
             "coupon check " + _ms(a["mp_check_ms"]),
             "%.2f" % (a["mp_member_ms"] / a["mp_check_ms"])),
        ]
    return rows


def coupon_doc(r, meta):
    rows = coupon_rows(r)
    tables = [(label, [row for row in rows if label in row[0]]) for _, _, label in CASES]
    text = ["## Coupon checks and signature verifies (issue 3, item 8)", "",
            "How fast a terminal checks a scanned coupon (the whole SPEC 2.3 check of the shared "
            "vectors `es256_pct_ok` and `pct_ok`), against the bare signature verify of the same "
            "signature measured in the same run; and a member code (SPEC 8.1: the cards "
            "`static_card_es256_ok` and `static_card_ok` of tests/fixtures/member_codes.json) "
            "beside the coupon check of the same run (issue 9).", "",
            "**Method.** `tests/bench_coupon.py` and `tests/bench_crypto.py` run as subprocesses "
            "on CPython and on MicroPython, %d times each in turn; each figure is the median. "
            "On CPython `tests/bench.py` also times `cryptography`'s own `verify` of the same "
            "key, message and signature (key object and DER signature made once, outside the "
            "timing), and the same check with device.crypto switched in-process to the pure "
            "verifiers (device/crypto/ed25519.py, device/crypto/p256.py: what MicroPython runs). "
            "Heap on "
            "MicroPython: the smallest free heap with which one warm check still succeeds "
            "(ballast fills the rest; binary search to 256 B), beside the bytes one check "
            "allocates with the GC off (bench_coupon, an upper bound); and the same for the "
            "first check after a boot, which builds the base point's and the key's comb tables "
            "(`crypto.drop_tables()` before each try). Ratio: value / baseline "
            "(for the checks/s rows: checks/s / verifies/s, below 1 is slower than the bare "
            "verify)." % r["reps"], "",
            _how(meta), ""]
    for label, trows in tables:
        text += ["**%s**" % label, ""] + _table(trows) + [""]
    text += ["The verifier's own work (base45, CBOR, claims, lookups; signature check stubbed): "
             "%s on CPython, %s on MicroPython. Comb table per key on MicroPython: %s (ES256), "
             "%s (EdDSA), packed in 1 KiB pieces, kept for the 2 keys used last (a root "
             "key's is dropped once its list is checked)." % (
                 _ms(r["cpy_without_verify_ms"]), _ms(r["mp_without_verify_ms"]),
                 _kb(r["es256"]["mp_table_bytes"]), _kb(r["eddsa"]["mp_table_bytes"])),
             "",
             "Blocked member cards (the revocation list's `mem`, 2 000 entries of 8-character "
             "mids) as the trust store keeps them (sorted blobs, `BlockedMembers`): %s on "
             "MicroPython, %s on CPython; as a dict mid -> epoch %s and %s (bench_coupon). The "
             "decoded CBOR list they are built from is far larger while a list installs (on "
             "MicroPython about 140 B per `[mid, ep]` entry)." % (
                 _kb(r["mp_members_blob_bytes"]), _kb(r["cpy_members_blob_bytes"]),
                 _kb(r["mp_members_dict_bytes"]), _kb(r["cpy_members_dict_bytes"]))]
    return _wrap(text)


# -- queue ---------------------------------------------------------------------------------------
def bench_queue():
    journals = os.path.join("var", "bench", "journals-%d" % os.getpid())
    try:
        cpy = run_json([PY, "tests/bench_queue.py", "--journals", journals], 600)
        mp = run_json([MP, "-X", "heapsize=" + MP_QUEUE_HEAP, "tests/bench_queue.py",
                       "--journals", journals], 600)
    finally:
        shutil.rmtree(os.path.join(ROOT, journals), ignore_errors=True)
    return {"cpython": cpy, "micropython": mp}


BOOT_LABELS = (("pending_10", "10 pending"), ("pending_100", "100 pending"),
               ("pending_1000", "1000 pending"),
               ("pending_2000", "2000 pending (default offline_max_count)"),
               ("pending_5000", "5000 pending"),
               ("history_5000_expired", "5000 resolved + compacted, 10 pending, coupons expired"),
               ("history_5000_live", "5000 resolved + compacted, 10 pending, coupons live"))


def queue_rows(r):
    rows = []
    for rt, name in (("cpython", "CPython"), ("micropython", "MicroPython")):
        c = r[rt]["commit"]
        rows.append(("%s: sale commits/s with fsync (ChargeQueue.commit)" % name,
                     "%.0f/s (%s)" % (c["commit_per_s"], _ms(c["commit_ms"])),
                     "raw append + fsync, same bytes %.0f/s (%s)" % (c["raw_per_s"],
                                                                     _ms(c["raw_ms"])),
                     "%.2f" % c["commit_vs_raw"]))
    b = r["cpython"]["bytes"]
    rows += [
        ("journal bytes per charge (sale %d + result %d)" % (b["sale"], b["result"]),
         "%d B" % b["per_charge"], "CBOR payloads %d B" % b["payload_per_charge"],
         "%.2f" % (b["per_charge"] / b["payload_per_charge"])),
        ("written per charge online, compaction at retention %d, no coupon" % b["retention"],
         "%.0f B" % b["steady_no_coupon"], "appends only %d B" % b["per_charge"],
         "%.2f" % (b["steady_no_coupon"] / b["per_charge"])),
        ("same, one fresh coupon per sale (%d live in the ledger at the end)"
         % b["steady_ledger_entries"],
         "%.0f B" % b["steady_coupon"], "appends only %d B" % b["per_charge"],
         "%.2f" % b["steady_vs_append"]),
        ("written per charge while draining a %d-sale backlog" % b["backlog"],
         "%.0f B" % b["backlog_per_charge"], "appends only %d B" % b["per_charge"],
         "%.2f" % b["backlog_vs_append"]),
    ]
    for rt, name in (("cpython", "CPython"), ("micropython", "MicroPython")):
        boot = r[rt]["boot"]
        for key, label in BOOT_LABELS:
            c = boot[key]
            value = _ms(c["open_ms"])
            if "heap_bytes" in c:
                value += ", heap %s" % _kb(c["heap_bytes"])
            if _lost(c):
                value += " (replay skipped %d B: see below)" % (c["skipped"] + c["torn"])
            if key.startswith("history"):
                base = boot["pending_100"]
                rows.append(("%s boot: %s" % (name, label), value,
                             "boot with 100 pending, no history %s" % _ms(base["open_ms"]),
                             "%.2f" % (c["open_ms"] / base["open_ms"])))
            else:
                ratio = c["open_vs_read"]
                rows.append(("%s boot: %s" % (name, label), value,
                             "raw read of the %s file %s" % (_kb(c["bytes"]), _ms(c["read_ms"])),
                             "%.2f" % ratio if ratio < 10 else "%.0f" % ratio))
    return rows


def queue_doc(r, meta):
    b = r["cpython"]["bytes"]
    text = ["## Charge queue: commits, flash bytes, boot (issue 4, item 8)", "",
            "The pending-charge journal (device/sales/queue.py over device/ports/storage.py) on a "
            "real file in var/bench with PosixFS, on both runtimes, by `tests/bench_queue.py`.",
            "",
            "**Method.** Commits: ChargeQueue.commit of a one-coupon sale (one append, one "
            "fsync; on MicroPython `flush()`, which fsyncs) and a raw append + fsync of the same "
            "framed bytes to a file beside it, one of each in turn, %d batches of %d, medians; "
            "between two sales the agent's maintenance (queue.tidy(): the ledger's latest uses "
            "merged into its sorted rows) runs untimed, as the clerk does not wait for it. "
            "Flash bytes: bytes written through the FS (appends and whole-file replacements; "
            "file-system metadata not counted); amortised over %d charges from an empty journal, "
            "each sale resolved before the next and compacted when the agent would (more than "
            "`retention` resolved since the last compaction); the backlog figure resolves %d "
            "pending sales one by one the same way. Boot: ChargeQueue.open() on journals made "
            "by the queue itself (the same files on both runtimes), the file in the page cache, "
            "median of %d; the baseline is a plain read of the same file. The journals are made "
            "as the agent leaves them: each sale committed, a checkpoint written by its "
            "maintenance when due (device/sales/queue.py, CHECKPOINT_EVERY), so a boot reads "
            "the checkpoint, checks the journal's CRC and replays the tail. MicroPython runs "
            "with `-X heapsize=%s`; heap figures: what the open queue holds." % (
                r["cpython"]["commit"]["reps"], r["cpython"]["commit"]["batch"],
                b["steady_charges"], b["backlog"], 3, MP_QUEUE_HEAP), "",
            _how(meta), ""] + _table(queue_rows(r)) + [""]
    notes = _replay_notes(r)
    if notes:
        text += notes + [""]
    text.append("Flash bytes are the same on both runtimes (same records, same encoder); "
                "figures above are CPython's. The fsync cost on this virtual disk varies with "
                "the other load on the machine: compare ratios, not absolute rates, across runs.")
    return _wrap(text)


def _lost(c):
    return c.get("skipped") or c.get("torn") or c.get("bad_records")


def _replay_notes(r):
    notes = []
    for key, label in BOOT_LABELS:
        where = [name for rt, name in (("cpython", "CPython"), ("micropython", "MicroPython"))
                 if _lost(r[rt]["boot"][key])]
        if not where:
            continue
        c = r["cpython"]["boot"][key] if "CPython" in where else r["micropython"]["boot"][key]
        notes.append(
            "- **Replay lost data** (%s; %s): open() skipped %d bytes (torn %d, bad records "
            "%d) and came up with %d ledger entries. A record longer than device/ports/storage.py "
            "MAX_RECORD (65 536 B) is written but never read back: here the compaction "
            "snapshot of the ledger, so the coupon uses it held are forgotten at boot." % (
                label, " and ".join(where), c["skipped"], c["torn"], c["bad_records"],
                c["ledger"]))
    return notes


# -- drain ---------------------------------------------------------------------------------------
def bench_drain(n, limit_s):
    cmd = [PY, "-m", "tests.bench_drain", "--n", str(n), "--limit-s", str(limit_s),
           "--runtime", "both"]
    lines = run_lines(cmd, 2 * int(limit_s or 1800) + 600)
    return {"cpython": lines[0], "micropython": lines[1], "summary": lines[2], "n": n}


def _drain_value(r):
    if r["complete"]:
        return "%.1f s" % r["drain_s"]
    if r["stalled"]:
        return "stopped: %d of %d at the host, none for 30 s" % (r["received"], r["n"])
    return "%.1f s (projected from %d received in %.0f s)" % (r["drain_s"], r["received"],
                                                             r["elapsed_s"])


def drain_rows(res):
    rows = []
    for rt in ("cpython", "micropython"):
        r = res[rt]
        rows.append(("drain %d queued charges, %s terminal (window %d): terminal start to host "
                     "has all" % (r["n"], r["runtime"], r["window"]), _drain_value(r),
                     "raw paho QoS 1, %d x %d B, publisher start to subscriber has all: %.2f s"
                     % (r["n"], r["envelope_bytes"], r["raw_s"]),
                     "%.1f" % r["drain_vs_raw"] if r.get("drain_vs_raw") else "-"))
        rate = r.get("rate_per_s")
        if rate:
            rows.append(("%s terminal: drain rate (from 10 %% of the charges on)" % r["runtime"],
                         "%.0f charges/s" % rate,
                         "raw paho, first to last message %.0f msg/s" % r["raw_per_s"],
                         "%.3f" % (rate / r["raw_per_s"])))
        if r.get("raw_batch_size_per_s"):
            rows.append(("%s terminal: charges per message (batches of up to %d)"
                         % (r["runtime"], r["batch_items"]), "up to %d" % r["batch_items"],
                         "raw paho at the size of a full batch, %d B: %.0f msg/s"
                         % (r["batch_envelope_bytes"], r["raw_batch_size_per_s"]), ""))
        c, raw = r.get("cpu_us_per_charge"), r.get("raw_cpu_us_per_msg")
        if c and raw:
            rows.append(("%s terminal: CPU per charge (host %d + terminal %d + mosquitto %d "
                         "µs)" % (r["runtime"], c["host"], c["terminal"], c["broker"]),
                         "%d µs" % c["all"],
                         "raw: CPU per message (publisher %d + subscriber %d + mosquitto %d "
                         "µs) %d µs" % (raw["publisher"], raw["subscriber"], raw["broker"],
                                        raw["all"]),
                         "%.3f" % r["cpu_ratio"]))
        first = r.get("first_charge_s")
        rows += [("%s terminal: first charge at the host after terminal start" % r["runtime"],
                  "%.2f s" % first if first is not None else "none", "", ""),
                 ("%s terminal: charges the host saw twice (retransmissions)" % r["runtime"],
                  "%d" % r["host_repeats"], "", "")]
    return rows


def _steady_charges(r):
    """The charges in the drain's steady part (from 10 % of them on), what the CPU rows
    divide by."""
    return max(1, int(r["n"] * 0.9))


def _drain_reading(r):
    """What the CPU rows say about the ratio (the CPython terminal's run)."""
    c, raw = r.get("cpu_us_per_charge"), r.get("raw_cpu_us_per_msg")
    if not c or not raw:
        return []
    return [
        "**Reading.** CPU per charge and per raw message are each process's CPU time (Linux "
        "/proc) over the steady part of the run, divided by the charges or messages in it. "
        "Both runs keep the machine's 2 cores nearly busy (%.1f cores during the drain, %.1f "
        "during the raw runs), so the ratio follows their CPU costs: raw CPU per message over "
        "the drain's CPU per charge (last column, %.3f) predicts the measured ratio (%.3f); "
        "/proc counts in 10 ms ticks, so over a drain this short (%.1f s) each process's "
        "figure is good to about 10 ms / %d charges = %.1f µs. "
        "Sent one to a message, a charge is two QoS 1 messages (SPEC 3: the `charge`, then "
        "its `charge_result`), so with paho at the host its MQTT work alone is two raw "
        "messages and the ratio cannot reach 0.5 (it was 0.25 before 2026-12-04). Once the "
        "host grants it (docs/protocol.md, \"Charges in batches\"), charges due together go "
        "up to %d in one `charges` message (%d B sealed) and their results come back in one "
        "`charge_results`, so a message's MQTT, envelope and MAC work is shared by its "
        "charges and what is left per charge is deciding and storing it (host %d µs) and "
        "reading and resolving it (terminal %d µs). The ratio still counts raw messages of "
        "one charge's size (%d B), the stricter baseline: in the same run paho moved %.0f "
        "msg/s of the batch's size." % (
            r["rate_per_s"] * c["all"] / 1e6, r["raw_per_s"] * raw["all"] / 1e6,
            r["cpu_ratio"], r["ratio"], r["drain_s"], _steady_charges(r),
            10000.0 / _steady_charges(r), r["batch_items"], r["batch_envelope_bytes"],
            c["host"], c["terminal"], r["envelope_bytes"], r["raw_batch_size_per_s"]), ""]


def drain_doc(res, meta):
    r = res["cpython"]
    text = ["## Draining a queue of %d charges (issue 4, item 8; issue 14)" % r["n"], "",
            "A terminal comes back online with %d sales in its journal: how long until the "
            "host has every charge, against raw MQTT through the same broker." % r["n"], "",
            "**Method.** `tests/bench_drain.py --runtime both`: mosquitto %s on a loopback port "
            "of its own (tests/support/broker.py), `python -m host_sim serve` on a fresh "
            "database, one terminal registered with host_sim.registry whose journal holds %d "
            "pending one-coupon sales (%s) made by device.sales.queue and device.sales.sale, "
            "then `python -m device run` (CPython, then `micropython -X heapsize=%s -m device "
            "run` with a fresh host and journal). Timed from starting the terminal process to "
            "the host database holding all %d charges (polled every 0.1 s); the rate is taken "
            "from 10 %% of the charges on. Baseline, same broker, same run, after each drain: "
            "a paho publisher process sends %d QoS 1 messages of the size of one sealed "
            "`charge` envelope (%d B); timed from starting it to a paho subscriber having all "
            "of them, and its rate from first to last message, median of 3. No observer "
            "client runs during the drain (`--observe` adds one that times each round trip; "
            "it costs the 2 cores what the baseline does not pay). The drain is cut off "
            "after %s s and then projected at its measured rate." % (
                r.get("broker", "?"), r["n"], _kb(r["journal_bytes"]), "4M", r["n"], r["n"],
                r["envelope_bytes"],
                "%.0f" % meta["drain_limit_s"] if meta["drain_limit_s"] else "(never)"),
            "", _how(meta), ""] + _table(drain_rows(res)) + [""]
    text += ["`make bench-drain` runs the same and ends with one JSON line, the CPython "
             "terminal's: `%s`." % json.dumps(res["summary"]), ""]
    text += _drain_reading(r)
    text += ["Where a drain's time goes inside the host and the terminal: docs/decisions.md, "
             "\"Drain: answers not paced by paho\", \"Drain: what 0.5x raw would take\" and "
             "\"Charges in batches on the wire\".", ""]
    for rt in ("cpython", "micropython"):
        x = res[rt]
        if x["stalled"]:
            text.append("**The %s drain stopped** after %d charges; the terminal's log ends "
                        "with:\n\n    %s" % (rt, x["received"], x.get(
                            "device_log_tail", "").strip().replace("\n", "\n    ")))
    return _wrap(text)


# -- output --------------------------------------------------------------------------------------
def _ms(x):
    return "%.3g ms" % x if x < 100 else "%.0f ms" % x


def _kb(n):
    return "%d B" % n if n < 2048 else "%.0f KiB" % (n / 1024) if n < 2 << 20 else \
        "%.1f MiB" % (n / 1048576)


def _wrap(lines):
    """Paragraphs wrapped at 99 columns like the rest of the file; tables and blocks kept."""
    out = []
    for line in "\n".join(lines).split("\n"):
        if line.startswith(("|", "    ", "<!--")) or len(line) <= 99:
            out.append(line)
        else:
            out.append(textwrap.fill(line, 99, break_long_words=False, break_on_hyphens=False,
                                     subsequent_indent="  " if line.startswith("- ") else ""))
    return "\n".join(out)


def _table(rows):
    out = ["| figure | value | baseline (same run) | ratio |", "|---|---|---|---|"]
    for row in rows:
        out.append("| %s |" % " | ".join(row))
    return out


def _how(meta):
    return ("**Command.** `%s` (that is `%s`), %s. **Machine.** %d cores (%s), load average "
            "%s at the start of the section; CPython %s, MicroPython %s unix port." % (
                COMMAND, LONG_COMMAND, meta["date"], meta["nproc"], meta["cpu"], meta["load"],
                meta["python"], meta["micropython"]))


def print_table(name, rows):
    print("\n== %s" % name)
    w = max(len(r[0]) for r in rows)
    for r in rows:
        print("%-*s  %-28s  %-58s  %s" % (w, r[0], r[1], r[2], r[3]))


def rewrite_doc(path, sections):
    """Replaces each <!-- bench:NAME --> ... <!-- /bench:NAME --> block (or appends it)."""
    with open(path) as f:
        doc = f.read()
    for name, body in sections:
        start, end = "<!-- bench:%s -->" % name, "<!-- /bench:%s -->" % name
        block = "%s\n%s\n%s" % (start, body.rstrip(), end)
        i = doc.find(start)
        j = doc.find(end, i + 1) if i >= 0 else -1
        if i >= 0 and j >= 0:
            doc = doc[:i] + block + doc[j + len(end):]
        else:
            doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(doc)
    os.replace(tmp, path)


PLAN = (("coupons", coupon_rows, coupon_doc), ("queue", queue_rows, queue_doc),
        ("drain", drain_rows, drain_doc))


def doc_from(path):
    """The doc sections (and table) of an earlier run, e.g. after changing their wording."""
    with open(path) as f:
        results = json.load(f)
    docs = []
    for name, rows, doc in PLAN:
        if name in results:
            r = results[name]
            print_table(name, rows(r))
            docs.append((name, doc(r, dict(results["meta"], load=r.get("load", "?")))))
    rewrite_doc(DOC, docs)
    print("\ndocs/bench.md: rewrote %s from %s" % (", ".join(n for n, _ in docs), path))
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tests.bench")
    p.add_argument("--only", default=",".join(SECTIONS), help="comma list of " + ", ".join(
        SECTIONS))
    p.add_argument("--reps", type=int, default=3, help="runs of each coupon/crypto script")
    p.add_argument("--drain-n", type=int, default=5000)
    p.add_argument("--drain-limit-s", type=float, default=150.0,
                   help="stop waiting for the drain after this long and project (0: never)")
    p.add_argument("--no-doc", action="store_true", help="do not rewrite docs/bench.md")
    p.add_argument("--doc-from", metavar="JSON",
                   help="measure nothing: rewrite the sections from a saved var/bench/last.json")
    args = p.parse_args(argv)
    if args.doc_from:
        return doc_from(args.doc_from)
    only = [s for s in args.only.split(",") if s]
    for s in only:
        if s not in SECTIONS:
            p.error("unknown section %r" % s)
    t_start = time.monotonic()
    meta = machine()
    meta["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%MZ")
    meta["drain_limit_s"] = args.drain_limit_s
    print("bench on %d cores, CPython %s, MicroPython %s" % (meta["nproc"], meta["python"],
                                                            meta["micropython"]))
    results = {"meta": meta}
    docs = []
    runs = {"coupons": lambda: bench_coupons(args.reps), "queue": bench_queue,
            "drain": lambda: bench_drain(args.drain_n, args.drain_limit_s)}
    for name, rows, doc in PLAN:
        run = runs[name]
        if name not in only:
            continue
        load = _load()
        t0 = time.monotonic()
        results[name] = r = run()
        r["section_s"] = round(time.monotonic() - t0, 1)
        r["load"] = load
        print_table("%s (%.0f s)" % (name, r["section_s"]), rows(r))
        docs.append((name, doc(r, dict(meta, load=load))))
    os.makedirs(os.path.join(ROOT, "var", "bench"), exist_ok=True)
    with open(os.path.join(ROOT, "var", "bench", "last.json"), "w") as f:
        json.dump(results, f, indent=1)
    if not args.no_doc:
        rewrite_doc(DOC, docs)
        print("\ndocs/bench.md: rewrote %s" % ", ".join(n for n, _ in docs))
    print("total %.0f s" % (time.monotonic() - t_start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
