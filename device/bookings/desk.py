# The bookings at the counter (SPEC 8.4): what the `bookings` screen asks of the terminal. The
# bookings as shown (the host's list with the clerk's actions over it), whether the feature is
# on (host config `bookings`, on unless the host sets it false), the conflicts a supervisor
# has not acknowledged, and recording an action durably through the till (one queue commit,
# forwarded once as `booking_update`).
from device import crypto
from device.bookings.records import RECORD, make_update
from device.screens import messages

BOOKED = "booked"
DAY = 86400


class Desk:
    def __init__(self, listing, overlay, queue, till, roles, settings, clock, metrics, log):
        self.listing = listing
        self.overlay = overlay
        self.queue = queue
        self.till = till
        self.roles = roles
        self.settings = settings
        self.clock = clock  # the screen's "today"
        self.metrics = metrics
        self.log = log

    def enabled(self):
        return self.settings.get("bookings") is not False

    def has_list(self):
        return self.listing.ver > 0

    def view(self):
        return self.overlay.view()

    def to_come(self, now):
        """Today's bookings still to come (booked, slot not over): the idle screen's count."""
        n = 0
        today = now // DAY
        for it in self.overlay.view():
            if it["st"] == BOOKED and it["at"] + it["dur"] > now and it["at"] // DAY == today:
                n += 1
        return n

    def conflict(self, bid):
        """The unacknowledged bad answer about booking bid, or None."""
        for kind, rec, answer in self.queue.notices():
            if kind.record == RECORD and rec["bid"] == bid:
                return answer
        return None

    def act(self, item, op, reason, now):
        """Records `op` on item (as shown); None once durable, else the lines saying why not."""
        if item["st"] != BOOKED:
            return [messages.already(item["st"])]
        shown = self.listing.find(item["bid"])
        if shown is None:
            return [messages.NO_BOOKINGS]
        rec = make_update(crypto.random_bytes(16), shown, op, reason, now,
                          self.roles.clerk_id())
        failed = self.till.record(rec)
        if failed:
            return failed["reason"]
        self.metrics.inc("booking_" + op)
        self.log("booking %s %s (v%d) recorded" % (item["bid"], op, shown["v"]))
        return None
