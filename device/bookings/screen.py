# The `bookings` screen (SPEC 8.4), opened by F2 on idle. The next booking first (the first
# booked one whose slot is not over), UP/DOWN move, ENTER checks the customer in, F3 then a digit
# 1..4 cancels with a reason, F4 marks a no-show, CANCEL goes
# back. Each action is recorded durably before the screen shows it done.
#
# Layout (32 columns):
#   Bookings 2/7 today                 position, the selected booking's day
#   >10:30 Ann Lee   Haircut booked    ">" selected, "+" a later day; "*": not answered yet
#    11:15 Bo Chen   Nails   in*
#    12:00 Cy Dorn   Massage cancel
#   10:30-11:15 Ann Lee                the selected booking's slot and name, or its conflict
#   ENTER=in F3=cancel F4=no-show
from device.bookings.records import hhmm
from device.ports.clock import LATEST_SHOWN, gmtime
from device.screens import messages
from device.screens.clerk import Screen, is_digit
from protocol.store_messages import BOOKING_REASONS

NAME = "bookings"
SHOWN = 3  # booking lines on screen under the title
DAY = 86400


def _pad(text, width):
    return (text + " " * width)[:width]


def next_index(items, now):
    """The booking to open on: the first booked one not over, else the first not over, else
    the last."""
    for want_booked in (True, False):
        for i, it in enumerate(items):
            if it["at"] + it["dur"] > now and (it["st"] == "booked" or not want_booked):
                return i
    return len(items) - 1 if items else 0


def item_line(it, selected, today):
    mark = ">" if selected else ("+" if it["at"] // DAY > today else " ")
    st = messages.BOOKING_STATE.get(it["st"], it["st"]) + ("*" if it.get("local") else "")
    return "%s%s %s %s %s" % (mark, hhmm(it["at"]), _pad(it["name"], 9), _pad(it["svc"], 7), st)


def day_word(t, today):
    d = t // DAY
    if d == today:
        return "today"
    if d == today + 1:
        return "tomorrow"
    if t > LATEST_SHOWN:  # past the last date the clock port shows: no date
        return messages.BOOKING_FAR_DAY
    tm = gmtime(t)
    return "%02d-%02d" % (tm[1], tm[2])


class BookingsScreen(Screen):
    name = NAME
    menu = True  # back to idle after the menu timeout without a key

    def __init__(self, desk):
        self.desk = desk
        self.bid = None      # the selected booking (by id: the list may change under it)
        self.picking = None  # bid being cancelled while the reason digit is awaited

    def enter(self, clerk, now, **kw):
        items = self.desk.view()
        self.picking = None
        self.bid = items[next_index(items, now)]["bid"] if items else None

    def _selected(self, items):
        """(index, item) of the selection; a booking that left the list selects its neighbour."""
        if not items:
            return 0, None
        for i, it in enumerate(items):
            if it["bid"] == self.bid:
                return i, it
        self.bid = items[0]["bid"]
        return 0, items[0]

    def key(self, clerk, name, now):
        if not self.desk.enabled():
            return clerk.go_idle(messages.BOOKINGS_OFF, now)
        if name == "CANCEL" and self.picking is None:
            return clerk.go_idle(None, now)
        items = self.desk.view()
        i, item = self._selected(items)
        if self.picking is not None:
            return self._reason(clerk, name, items, now)
        if item is None:
            return clerk.say(clerk.message)
        if name in ("UP", "DOWN"):
            i = max(0, i - 1) if name == "UP" else min(len(items) - 1, i + 1)
            self.bid = items[i]["bid"]
            return clerk.say(None)
        if name == "ENTER":
            return self._act(clerk, item, "check_in", None, now)
        if name == "F4":
            return self._act(clerk, item, "no_show", None, now)
        if name == "F3":
            if item["st"] != "booked":
                return clerk.say(messages.already(item["st"]))
            self.picking = item["bid"]
            return clerk.say(None)
        return clerk.say(clerk.message)

    def _reason(self, clerk, name, items, now):
        if name == "CANCEL":
            self.picking = None
            return clerk.say(None)
        n = int(name) if is_digit(name) else 0
        if not 1 <= n <= len(BOOKING_REASONS):
            return clerk.say(clerk.message)
        bid, self.picking = self.picking, None
        for it in items:
            if it["bid"] == bid:
                return self._act(clerk, it, "cancel", BOOKING_REASONS[n - 1], now)
        return clerk.say(messages.NO_BOOKINGS)

    def _act(self, clerk, item, op, reason, now):
        failed = self.desk.act(item, op, reason, now)
        if failed:
            return clerk.say(" ".join(failed))
        return clerk.say(messages.booking_done(item["name"], op, not clerk.till.online))

    def scan(self, clerk, text, now):
        return clerk.say(messages.FINISH_MENU)

    def body(self, clerk):
        if not self.desk.enabled():
            return [messages.BOOKINGS_OFF, messages.HINT_BACK]
        items = self.desk.view()
        if self.picking is not None:
            for it in items:
                if it["bid"] == self.picking:
                    lines = ["Cancel %s %s?" % (hhmm(it["at"]), it["name"])]
                    for n, text in enumerate(messages.BOOKING_REASON_TEXT, 1):
                        lines.append("%d %s" % (n, text))
                    return lines + [messages.HINT_REASON]
            self.picking = None
        if not items:
            return [messages.TITLE_BOOKINGS, messages.NO_BOOKINGS if self.desk.has_list()
                    else messages.NO_BOOKING_LIST, messages.HINT_BACK]
        today = self.desk.clock.now() // DAY
        i, sel = self._selected(items)
        lines = ["%s %d/%d %s" % (messages.TITLE_BOOKINGS, i + 1, len(items),
                                  day_word(sel["at"], today))]
        for j in range(i, min(i + SHOWN, len(items))):
            lines.append(item_line(items[j], j == i, today))
        bad = self.desk.conflict(sel["bid"])
        if bad is not None:
            lines.append("%s: host has %s" % (bad.get("st", "conflict").upper(),
                                              messages.booking_state(sel["st"])))
        else:
            lines.append("%s-%s %s" % (hhmm(sel["at"]), hhmm(sel["at"] + sel["dur"]),
                                       sel["name"]))
        lines.append(messages.HINT_BOOKINGS)
        return lines
