# Technician console (SPEC 6): one command per line in, one JSON line out. Sans-I/O: the agent
# feeds it bytes from the console serial port (or stdin) and writes back what it returns.
import json

MAX_LINE = 262144  # a revocation list in text form can be long


def reply_ok(**fields):
    fields["ok"] = True
    return fields


def reply_error(code, message):
    return {"ok": False, "error": code, "message": message}


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


class Console:
    """Parses command lines and dispatches them to `commands` (an object with cmd_<name>)."""

    def __init__(self, commands):
        self.commands = commands
        self.framer = LineFramer()

    def feed(self, data):
        """Bytes in, reply lines (bytes, each ending in LF) out."""
        out = []
        for line in self.framer.feed(data):
            if line is None:
                rep = reply_error("line_too_long", "line over %d bytes" % MAX_LINE)
            else:
                rep = self.handle_line(line)
                if rep is None:
                    continue
            out.append(json.dumps(rep).encode() + b"\n")
        return out

    def handle_line(self, line):
        try:
            text = line.decode().strip()
        except UnicodeError:
            return reply_error("bad_encoding", "command is not UTF-8")
        if not text:
            return None
        parts = text.split(" ", 1)
        name = parts[0].lower()
        arg = parts[1].strip() if len(parts) > 1 else ""
        if len(parts) > 1 and name in ("trust", "revocations", "coupon", "queue", "config",
                                       "log"):
            sub = arg.split(" ", 1)
            name = name + "_" + sub[0].lower()
            arg = sub[1].strip() if len(sub) > 1 else ""
        fn = getattr(self.commands, "cmd_" + name.replace("-", "_"), None)
        if fn is None or not name.replace("_", "").replace("-", "").isalpha():
            return reply_error("unknown_command", "unknown command: %s" % text[:40])
        try:
            return fn(arg)
        except Exception as e:  # a command must never take the console down
            return reply_error("internal", "%s: %s" % (type(e).__name__, e))
