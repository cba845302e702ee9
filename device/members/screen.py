# The `member` screen (SPEC 8.1): a member code scanned on idle. Shows the member and tier from
# the code and, when online, the balance, points, VIP expiry and account state the host answers
# (device/members/balance_query.py); "balance offline" when it cannot. A code that does not
# verify shows its verdict. Nothing is recorded. Any key goes back (a digit starts a sale),
# a scan is handled as on idle; after the menu timeout it goes back by itself.
from device.members import balance_query as bq
from device.ports.clock import gmtime
from device.screens import messages
from device.screens.clerk import Screen, is_digit

NAME = "member"


def day(t):
    y, mo, d = gmtime(t)[:3]
    return "%04d-%02d-%02d" % (y, mo, d)


class MemberScreen(Screen):
    name = NAME
    menu = True

    def __init__(self, query):
        self.query = query
        self.reading = None
        self._drawn = None  # the query state last drawn: a change (timeout) redraws

    def enter(self, clerk, now, reading=None):
        self.reading = reading
        self._drawn = None
        if reading is not None and reading["verdict"] == "ok":
            self.query.ask(reading["mid"])
        else:
            self.query.forget()

    def key(self, clerk, name, now):
        self.query.forget()
        out = clerk.go_idle(None, now)
        if is_digit(name):
            return clerk.key(name, now)
        return out

    def scan(self, clerk, text, now):
        self.query.forget()
        clerk.go_idle(None, now)
        return clerk.scan(text, now)

    def tick(self, clerk, now):
        if self.reading is not None and self.reading["verdict"] == "ok" \
                and self.query.state()[0] != self._drawn:
            clerk.touch()
        return []

    def body(self, clerk):
        r = self.reading or {}
        verdict = r.get("verdict")
        if verdict != "ok":
            lines = [messages.member_verdict_text(verdict)]
            if r.get("mid"):
                lines.append(messages.member_id(r["mid"]))
            return lines
        lines = [messages.member_id(r["mid"])]
        if r.get("name"):
            lines.append(r["name"])
        state, info = self.query.state()
        self._drawn = state
        # SPEC 8.1: the tier from the code; the host's, when it knows another, beside it (the
        # card may predate an upgrade)
        if r["tier"]:
            lines.append(messages.tier_line(r["tier"]))
        if info is not None and info["tier"] and info["tier"] != r["tier"]:
            lines.append(messages.host_tier_line(info["tier"]))
        if state == bq.ASKING:
            lines.append(messages.BALANCE_ASKING)
        elif state == bq.OFFLINE:
            lines.append(messages.BALANCE_OFFLINE)
        elif info["st"] == "unknown":
            lines.append(messages.MEMBER_UNKNOWN)
        else:
            if info["st"] == "blocked":
                lines.append(messages.MEMBER_BLOCKED)
            lines.append(messages.balance_line(clerk.money(info["bal"])))
            lines.append(messages.points_line(info["pts"]))
            vip = info.get("vip_exp")
            lines.append(messages.vip_until(day(vip)) if vip is not None else messages.NO_VIP)
        lines.append(messages.HINT_MEMBER)
        return lines
