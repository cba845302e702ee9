# Technician console (SPEC 6): one command per line in, one JSON line out. Sans-I/O: the agent
# feeds it bytes from the console serial port (or stdin) and writes back what it returns.
#
# A line is `NAME [ARG]`, or `GROUP SUB [ARG]` for the two-word commands (`trust load`, ...).
# The argument is exactly what follows the one space after the name, leading and trailing spaces
# included: a space is a base45 digit, so a token or list text may begin or end with one (and
# one that should not is then refused as malformed rather than silently repaired).
import json

MAX_LINE = 262144  # a revocation list in text form can be long
GROUPS = ("trust", "revocations", "coupon", "queue", "config", "log", "tls", "journal")


def reply_ok(**fields):
    fields["ok"] = True
    return fields


def reply_error(code, message, **fields):
    fields["ok"] = False
    fields["error"] = code
    fields["message"] = message
    return fields


class LineFramer:
    """CR/LF/CRLF line framing with a bound; over-long lines come out as None."""

    def __init__(self, max_line=MAX_LINE):
        self.max_line = max_line
        self._buf = bytearray()
        self._overflow = False
        self._after_cr = False

    def feed(self, data):
        out = []
        for b in data:
            if b == 10 and self._after_cr:
                self._after_cr = False
                continue
            self._after_cr = b == 13
            if b in (10, 13):
                out.append(None if self._overflow else bytes(self._buf))
                self._buf = bytearray()
                self._overflow = False
            elif not self._overflow:
                if len(self._buf) >= self.max_line:
                    self._overflow = True
                    self._buf = bytearray()
                else:
                    self._buf.append(b)
        return out


def _split(text):
    i = text.find(" ")
    if i < 0:
        return text, ""
    return text[:i], text[i + 1:]


def _printable(text):
    for c in text:
        if (ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F:
            return False
    return True


class Console:
    """Parses command lines and dispatches them to `commands`, an object with cmd_<name>(arg).

    Optional on `commands`: gate(name) -> None or an error reply (login, provisioning state),
    count_error(code), told of every error reply, and exit_code: once a command sets it
    (reboot, factory reset) the rest of the input is dropped, so nothing runs after the reply
    that announced the restart."""

    def __init__(self, commands):
        self.commands = commands
        self.framer = LineFramer()
        self.lines = 0
        self.errors = 0

    def feed(self, data):
        """Bytes in, reply lines (bytes, each ending in LF) out."""
        out = []
        for line in self.framer.feed(data):
            if getattr(self.commands, "exit_code", None) is not None:
                break
            if line is None:
                rep = reply_error("line_too_long", "line over %d bytes" % MAX_LINE)
            else:
                rep = self.handle_line(line)
                if rep is None:
                    continue
            self.lines += 1
            if not rep.get("ok"):
                self.errors += 1
                count = getattr(self.commands, "count_error", None)
                if count is not None:
                    count(rep.get("error"))  # SPEC 7: bad console input is counted too
            out.append(json.dumps(rep).encode() + b"\n")
        return out

    def handle_line(self, line):
        try:
            text = bytes(line).decode()
        except UnicodeError:
            return reply_error("bad_encoding", "command is not UTF-8")
        text = text.lstrip(" \t")
        if not text.strip(" \t"):
            return None
        if not _printable(text):
            return reply_error("bad_characters", "control characters in the command")
        name, arg = _split(text)
        name = name.lower()
        groups = getattr(self.commands, "groups", None)
        if name in GROUPS or (groups is not None and name in groups()):
            sub, arg = _split(arg)
            if not sub:
                return reply_error("bad_argument", "usage: %s SUBCOMMAND ..." % name)
            name = name + "_" + sub.lower()
        attr = name.replace("-", "_")
        fn = None
        if attr.replace("_", "").isalpha():
            lookup = getattr(self.commands, "lookup", None)
            fn = lookup(attr) if lookup is not None else getattr(self.commands, "cmd_" + attr,
                                                                   None)
        if fn is None:
            return reply_error("unknown_command", "unknown command: %s" % text[:40])
        gate = getattr(self.commands, "gate", None)
        if gate is not None:
            denied = gate(attr)
            if denied is not None:
                return denied
        try:
            return fn(arg)
        except Exception as e:  # a command must never take the console down
            return reply_error("internal", "%s: %s" % (type(e).__name__, e))
