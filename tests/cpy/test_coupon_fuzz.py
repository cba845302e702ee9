"""Bad tokens never crash the verifier: hypothesis mutations of valid tokens, random text and
signed random claims give only verdict codes. A sample of the same inputs runs on MicroPython
and must give the same results as CPython."""
import json
import os
import random
import subprocess
import sys

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.coupons.verifier import VERDICTS, Verifier
from device.trust.lists import TrustStore
from protocol import base45
from tests.support import coupons as gen

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MP = os.path.join(os.path.dirname(sys.executable), "micropython")
FIXTURE = os.path.join(ROOT, "tests", "both", "fixtures", "coupon_cases.json")

with open(FIXTURE) as _f:
    DATA = json.load(_f)
KEYS = gen.Keys()


def _verifier():
    s = TrustStore(None, None, [bytes.fromhex(DATA["root_pub_hex"])])
    s.install_text(DATA["trustlist"])
    s.install_text(DATA["revocations"])
    return Verifier(s)


V = _verifier()
SEEDS = [c["token"] for c in DATA["cases"] if c["verdict"] == "ok"]
SEED_BYTES = [base45.decode(t[4:]) for t in SEEDS]
B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
SETTINGS = settings(max_examples=250, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


def check(token, total=10000, uses=None, clock_trusted=True):
    fn = None if uses is None else (lambda cti: uses)
    r = V.check(token, total, DATA["store"], DATA["currency"], DATA["now"], clock_trusted, fn)
    assert r["verdict"] in VERDICTS, r
    if r["verdict"] == "ok":
        assert type(r["discount"]) is int and 0 <= r["discount"] <= total
    else:
        assert r["discount"] is None
    assert r["cti"] is None or (type(r["cti"]) is bytes and 1 <= len(r["cti"]) <= 32)
    assert r["campaign"] is None or type(r["campaign"]) is str
    return r


def mutate_bytes(data, ops):
    b = bytearray(data)
    for kind, pos, val in ops:
        if not b:
            b.append(val)
            continue
        i = pos % len(b)
        if kind == 0:
            b[i] = val
        elif kind == 1:
            b[i] ^= 1 << (val % 8)
        elif kind == 2:
            del b[i]
        elif kind == 3:
            b.insert(i, val)
        else:
            del b[i:]
    return bytes(b)


_ops = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 2000), st.integers(0, 255)),
                min_size=1, max_size=4)


@SETTINGS
@given(st.sampled_from(SEED_BYTES), _ops, st.integers(0, 10**7))
def test_byte_mutations_of_valid_tokens(seed, ops, total):
    check("PC1:" + gen.b45encode(mutate_bytes(seed, ops)), total)


@SETTINGS
@given(st.sampled_from(SEEDS),
       st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1300),
                          st.sampled_from(B45 + "abcz\x00\n\u00e9\u4e2d")), min_size=1,
                max_size=5))
def test_text_mutations_of_valid_tokens(seed, ops):
    t = list(seed)
    for kind, pos, ch in ops:
        i = pos % (len(t) + 1)
        if kind == 0 and i < len(t):
            t[i] = ch
        elif kind == 1 and i < len(t):
            del t[i]
        else:
            t.insert(i, ch)
    check("".join(t))


@SETTINGS
@given(st.one_of(st.text(max_size=1300), st.text(alphabet=B45, max_size=1300).map(
    lambda s: "PC1:" + s), st.binary(max_size=900).map(lambda b: "PC1:" + gen.b45encode(b))))
def test_random_text(token):
    check(token)


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
                     st.text(max_size=20), st.binary(max_size=40))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.integers(-9, 9), st.text(
        max_size=4)), inner, max_size=4)), max_leaves=12)
_claim_names = st.sampled_from(["iss", "cti", "iat", "nbf", "exp", "cmp", "nm", "kd", "val",
                                "cur", "sku", "min", "st", "mu", "zz"])


@SETTINGS
@given(st.dictionaries(_claim_names, st.one_of(_values, st.just(None)), max_size=5),
       st.integers(0, 10**6), st.one_of(st.none(), st.integers(0, 3)), st.booleans())
def test_signed_random_claims(over, total, uses, clock_trusted):
    cose = gen.sign1(KEYS.ed, gen.claims(**over))
    check(gen.token(cose), total, uses, clock_trusted)


@SETTINGS
@given(_values, _values, st.booleans(), st.booleans())
def test_signed_random_headers(prot, unprot, tagged, with_key):
    if with_key and isinstance(prot, dict):
        prot = {1: gen.ALG_EDDSA, 4: KEYS.ed.kid} | prot
    try:
        prot_b = cbor2.dumps(prot)
    except (TypeError, ValueError, cbor2.CBOREncodeError):
        return
    if not isinstance(unprot, dict):
        unprot = {4: unprot}
    cose = gen.sign1(KEYS.ed, gen.claims(), prot=prot_b, unprot=unprot, tagged=tagged)
    check(gen.token(cose))


# ---------------------------------------------------------------- the same on MicroPython

def _sample(n=200):
    rnd = random.Random(20261123)
    out = []
    now = DATA["now"]
    for i in range(n):
        pick = i % 5
        if pick == 4:
            # well-typed claims around the edges: reaches every later verdict, both algs
            over = {"nbf": now + rnd.choice([-9, -9, 0, 1]),
                    "exp": now + rnd.choice([0, 1, 99, 99]),
                    "iat": rnd.choice([now - 86400] * 6 + [KEYS.ed.exp]),
                    "iss": rnd.choice(["M-ACME"] * 6 + ["M-OTHER"]),
                    "cmp": rnd.choice(["SPRING", "SPRING", "RECALLED"]),
                    "kd": rnd.choice(["pct", "amt", "item"]), "val": rnd.choice([1, 50, 100]),
                    "cur": rnd.choice(["CNY", "CNY", "USD"]), "sku": "TEA",
                    "min": rnd.choice([None, 0, 5000]), "mu": rnd.choice([None, 1, 3]),
                    "st": rnd.choice([None, [], ["S-001"], ["S-002"]])}
            key = rnd.choice([KEYS.ed, KEYS.p256, KEYS.p256c])
            tok = gen.token(gen.sign1(key, gen.claims(**over)))
            out.append({"token": tok, "total": rnd.randrange(0, 20000),
                        "uses": rnd.choice([None, 0, 1, 2, 3])})
            continue
        if pick == 0:
            ops = [(rnd.randrange(5), rnd.randrange(2000), rnd.randrange(256))
                   for _ in range(rnd.randrange(1, 4))]
            tok = "PC1:" + gen.b45encode(mutate_bytes(rnd.choice(SEED_BYTES), ops))
        elif pick == 1:
            t = list(rnd.choice(SEEDS))
            for _ in range(rnd.randrange(1, 4)):
                t[rnd.randrange(len(t))] = rnd.choice(B45 + "a\u00e9")
            tok = "".join(t)
        elif pick == 2:
            name = rnd.choice(["val", "mu", "min", "cti", "st", "kd", "cur", "iat", "exp"])
            val = rnd.choice([True, False, None, 0, -1, 1, 100, 101, 2**64, 1.5, "x", b"x", [],
                              ["S-001"], [1], {}, b"\x00" * 33, "amt", "item"])
            tok = gen.token(gen.sign1(KEYS.ed, gen.claims(**{name: val})))
        else:
            body = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 60)))
            tok = "PC1:" + gen.b45encode(b"\xd2\x84" + body)
        out.append({"token": tok, "total": rnd.randrange(0, 20000),
                    "uses": rnd.choice([None, 0, 1, 2])})
    return out


MP_SCRIPT = """
import json, sys
from device.coupons.verifier import Verifier, VERDICTS
from device.trust.lists import TrustStore
data = json.load(open(sys.argv[1]))
fx = json.load(open("tests/both/fixtures/coupon_cases.json"))
s = TrustStore(None, None, [bytes.fromhex(fx["root_pub_hex"])])
s.install_text(fx["trustlist"])
s.install_text(fx["revocations"])
v = Verifier(s)
out = []
for c in data:
    n = c["uses"]
    r = v.check(c["token"], c["total"], fx["store"], fx["currency"], fx["now"], True,
                None if n is None else (lambda cti: n))
    out.append([r["verdict"], r["discount"], None if r["cti"] is None else r["cti"].hex()])
print(json.dumps(out))
"""


def test_same_verdicts_on_micropython(tmp_path):
    sample = _sample()
    want = []
    for c in sample:
        r = check(c["token"], c["total"], c["uses"])
        want.append([r["verdict"], r["discount"], None if r["cti"] is None else r["cti"].hex()])
    assert len(set(w[0] for w in want)) >= 10  # the sample reaches past the first checks
    inp = tmp_path / "tokens.json"
    inp.write_text(json.dumps(sample))
    script = tmp_path / "run.py"
    script.write_text(MP_SCRIPT)
    env = dict(os.environ, MICROPYPATH=ROOT + ":.frozen")
    p = subprocess.run([MP, "-X", "heapsize=8M", str(script), str(inp)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    diff = [(i, sample[i]["token"], want[i], got[i]) for i in range(len(want))
            if want[i] != got[i]]
    assert not diff, diff[:5]
