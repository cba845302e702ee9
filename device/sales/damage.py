# Journal damage the queue found at boot (SPEC 7: a committed record must never vanish without a
# trace). Each time the journal could not be read back whole (bytes that were no valid frame, or
# frames no longer readable as records), an event is kept in journal_damage.json: when, how much,
# and where the damaged file was set aside. Status and the heartbeat carry the counts and the
# selftest fails until a technician acknowledges the events (console `journal ack`).
import json

FILE = "/journal_damage.json"
KEEP = 20  # events kept (oldest dropped); the counts keep adding up


class JournalDamage:
    def __init__(self, fs, data_dir, log):
        self.fs = fs
        self.path = data_dir + FILE
        self.log = log
        self.events = []
        self.total = 0   # events ever recorded
        self.acked = 0   # events acknowledged
        self.save_errors = 0

    def load(self):
        raw = self.fs.read(self.path)
        if raw:
            try:
                st = json.loads(raw)
                self.events = list(st["events"])
                self.total = int(st["total"])
                self.acked = int(st["acked"])
            except (ValueError, KeyError, TypeError):
                # Unreadable evidence is itself damage: keep the selftest failing.
                self.total = self.acked + 1
        return self

    def record(self, at, bad_records, skipped_bytes, saved_as):
        ev = {"at": at, "bad_records": bad_records, "skipped_bytes": skipped_bytes,
              "saved_as": saved_as}
        self.events.append(ev)
        if len(self.events) > KEEP:
            self.events.pop(0)
        self.total += 1
        self.log("JOURNAL DAMAGE: %d unreadable record(s), %d damaged byte(s); copy: %s"
                 % (bad_records, skipped_bytes, saved_as or "none (no room)"))
        self._save()

    def acknowledge(self):
        n = self.total - self.acked
        self.acked = self.total
        self._save()
        return n

    def unacknowledged(self):
        return self.total - self.acked

    def _save(self):
        try:
            self.fs.write_atomic(self.path, json.dumps({
                "events": self.events, "total": self.total, "acked": self.acked}).encode())
        except OSError:
            self.save_errors += 1
