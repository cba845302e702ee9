# Billing periods (SPEC 8.2): pure calendar arithmetic, UTC, no database.
#
# Period n of a subscription starts `n` cycles after its anchor, on the anchor's day of month
# clamped to the month's length, at the anchor's time of day. Every start is computed from the
# anchor itself, never from the previous clamped date: anchor Jan 31 gives Feb 28 (29), Mar 31,
# Apr 30, ... A period ends where the next one starts.
import calendar
import datetime

CYCLE_MONTHS = {"month": 1, "quarter": 3, "year": 12}
CYCLES = tuple(CYCLE_MONTHS)


def _months(cycle):
    try:
        return CYCLE_MONTHS[cycle]
    except KeyError:
        raise ValueError("cycle must be one of %s, not %r" % ("/".join(CYCLES), cycle))


def start(anchor, cycle, n):
    """Unix time at which period n (0 = the anchor's own) of a subscription starts."""
    if n < 0:
        raise ValueError("period index must be >= 0")
    a = datetime.datetime.fromtimestamp(anchor, datetime.timezone.utc)
    y, m = divmod(a.month - 1 + n * _months(cycle), 12)
    y += a.year
    m += 1
    day = min(a.day, calendar.monthrange(y, m)[1])
    return calendar.timegm((y, m, day, a.hour, a.minute, a.second))


def end(anchor, cycle, n):
    """Unix time at which period n ends (exclusive): the start of period n + 1."""
    return start(anchor, cycle, n + 1)


def index_at(anchor, cycle, t):
    """The index of the period holding time t (the last one started at or before t); -1 before
    the anchor."""
    if t < anchor:
        return -1
    a = datetime.datetime.fromtimestamp(anchor, datetime.timezone.utc)
    b = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    n = ((b.year - a.year) * 12 + b.month - a.month) // _months(cycle)
    n = max(n, 0)
    while n > 0 and start(anchor, cycle, n) > t:
        n -= 1
    while start(anchor, cycle, n + 1) <= t:
        n += 1
    return n


def utc(y, m, d, hh=0, mm=0, ss=0):
    """Unix time of a UTC calendar date (for tests and docs)."""
    return calendar.timegm((y, m, d, hh, mm, ss))


def iso(t):
    """ISO 8601 text of a Unix time, UTC."""
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
