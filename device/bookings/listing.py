# The store's bookings as the host last sent them (SPEC 8.4): the `bookings` list with the
# highest `ver`, kept on flash (bookings.cbor, written atomically) so the clerk sees it offline
# and after a restart. A list whose `ver` is not above the one kept is ignored and counted
# (`bookings_not_newer`): a replayed or reordered list never rolls the copy back.
#
# Items also change one by one when the host answers a clerk's action with the booking as it
# stands (`booking_result`): an item replaces the kept one only if its `v` is higher, and a new
# list keeps a kept item whose `v` is higher than the list's (an answer that overtook the list).
# Bounded: a list holds at most MAX_BOOKINGS items (protocol schema), so the file stays small.
from protocol import cbor, messages
from protocol.store_messages import MAX_BOOKINGS

FILE = "/bookings.cbor"


class Listing:
    def __init__(self, fs, data_dir, metrics, log):
        self.fs = fs
        self.path = data_dir + FILE
        self.metrics = metrics
        self.log = log
        self.ver = 0
        self.items = []  # sorted by (at, bid)

    def load(self):
        raw = self.fs.read(self.path)
        if not raw:
            return self
        try:
            saved = cbor.loads(raw)
            messages.check("bookings", saved)
        except (ValueError, messages.MessageError) as e:
            # Damaged or from another firmware: start empty; the host sends the list again
            # after the next hello.
            self.metrics.inc("bad_bookings_file")
            self.log("bookings file ignored: %s" % e)
            return self
        self.ver = saved["ver"]
        self.items = _sorted(_latest(saved["items"]))
        return self

    def find(self, bid):
        for it in self.items:
            if it["bid"] == bid:
                return it
        return None

    def install(self, body):
        """A `bookings` body that passed the schema; True when it replaced the copy."""
        if body["ver"] <= self.ver:
            self.metrics.inc("bookings_not_newer")
            return False
        items = _latest(body["items"])
        for i, it in enumerate(items):
            mine = self.find(it["bid"])
            if mine is not None and mine["v"] > it["v"]:
                items[i] = mine
        self.ver = body["ver"]
        self.items = _sorted(items)
        self._save()
        return True

    def update(self, item):
        """The host's booking as it stands (from an answer); True when it changed the copy."""
        mine = self.find(item["bid"])
        if mine is not None and mine["v"] >= item["v"]:
            return False
        if mine is not None:
            self.items.remove(mine)
        elif len(self.items) >= MAX_BOOKINGS:
            return False
        self.items = _sorted(self.items + [_item(item)])
        self._save()
        return True

    def remove(self, bid):
        """The host knows no such booking: it leaves the copy."""
        mine = self.find(bid)
        if mine is None:
            return False
        self.items.remove(mine)
        self._save()
        return True

    def _save(self):
        try:
            self.fs.write_atomic(self.path, cbor.dumps({"ver": self.ver, "items": self.items}))
        except OSError as e:  # a full disk: shown now, the host sends it again after a hello
            self.metrics.inc("bookings_not_saved")
            self.log("bookings not saved: %s" % e)


def _item(it):
    # Only the SPEC's fields are kept: the file holds what the schema checks, nothing more.
    return {"bid": it["bid"], "at": it["at"], "dur": it["dur"], "name": it["name"],
            "svc": it["svc"], "st": it["st"], "v": it["v"]}


def _latest(items):
    """One item per bid, the highest v (a host repeating a bid in one list is not trusted)."""
    by_bid = {}
    for it in items:
        cur = by_bid.get(it["bid"])
        if cur is None or it["v"] > cur["v"]:
            by_bid[it["bid"]] = _item(it)
    return list(by_bid.values())


def _sorted(items):
    items.sort(key=lambda it: (it["at"], it["bid"]))
    return items
