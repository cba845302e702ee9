# The terminal's peripherals behind one object: display, receipt printer, and the serial lines of
# the scanner, the keypad and the technician console with their framing. A broken part is left
# out and reported (selftest), never a reason to stop selling; a flaky port is counted and read
# again on the next poll.
from device.drivers.display import NullDisplay, open_display
from device.drivers.keypad import KeyFramer
from device.drivers.printer import open_printer
from device.drivers.scanner import ScanFramer
from device.drivers.serial import open_serial

LINES = ("console", "scanner", "keypad")


class Peripherals:
    def __init__(self, cfg, clock, metrics, log):
        self.cfg = cfg
        self.clock = clock
        self.metrics = metrics
        self.log = log
        self.display = NullDisplay()
        self.printer = None
        self.ports = {}            # name -> open serial port
        self.errors = {}           # name -> why it could not be opened
        self.framers = {"scanner": ScanFramer(), "keypad": KeyFramer()}
        self.opened = False

    def open(self, console_port=None):
        """Opens what the config names; a console handed over by an unprovisioned start (already
        attached to its session) is kept as it is."""
        cfg = self.cfg
        if cfg.get("display"):
            try:
                self.display = open_display(cfg["display"], self.clock.now_f)
            except Exception as e:
                self._failed("display", e)
        if cfg.get("printer"):
            try:
                self.printer = open_printer(cfg["printer"])
            except Exception as e:
                self._failed("printer", e)
        if console_port is not None:
            self.ports["console"] = console_port
        for name in LINES:
            if cfg.get(name) and name not in self.ports:
                try:
                    self.ports[name] = open_serial(cfg[name])
                except Exception as e:
                    self._failed(name, e)
        self.opened = True
        return self

    def _failed(self, name, e):
        self.errors[name] = "%s: %s" % (type(e).__name__, e)
        self.metrics.inc("open_failed_" + name)
        self.log("cannot open %s: %s" % (name, e))

    def poll(self):
        """Whatever arrived on the serial lines since the last poll, as events in order:
        ("console", bytes), ("scan", text), ("bad_scan", code), ("key", name)."""
        events = []
        for name in LINES:
            port = self.ports.get(name)
            if port is None:
                continue
            try:
                data = port.read_available()
            except Exception as e:  # a flaky port must not stop the till
                self.metrics.inc("io_error_" + name)
                self.log("%s: %s" % (name, e))
                continue
            if not data:
                continue
            if name == "console":
                events.append(("console", data))
                continue
            for ev in self.framers[name].feed(data):
                if ev[0] == "bad_key":
                    self.metrics.inc("bad_keys")
                    continue
                self.metrics.inc("scans" if ev[0] == "scan" else
                                 "bad_scans" if ev[0] == "bad_scan" else "keys")
                events.append(ev)
        return events

    def reply(self, name, chunks):
        port = self.ports.get(name)
        if port is None:
            return
        try:
            for out in chunks:
                port.write(out)
        except Exception as e:
            self.metrics.inc("io_error_" + name)
            self.log("%s: %s" % (name, e))

    def perform(self, actions, answer=False):
        """The screens' actions: ("show", screen, lines) and ("print", bytes). answer: they
        answer a key or a scan, so every frame is drawn, a repeat of the last one too (a
        second unreadable code is a second frame); redraws skip a repeat."""
        for act in actions:
            try:
                if act[0] == "show":
                    self.display.show(act[1], act[2], force=answer)
                elif act[0] == "print":
                    if self.printer is None:
                        raise OSError("no printer")
                    self.printer.print(act[1])
            except Exception as e:  # paper out or a full disk: the sale itself is safe
                self.metrics.inc("%s_errors" % ("display" if act[0] == "show" else "printer"))
                self.log("%s failed: %s" % (act[0], e))

    def state(self, name):
        """The selftest view of one peripheral."""
        if self.cfg.get(name) is None and name not in self.ports:
            return {"configured": False}
        if name in self.errors:
            return {"configured": True, "open": False, "error": self.errors[name]}
        if not self.opened:
            return {"configured": True, "open": False, "error": None,
                    "note": "agent not running"}
        st = None
        if name == "display":
            st = self.display.state()
        elif name == "printer" and self.printer is not None:
            st = self.printer.state()
        elif name in self.ports:
            st = self.ports[name].state()
            if name in self.framers:
                st.update(self.framers[name].state())
        if st is None:
            return {"configured": True, "open": False, "error": "not open"}
        st["configured"] = True
        st["open"] = st.get("open", True)
        st["error"] = None if st["open"] else "closed"
        return st

    def close(self):
        for port in self.ports.values():
            try:
                port.close()
            except Exception:
                pass
        self.ports = {}
