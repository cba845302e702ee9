"""The check command (SPEC 2.4): every shared vector through `python -m device coupon-check` and
`micropython -m device coupon-check`, one process each, run a few at a time.

The PyPI MicroPython unix port dies ("FATAL: uncaught NLR") on any command-line argument of 256
characters or more; scripts/micropython-launcher (our .venv/bin/micropython) passes such arguments
through a file, so the SPEC's plain form works. "@PATH" argument files are tested too."""
import json
import os
import subprocess
import sys

import cbor2
import pytest

from protocol import base45

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MP = os.path.join(os.path.dirname(sys.executable), "micropython")
VECTORS = os.path.join(os.path.dirname(ROOT), "shared", "vectors", "coupons.json")
RUNTIMES = {
    "cpython": ([sys.executable, "-m", "device", "coupon-check"], {"PYTHONPATH": ROOT}),
    "micropython": ([MP, "-m", "device", "coupon-check"], {"MICROPYPATH": ROOT + ":.frozen"}),
}

with open(VECTORS) as _f:
    V = json.load(_f)


def _args(total, token, **over):
    opts = {"--root-key": V["root_pub_hex"], "--trustlist": V["trustlist"],
            "--revocations": V["revocations"], "--store": V["store"],
            "--currency": V["currency"], "--now": str(V["now"]), "--total": str(total)}
    opts.update(over)
    out = []
    for k, v in opts.items():
        if v is not None:
            out += [k, v]
    return out + [token]


def run_all(runtime, arglists, tmp_path, parallel=3, command="coupon-check"):
    """Runs the command once per argument list; returns (returncode, stdout, stderr) each.
    command: the `-m device` command (member-check shares this runner)."""
    cmd, extra = RUNTIMES[runtime]
    cmd = cmd[:-1] + [command]
    if runtime == "micropython" and not os.path.exists(MP):
        pytest.fail("MicroPython unix port missing: run make setup")
    env = dict(os.environ, **extra)
    results = [None] * len(arglists)
    running = []
    todo = list(enumerate(arglists))
    while todo or running:
        while todo and len(running) < parallel:
            i, args = todo.pop(0)
            p = subprocess.Popen(cmd + args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
            running.append((i, p))
        i, p = running.pop(0)
        out, err = p.communicate(timeout=120)
        results[i] = (p.returncode, out, err)
    return results


def _claims(token):
    """cti hex and campaign straight from the token (cbor2), when the payload decodes."""
    try:
        cose = cbor2.loads(base45.decode(token[4:]))
        cose = cose.value if isinstance(cose, cbor2.CBORTag) else cose
        p = cbor2.loads(cose[2])
        return p[7].hex(), p["cmp"]
    except Exception:
        return None


@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
def test_every_vector(runtime, tmp_path):
    cases = V["cases"]
    results = run_all(runtime, [_args(c["total"], c["token"]) for c in cases], tmp_path)
    wrong = []
    for c, (rc, out, err) in zip(cases, results, strict=True):
        lines = out.splitlines()
        if rc != 0 or len(lines) != 1:
            wrong.append((c["name"], rc, out, err[-500:]))
            continue
        got = json.loads(lines[0])
        assert list(got) == ["verdict", "discount", "cti", "campaign"]
        if got["verdict"] != c["verdict"] or got["discount"] != c.get("discount"):
            wrong.append((c["name"], got))
        if c["verdict"] == "ok":
            assert (got["cti"], got["campaign"]) == _claims(c["token"]), c["name"]
        if c["verdict"] in ("bad_signature", "unknown_key", "unsupported_alg"):
            assert got["cti"] is None and got["campaign"] is None, c["name"]
    assert not wrong, wrong


def test_same_bytes_on_both_runtimes(tmp_path):
    picks = [c for c in V["cases"] if c["name"] in ("pct_ok", "revoked_cti", "truncated")]
    arglists = [_args(c["total"], c["token"]) for c in picks]
    # A campaign outside ASCII is escaped the same way on both (json.dumps ensure_ascii).
    from tests.support import coupons as gen
    keys = gen.Keys()
    tl = gen.text("PT1:", gen.trust_list(keys.root, 1, [keys.ed]))
    tok = gen.token(gen.sign1(keys.ed, gen.claims(cmp='春"\\\n\U0001f9e7', kd="amt", val=5,
                                                   cur="CNY")))
    arglists.append(_args(100, tok, **{"--root-key": keys.root.pub.hex(), "--trustlist": tl,
                                       "--revocations": None}))
    cp = run_all("cpython", arglists, tmp_path)
    mp = run_all("micropython", arglists, tmp_path)
    assert [r[1] for r in cp] == [r[1] for r in mp]
    last = json.loads(cp[-1][1])
    assert last == {"verdict": "ok", "discount": 5, "cti": "0000000000002001",
                    "campaign": '春"\\\n\U0001f9e7'}
    assert cp[-1][1] == json.dumps(last) + "\n"


BAD = [
    ("no arguments", []),
    ("missing --store", _args(100, "PC1:", **{"--store": None})),
    ("missing --root-key", _args(100, "PC1:", **{"--root-key": None})),
    ("missing --trustlist", _args(100, "PC1:", **{"--trustlist": None})),
    ("missing token", _args(100, "PC1:")[:-1]),
    ("two tokens", _args(100, "PC1:") + ["PC1:"]),
    ("unknown option", _args(100, "PC1:") + ["--verbose", "1"]),
    ("option without value", _args(100, "PC1:")[:-1] + ["--now"]),
    ("--now not an integer", _args(100, "PC1:", **{"--now": "soon"})),
    ("--now with spaces", _args(100, "PC1:", **{"--now": " 1795000000"})),
    ("--total not an integer", _args("12.5", "PC1:")),
    ("--total negative", _args("-1", "PC1:")),
    ("--total underscore", _args("1_000", "PC1:")),
    ("root key not hex", _args(100, "PC1:", **{"--root-key": "zz"})),
    ("root key wrong size", _args(100, "PC1:", **{"--root-key": "00" * 31})),
    ("list under another root", _args(100, "PC1:", **{"--root-key": "11" * 32})),
    ("trustlist not a list", _args(100, "PC1:", **{"--trustlist": "PT1:AAAA"})),
    ("revocations as trustlist", _args(100, "PC1:", **{"--trustlist": V["revocations"]})),
    ("trustlist as revocations", _args(100, "PC1:", **{"--revocations": V["trustlist"]})),
    ("--store twice", _args(100, "PC1:") + ["--store", "S-002"]),
]


@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
def test_bad_arguments_exit_2(runtime, tmp_path):
    results = run_all(runtime, [args for _, args in BAD], tmp_path)
    for (what, _), (rc, out, err) in zip(BAD, results, strict=True):
        assert rc == 2 and out == "" and err.strip(), (what, rc, out, err)


@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
def test_option_forms(runtime, tmp_path):
    c = V["cases"][0]
    args = _args(c["total"], c["token"], **{"--revocations": None})
    eq_form = [a + "=" + b for a, b in zip(args[:-1:2], args[1:-1:2], strict=True)]
    # "@PATH" mixed with plain arguments; the file may end without a newline or use CRLF
    part = tmp_path / "part.txt"
    part.write_bytes("\r\n".join(args[:4]).encode())
    results = run_all(runtime, [args, eq_form + ["--", c["token"]], [c["token"]] + args[:-1],
                                ["@" + str(part)] + args[4:]], tmp_path)
    for rc, out, err in results:
        assert rc == 0, err
        assert json.loads(out)["verdict"] == "ok"
    bad = run_all(runtime, [["@" + str(tmp_path / "missing.txt")], args[:-1] + ["--", "@x"]],
                  tmp_path)
    assert bad[0][0] == 2 and "missing.txt" in bad[0][2]
    assert bad[1][0] == 0 and json.loads(bad[1][1])["verdict"] == "malformed"


@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
def test_a_token_is_taken_as_given(runtime, tmp_path):
    # SPEC 2.3 step 1: a line end is not base45, so `malformed` (as on the terminal), and so is
    # a TOKEN that is not even UTF-8: exit 0 with the verdict, never a traceback
    c = V["cases"][0]
    tokens = [c["token"] + "\n", c["token"] + "\r\n", os.fsdecode(b"PC1:\xff\xfe"),
              os.fsdecode(b"\xc3")]
    results = run_all(runtime, [_args(c["total"], tok) for tok in tokens], tmp_path)
    for tok, (rc, out, err) in zip(tokens, results, strict=True):
        assert rc == 0 and json.loads(out)["verdict"] == "malformed", (tok, rc, out, err)


def test_micropython_long_argv(tmp_path):
    """The SPEC's plain form on MicroPython, long arguments and all (through our launcher)."""
    c = V["cases"][0]
    rc, out, err = run_all("micropython", [_args(c["total"], c["token"])], tmp_path)[0]
    assert rc == 0 and json.loads(out)["verdict"] == "ok", err
