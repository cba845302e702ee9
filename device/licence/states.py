# The licence states (SPEC 8.5), from the installed licence and the licence clock's time; no
# I/O. A licence runs until `exp` (exclusive, like a coupon's), then `grace` seconds more:
#   none        no licence was ever installed: everything works
#   ok          more than 30 days left
#   expiring    30 days or less left (the idle screen shows the days left)
#   grace       past exp by less than grace seconds (the idle screen warns)
#   restricted  past exp + grace: no new sales; forwarding and the rest go on
DAY = 86400
EXPIRING_S = 30 * DAY
# The idle reminder steps up at these days left (the host reminds the shop at the same leads).
REMINDER_DAYS = (30, 7, 1)

NONE = "none"
OK = "ok"
EXPIRING = "expiring"
GRACE = "grace"
RESTRICTED = "restricted"


def _days_up_to(seconds):
    """Whole days, rounded up: 1 s left is "1 day", never "0 days"."""
    return -(-seconds // DAY)


def state_of(lic, now):
    """(state, days): days left before the next step down (exp while ok or expiring, the end
    of grace in grace), 0 once restricted, None without a licence. lic: {"exp", "grace"} or
    None; a licence whose facts are lost (an unreadable file) has exp None: restricted."""
    if lic is None:
        return NONE, None
    exp = lic["exp"]
    if exp is None:
        return RESTRICTED, None
    if now < exp:
        left = exp - now
        return (EXPIRING if left <= EXPIRING_S else OK), _days_up_to(left)
    end = exp + lic["grace"]
    if now < end:
        return GRACE, _days_up_to(end - now)
    return RESTRICTED, 0


def reminder_step(days):
    """The reminder step for days left while expiring: 30, 7 or 1 (the smallest lead reached)."""
    step = REMINDER_DAYS[0]
    for lead in REMINDER_DAYS:
        if days <= lead:
            step = lead
    return step
