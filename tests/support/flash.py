# A storage double for power-loss tests: a model of flash plus the writes not yet synced.
#
# It implements the FS interface of device/ports/storage.py. `arm(n)` makes the n-th mutating step
# from now the moment of the power cut: that step is torn (a random prefix of its bytes reaches
# flash, the rest never does), PowerCut is raised, and every later call raises too until
# `reboot()`, which also drops whatever was written but not synced.
import io
import random


class PowerCut(Exception):
    pass


class _Handle:
    def __init__(self, fs, path):
        self.fs = fs
        self.path = path

    def write(self, data):
        self.fs._step()
        # Unsynced: lives only in the page cache until sync().
        self.fs.unsynced.setdefault(self.path, bytearray()).extend(data)
        self.fs._maybe_cut_inside(self.path)

    def sync(self):
        self.fs._step()
        self.fs._maybe_cut_inside(self.path)
        pend = self.fs.unsynced.pop(self.path, None)
        if pend:
            self.fs.files[self.path] = self.fs.files.get(self.path, b"") + bytes(pend)

    def close(self):
        pass


class FlashModelFS:
    def __init__(self, seed=0):
        self.rng = random.Random(seed)
        self.files = {}      # what is on flash
        self.unsynced = {}   # appended but not synced
        self.countdown = None
        self.dead = False
        self.cuts = 0
        self.steps = 0

    # -- fault control -------------------------------------------------------------------------
    def arm(self, n):
        self.countdown = n

    def _step(self):
        if self.dead:
            raise PowerCut()
        self.steps += 1
        if self.countdown is not None:
            self.countdown -= 1
            if self.countdown <= 0:
                self._cut_pending = True
                return
        self._cut_pending = False

    _cut_pending = False

    def _maybe_cut_inside(self, path):
        if self._cut_pending:
            # The torn write: some prefix of the unsynced bytes made it to flash.
            pend = self.unsynced.pop(path, bytearray())
            keep = self.rng.randint(0, len(pend))
            self.files[path] = self.files.get(path, b"") + bytes(pend[:keep])
            self._die()

    def _die(self):
        self.dead = True
        self.cuts += 1
        self._cut_pending = False
        self.countdown = None
        raise PowerCut()

    def reboot(self):
        # Anything still unsynced is lost; a random prefix of it may have landed.
        for path, pend in self.unsynced.items():
            keep = self.rng.randint(0, len(pend))
            self.files[path] = self.files.get(path, b"") + bytes(pend[:keep])
        self.unsynced = {}
        self.dead = False
        self.countdown = None
        self._cut_pending = False

    # -- FS interface --------------------------------------------------------------------------
    def read(self, path):
        if self.dead:
            raise PowerCut()
        data = self.files.get(path)
        if data is None:
            return None
        return data + bytes(self.unsynced.get(path, b""))

    def open_read(self, path):
        data = self.read(path)
        return None if data is None else io.BytesIO(data)

    def write_atomic(self, path, data):
        # temp file written and synced, then renamed: a cut before the rename leaves the old file.
        if not isinstance(data, (bytes, bytearray)):
            data = b"".join(data)
        self._step()
        if self._cut_pending:
            keep = self.rng.randint(0, len(data))
            self.files[path + ".tmp"] = bytes(data[:keep])
            self._die()
        self.files[path + ".tmp"] = bytes(data)
        self._step()
        if self._cut_pending:
            self._die()
        self.files[path] = self.files.pop(path + ".tmp")
        self.unsynced.pop(path, None)

    def open_append(self, path):
        if self.dead:
            raise PowerCut()
        return _Handle(self, path)

    def exists(self, path):
        return path in self.files

    def size(self, path):
        return len(self.files.get(path, b""))

    def remove(self, path):
        self._step()
        self.files.pop(path, None)

    def makedirs(self, path):
        pass
