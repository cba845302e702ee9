# Counters of everything dropped, refused or failed: shown by `status` and the console.


class Metrics:
    def __init__(self):
        self.counts = {}

    def inc(self, name, n=1):
        self.counts[name] = self.counts.get(name, 0) + n

    def get(self, name):
        return self.counts.get(name, 0)

    def drops(self):
        """Total of inbound messages dropped (every counter named drop_*)."""
        return sum(v for k, v in self.counts.items() if k.startswith("drop_"))

    def snapshot(self):
        return dict(self.counts)
