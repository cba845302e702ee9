# Counters that must only grow across reboots: the boot number, the uplink sequence number and
# the highest downlink sequence accepted from the host.
#
# The uplink seq is reserved in blocks: the file records the end of the current block, so a
# message costs no flash write; after a reboot numbering restarts at the recorded end, which is
# above anything sent before (SPEC 3.1: seq only grows).
import json

from device.ports.storage import SlotFile

SEQ_BLOCK = 1000


class Counters:
    def __init__(self, fs, path, block=SEQ_BLOCK, log=None):
        # In place (a slot file): a seq reservation still lands on a full disk.
        self._file = SlotFile(fs, path)
        self.log = log
        self.unsaved = 0  # saves that failed (a full disk): retried at the next flush
        self.path = path
        self.block = block
        self.boot = 0
        self._seq = 0
        self._reserved = 0
        self.host_seq = 0
        self._host_seq_saved = 0
        self.damaged = False

    def open(self):
        """Loads the counters and counts this boot (one flash write)."""
        try:
            raw = self._file.read()
        except OSError:
            raw = b"?"
        state = {}
        if raw:
            try:
                state = json.loads(raw)
            except ValueError:
                state = None
            if not isinstance(state, dict):
                # Atomic writes make this unlikely; keep numbering safe by jumping far ahead.
                self.damaged = True
                state = {"boot": 1 << 20, "seq_reserved": 1 << 40}
        self.boot = _uint(state.get("boot")) + 1
        self._seq = self._reserved = _uint(state.get("seq_reserved"))
        self.host_seq = self._host_seq_saved = _uint(state.get("host_seq"))
        self._reserve()
        return self

    def _reserve(self):
        self._reserved = self._seq + self.block
        self._save()

    def _save(self):
        try:
            self._file.write(json.dumps({
                "boot": self.boot, "seq_reserved": self._reserved, "host_seq": self.host_seq,
            }).encode())
        except OSError as e:
            # A full disk must not stop the terminal (it still forwards what it holds): the
            # numbers stay valid in memory and the save is tried again at the next flush. A
            # reboot before that may reuse up to one block of seqs, which the host drops as
            # stale until numbering passes them (the forwarder simply retries).
            self.unsaved += 1
            if self.log is not None:
                self.log("counters not saved: %s" % e)
            return
        self.unsaved = 0
        self._host_seq_saved = self.host_seq

    def next_seq(self):
        self._seq += 1
        if self._seq >= self._reserved:
            self._reserve()
        return self._seq

    def accept_host_seq(self, seq, durable):
        """Records a downlink seq; durable=True writes it now (messages that change settings)."""
        if seq > self.host_seq:
            self.host_seq = seq
        if durable and self.host_seq != self._host_seq_saved:
            self._save()

    def flush(self):
        if self.host_seq != self._host_seq_saved or self.unsaved:
            self._save()


def _uint(v):
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0
