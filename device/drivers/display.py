# Display drivers (SPEC 5). `jsonl` appends one JSON line per frame, for desktop runs and tests:
#   {"at": float, "screen": NAME, "lines": [text, ...]}
# `null` keeps only counters, for headless devices. A repeat of the last frame is skipped when
# it is a redraw (the idle screen's, once a second), never when it answers a key or a scan
# (show(force=True), Peripherals.perform(answer=True)).
import json

from device.drivers.files import write_all


class DisplayError(Exception):
    """A frame that is not (str, [str, ...]) or a file that cannot be written."""


def _check_frame(screen, lines):
    if type(screen) is not str or not isinstance(lines, (list, tuple)):
        raise DisplayError("a frame is a screen name and a list of lines")
    for line in lines:
        if type(line) is not str:
            raise DisplayError("display lines must be text, got %r" % (line,))
    return list(lines)


class JsonlDisplay:
    def __init__(self, path, clock):
        self.path = path
        self.clock = clock  # callable -> seconds as a float (or int)
        self.frames = 0
        self.skipped = 0
        self.errors = 0
        self.last_error = None
        self._last = None
        try:
            self._f = open(path, "ab", buffering=0)
        except OSError as e:
            raise DisplayError("cannot open %s: %s" % (path, e)) from None

    def show(self, screen, lines, force=False):
        """Writes one frame, skipping a repeat of the last one unless force; True if written."""
        lines = _check_frame(screen, lines)
        frame = (screen, lines)
        if frame == self._last and not force:
            self.skipped += 1
            return False
        # Built by hand so the key order is the same on both runtimes (MicroPython dicts are
        # unordered); json.dumps still does the escaping.
        text = '{"at": %s, "screen": %s, "lines": %s}\n' % (
            json.dumps(float(self.clock())), json.dumps(screen), json.dumps(lines))
        try:
            write_all(self._f, text.encode())
            self._f.flush()
        except OSError as e:
            self.errors += 1
            self.last_error = str(e)
            raise DisplayError("cannot write %s: %s" % (self.path, e)) from None
        self._last = frame
        self.frames += 1
        return True

    def close(self):
        self._f.close()

    def state(self):
        return {"driver": "jsonl", "path": self.path, "frames": self.frames,
                "skipped": self.skipped, "errors": self.errors, "last_error": self.last_error,
                "screen": self._last[0] if self._last else None}


class NullDisplay:
    """No screen attached: frames are checked and counted, nothing is drawn."""

    def __init__(self):
        self.frames = 0
        self.screen = None

    def show(self, screen, lines, force=False):
        _check_frame(screen, lines)
        self.frames += 1
        self.screen = screen
        return True

    def close(self):
        pass

    def state(self):
        return {"driver": "null", "frames": self.frames, "screen": self.screen}


def open_display(cfg, clock):
    driver = cfg.get("driver") if isinstance(cfg, dict) else None
    if driver == "jsonl":
        path = cfg.get("path")
        if type(path) is not str or not path:
            raise ValueError("display driver jsonl needs a path")
        return JsonlDisplay(path, clock)
    if driver == "null":
        return NullDisplay()
    raise ValueError("unknown display driver: %r" % (driver,))
