# The arguments of the stateless check commands (SPEC 2.4 coupon-check, and member-check):
# parsed by hand (no argparse on MicroPython), the lists installed in memory only, and the one
# JSON line written the same way on both runtimes.
#
# An argument "@PATH" stands for the lines of that file, one argument per line: the MicroPython
# unix port dies ("FATAL: uncaught NLR") on any command-line argument of 256 characters or more,
# and list texts and many tokens are longer than that.
import binascii

from device.trust.lists import REVOCATIONS, TRUST, TrustError, TrustStore


class ArgError(ValueError):
    pass


class HelpWanted(Exception):
    """--help or -h among the arguments: print the usage, exit 0."""


def _expand(argv):
    """Replaces each "@PATH" (before a "--") by the lines of the file."""
    out = []
    for i, a in enumerate(argv):
        if a == "--":
            out.extend(argv[i:])
            break
        if len(a) < 2 or a[0] != "@":
            out.append(a)
            continue
        try:
            with open(a[1:]) as f:
                text = f.read()
        except OSError as e:
            raise ArgError("cannot read %s: %s" % (a[1:], e))
        except UnicodeError:
            raise ArgError("%s is not UTF-8 text" % a[1:])
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        for line in lines:
            out.append(line[:-1] if line.endswith("\r") else line)
    return out


def parse(argv, single, required):
    """(options, TOKEN): --root-key may repeat (a list), every name of `single` once; every
    name of `required` and one TOKEN must be there."""
    argv = _expand(argv)
    opts = {"--root-key": []}
    tokens = []
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            tokens.extend(argv[i:])
            break
        if a == "--help" or a == "-h":
            raise HelpWanted()
        if not a.startswith("--"):
            tokens.append(a)
            continue
        name, eq, val = a.partition("=")
        if name != "--root-key" and name not in single:
            raise ArgError("unknown option %s" % name)
        if not eq:
            if i >= len(argv):
                raise ArgError("%s needs a value" % name)
            val = argv[i]
            i += 1
        if name == "--root-key":
            opts[name].append(val)
        elif name in opts:
            raise ArgError("%s given twice" % name)
        else:
            opts[name] = val
    if not opts["--root-key"]:
        raise ArgError("--root-key is required")
    for name in required:
        if name not in opts:
            raise ArgError("%s is required" % name)
    if len(tokens) != 1:
        raise ArgError("exactly one TOKEN expected, got %d" % len(tokens))
    # Taken as given: a line end in it is not base45, so `malformed` (SPEC 2.3 step 1), the
    # verdict the terminal gives the same text (an "@PATH" file's lines come without theirs);
    # stderr says why (issue 17: a token cut from a CRLF file carries its CR).
    token = tokens[0]
    if token.endswith("\r") or token.endswith("\n"):
        import sys
        sys.stderr.write("note: TOKEN ends in a line end (CR or LF), which is no part of a "
                         "code: cut it off\n")
    return opts, token


def integer(name, text, minimum=None):
    digits = text[1:] if text.startswith("-") else text
    # Plain ASCII digits only: CPython's int() also takes spaces, "_" and other scripts' digits.
    ok = len(digits) > 0
    for c in digits:
        if c < "0" or c > "9":
            ok = False
    if not ok:
        raise ArgError("%s must be an integer, not %r" % (name, text))
    n = int(text)
    if minimum is not None and n < minimum:
        raise ArgError("%s must be >= %d" % (name, minimum))
    return n


def _root_key(text):
    try:
        pub = binascii.unhexlify(text)
    except ValueError:
        raise ArgError("--root-key must be hex")
    if len(pub) not in (32, 33, 65):
        raise ArgError("--root-key must be 32, 33 or 65 bytes, not %d" % len(pub))
    return pub


def _install(store, option, text, kind):
    if not text.startswith(("PT1:", "PR1:")):
        # Not a list text: the path of a file holding one (every list option takes either).
        try:
            with open(text) as f:
                text = f.read().strip("\r\n")
        except (OSError, UnicodeError) as e:
            raise ArgError("%s: neither a list text nor a readable file: %s" % (option, e))
    try:
        return store.install_text(text, expect=kind)[1]
    except TrustError as e:
        raise ArgError("%s: %s (%s)" % (option, e.message, e.code))


def trust_store(opts):
    """An in-memory TrustStore with the --root-key(s), --trustlist and --revocations given."""
    roots = [_root_key(k) for k in opts["--root-key"]]
    try:
        store = TrustStore(None, None, roots)
    except TrustError as e:
        raise ArgError("--root-key: %s" % e.message)
    _install(store, "--trustlist", opts["--trustlist"], TRUST)
    if "--revocations" in opts:
        _install(store, "--revocations", opts["--revocations"], REVOCATIONS)
    return store


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b",
            "\f": "\\f"}


def json_str(s):
    """A JSON string exactly as CPython's json.dumps writes it (ASCII only), on both runtimes."""
    out = ['"']
    for c in s:
        o = ord(c)
        if 0x20 <= o < 0x7F and c != '"' and c != "\\":
            out.append(c)
        elif c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif o < 0x10000:
            out.append("\\u%04x" % o)
        else:
            o -= 0x10000
            out.append("\\u%04x\\u%04x" % (0xD800 | (o >> 10), 0xDC00 | (o & 0x3FF)))
    out.append('"')
    return "".join(out)


def hex_or_null(b):
    return "null" if b is None else '"%s"' % binascii.hexlify(b).decode()


def text_or_null(s):
    return "null" if s is None else json_str(s)


def command(name, usage, run, result_line, argv):
    """A check command's main: one JSON line and exit 0 for any verdict; usage and exit 0 for
    --help; the reason and exit 2 for bad arguments."""
    import sys
    try:
        r = run(argv)
    except HelpWanted:
        sys.stdout.write(usage + "\n")
        return 0
    except ArgError as e:
        sys.stderr.write("%s: %s\n" % (name, e))
        return 2
    sys.stdout.write(result_line(r) + "\n")
    return 0

