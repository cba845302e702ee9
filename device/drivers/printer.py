# Receipt printer drivers (SPEC 5). `file` appends the ESC/POS bytes the printer would receive.
# A printer fault is never the sale's fault: the record is already durable when we print, so
# errors come out as PrinterError for the caller to show and count, never as a crash.

from device.drivers.files import write_all


class PrinterError(Exception):
    """The printer could not take a job (disk full, file gone, bad job)."""


class FilePrinter:
    def __init__(self, path):
        self.path = path
        self.jobs = 0
        self.bytes = 0
        self.errors = 0
        self.last_error = None
        try:
            self._f = open(path, "ab", buffering=0)
        except OSError as e:
            raise PrinterError("cannot open %s: %s" % (path, e)) from None

    def print(self, data):
        if not isinstance(data, (bytes, bytearray)):
            raise PrinterError("a print job is bytes, got %s" % type(data).__name__)
        try:
            write_all(self._f, data)
            self._f.flush()  # the job is on the "paper" when print() returns
        except OSError as e:
            self.errors += 1
            self.last_error = str(e)
            raise PrinterError("cannot write %s: %s" % (self.path, e)) from None
        self.jobs += 1
        self.bytes += len(data)

    def close(self):
        self._f.close()

    def state(self):
        return {"driver": "file", "path": self.path, "jobs": self.jobs, "bytes": self.bytes,
                "errors": self.errors, "last_error": self.last_error}


def open_printer(cfg):
    driver = cfg.get("driver") if isinstance(cfg, dict) else None
    if driver == "file":
        path = cfg.get("path")
        if type(path) is not str or not path:
            raise ValueError("printer driver file needs a path")
        return FilePrinter(path)
    raise ValueError("unknown printer driver: %r" % (driver,))
