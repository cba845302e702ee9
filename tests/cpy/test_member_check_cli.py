"""The member code check command (SPEC 8.1, like SPEC 2.4's coupon-check): every case of
tests/fixtures/member_codes.json through `python -m device member-check` and
`micropython -m device member-check`, one process each, a few at a time. The claims each line
reports are checked against the token decoded here with cbor2 (independent of the device's
decoder). The command is stateless: its clock is --now, so a case the fixture judges with an
untrusted clock (clock_unset) gives what --now says (ok, or expired for a code past its exp)."""
import json

import cbor2
import pytest

from protocol import base45
from tests.cpy.test_coupon_check_cli import ROOT, run_all

RUNTIMES = ("cpython", "micropython")

with open(ROOT + "/tests/fixtures/member_codes.json") as _f:
    F = json.load(_f)


def _run(runtime, arglists, tmp_path):
    return run_all(runtime, arglists, tmp_path, command="member-check")


def _args(token, **over):
    opts = {"--root-key": F["root_key"], "--trustlist": F["trustlist"],
            "--revocations": F["revocations"], "--now": str(F["now"])}
    opts.update(over)
    out = []
    for k, v in opts.items():
        if v is not None:
            out += [k, v]
    return out + [token]


def _claims(token):
    cose = cbor2.loads(base45.decode(token[4:]))
    cose = cose.value if isinstance(cose, cbor2.CBORTag) else cose
    return cbor2.loads(cose[2])


def _want(c):
    """The stateless verdict of a case."""
    if c["verdict"] != "clock_unset":
        return c["verdict"]
    return "expired" if _claims(c["token"])[4] <= F["now"] else "ok"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_every_case(runtime, tmp_path):
    cases = F["cases"]
    results = _run(runtime, [_args(c["token"]) for c in cases], tmp_path)
    wrong = []
    for c, (rc, out, err) in zip(cases, results, strict=True):
        lines = out.splitlines()
        if rc != 0 or len(lines) != 1:
            wrong.append((c["name"], rc, out, err[-500:]))
            continue
        got = json.loads(lines[0])
        assert list(got) == ["verdict", "mid", "ep", "tier", "name", "cti", "dynamic"]
        if got["verdict"] != _want(c):
            wrong.append((c["name"], _want(c), got))
            continue
        if "mid" in c:
            assert (got["mid"], got["ep"], got["tier"], got["dynamic"]) == (
                c["mid"], c["ep"], c["tier"], c["dynamic"]), c["name"]
        if got["verdict"] in ("wrong_issuer", "key_not_valid") or "mid" in c:
            # the claims were read (step 6 passed): as decoded here
            p = _claims(c["token"])
            assert (got["mid"], got["ep"], got["tier"], got["name"], got["cti"],
                    got["dynamic"]) == (p["mid"], p["ep"], p["tier"], p.get("nm"), p[7].hex(),
                                        4 in p), c["name"]
        else:
            assert set(got.values()) == {got["verdict"], None}, (c["name"], got)
    assert not wrong, wrong
    assert len(cases) >= 90


def test_same_bytes_on_both_runtimes(tmp_path):
    picks = [c for c in F["cases"] if c["name"] in (
        "dynamic_ok", "lost_card_blocked", "static_card_no_name_ok", "mid_64_chars_ok",
        "forged_signature", "dynamic_expired")]
    arglists = [_args(c["token"]) for c in picks]
    cp = _run("cpython", arglists, tmp_path)
    mp = _run("micropython", arglists, tmp_path)
    assert [r[1] for r in cp] == [r[1] for r in mp]
    for rc, out, _ in cp:
        assert rc == 0 and out == json.dumps(json.loads(out)) + "\n"


BAD = [
    ("no arguments", []),
    ("missing --now", _args("PM1:", **{"--now": None})),
    ("missing --root-key", _args("PM1:", **{"--root-key": None})),
    ("missing --trustlist", _args("PM1:", **{"--trustlist": None})),
    ("missing token", _args("PM1:")[:-1]),
    ("two tokens", _args("PM1:") + ["PM1:"]),
    ("a coupon option", _args("PM1:") + ["--total", "100"]),
    ("--now not an integer", _args("PM1:", **{"--now": "soon"})),
    ("root key not hex", _args("PM1:", **{"--root-key": "zz"})),
    ("list under another root", _args("PM1:", **{"--root-key": "11" * 32})),
    ("revocations as trustlist", _args("PM1:", **{"--trustlist": F["revocations"]})),
    ("--now twice", _args("PM1:") + ["--now", "1"]),
]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_bad_arguments_exit_2_help_exits_0(runtime, tmp_path):
    results = _run(runtime, [args for _, args in BAD] + [["--help"]], tmp_path)
    for (what, _), (rc, out, err) in zip(BAD, results[:-1], strict=True):
        assert rc == 2 and out == "" and err.strip(), (what, rc, out, err)
    rc, out, err = results[-1]
    assert rc == 0 and out.startswith("usage:") and "member-check" in out, (rc, out, err)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_argument_file(runtime, tmp_path):
    args = _args(F["cases"][0]["token"])
    part = tmp_path / "lists.txt"
    part.write_text("\n".join(args[:6]) + "\n")
    [(rc, out, err)] = _run(runtime, [["@" + str(part)] + args[6:]], tmp_path)
    assert rc == 0 and json.loads(out)["verdict"] == "ok", err
