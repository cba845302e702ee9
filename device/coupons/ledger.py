# Coupon ledger: how many times each coupon serial (cti) has been used, here and store-wide.
#
# In memory only: it is rebuilt at boot from the charge queue's journal (sale records carry their
# redemptions; host-reported redemptions and compaction snapshots are journal records too), so a
# redemption is durable exactly when its sale is. Entries are pruned when the coupon expires, so
# the size follows live coupons, not history.

# Host-reported redemptions carry no expiry; keep them this long (longer than any campaign we
# expect) unless a local scan tells us the real expiry.
UNKNOWN_EXP_KEEP_S = 400 * 86400


class Ledger:
    def __init__(self):
        self._uses = {}  # cti -> [local uses, host-reported uses, exp]

    def uses(self, cti):
        e = self._uses.get(cti)
        return 0 if e is None else e[0] + e[1]

    def __len__(self):
        return len(self._uses)

    def _entry(self, cti, exp):
        e = self._uses.get(cti)
        if e is None:
            e = self._uses[cti] = [0, 0, exp]
        elif exp is not None and (e[2] is None or exp > e[2]):
            e[2] = exp
        return e

    def add_local(self, cti, exp, n=1):
        self._entry(cti, exp)[0] += n

    def add_host(self, cti, now):
        """A redemption the host saw at another terminal of the store."""
        e = self._uses.get(cti)
        if e is None:
            e = self._uses[cti] = [0, 0, None]
        e[1] += 1
        if e[2] is None:
            e[2] = now + UNKNOWN_EXP_KEEP_S

    def prune(self, now):
        """Forgets coupons that have expired (exp is exclusive): they can never verify again."""
        dead = [c for c, e in self._uses.items() if e[2] is not None and e[2] <= now]
        for c in dead:
            del self._uses[c]
        return len(dead)

    def snapshot(self):
        """A compact image for the journal: [[cti, local, host, exp], ...]."""
        return [[c, e[0], e[1], e[2]] for c, e in self._uses.items()]

    def restore(self, rows):
        """Replaces the whole ledger with (the first part of) a snapshot (ChargeQueue.compact)."""
        self._uses = {}
        self.add_rows(rows)

    def add_rows(self, rows):
        for cti, local, host, exp in rows:
            e = self._entry(cti, exp)
            e[0] += local
            e[1] += host
