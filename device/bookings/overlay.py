# The clerk's booking actions over the host's list (SPEC 8.4: "applied to the local copy at
# once"). Nothing here is written on its own: the overlay is derived from the queue's journal
# through its listener (on_commit / on_resolve, also called while the journal is replayed at
# boot), so an action shows as done from its commit on, across power cuts, until the host has
# answered.
#
# An action applies over the listing's item while that item's v is not above the v the clerk
# saw: once the host's newer state is known (a new list, the answer's booking) the host's state
# shows. Answers: `ok` with the booking updates the listing (an `ok` without one keeps the
# action shown until a list brings the new v); `conflict` updates the listing with the host's
# booking; `unknown` removes the booking from the listing. A conflict or unknown answer is also
# a supervisor's notice (records.py), and the screen marks the booking until it is acknowledged.
from device.bookings.records import RECORD, TARGET


class Overlay:
    def __init__(self, listing, on_change=None):
        self.listing = listing
        self.on_change = on_change  # fn() after anything shown changed (the screen redraws)
        self._local = {}    # bid -> the action shown over the listing
        self._waiting = {}  # uid -> record: committed, not answered yet

    def on_commit(self, kind, rec):
        if kind.record != RECORD:
            return
        self._local[rec["bid"]] = rec
        self._waiting[rec["uid"]] = rec
        self._changed()

    def on_resolve(self, kind, rec, answer):
        if kind.record != RECORD:
            return
        bid = rec["bid"]
        self._waiting.pop(rec["uid"], None)
        st = answer.get("st")
        booking = answer.get("booking")
        if booking is not None and booking.get("bid") == bid:
            self.listing.update(booking)
        mine = self._local.get(bid)
        if mine is not None and mine["uid"] == rec["uid"] and (st != "ok" or booking is not None):
            del self._local[bid]
        if st == "unknown":
            self.listing.remove(bid)
        self._changed()

    def prune(self):
        """Forgets answered actions the list has caught up with (or dropped): after a new list,
        so the overlay stays as small as the actions in flight."""
        for bid in list(self._local):
            rec = self._local[bid]
            it = self.listing.find(bid)
            if rec["uid"] not in self._waiting and (it is None or it["v"] > rec["bv"]):
                del self._local[bid]

    def waiting(self):
        """Actions recorded and not answered yet."""
        return len(self._waiting)

    def view(self):
        """The listing's items with the actions applied: copies with "local": True while the
        host has not answered the action."""
        out = []
        for it in self.listing.items:
            rec = self._local.get(it["bid"])
            if rec is not None and it["v"] <= rec["bv"]:
                it = dict(it)
                it["st"] = TARGET[rec["op"]]
                it["local"] = rec["uid"] in self._waiting
            out.append(it)
        return out

    def _changed(self):
        if self.on_change is not None:
            self.on_change()
