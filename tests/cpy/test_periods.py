# Billing periods (host_sim/periods.py): the anchor-day clamp of SPEC 8.2, always from the anchor.
import calendar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from host_sim import periods
from host_sim.periods import utc

LEAP = {2000: True, 2027: False, 2028: True, 2029: False, 2100: False}


def test_leap_years_are_what_the_clamp_test_assumes():
    for y, leap in LEAP.items():
        assert calendar.isleap(y) is leap


@pytest.mark.parametrize("year", [2000, 2027, 2028, 2029, 2100])
@pytest.mark.parametrize("day", [28, 29, 30, 31])
def test_month_end_clamp_for_every_anchor_day(year, day):
    # Anchor on `day` of January at 10:30:15; 36 monthly periods reach into the next years.
    anchor = utc(year, 1, day, 10, 30, 15)
    for n in range(36):
        y, m = year + n // 12, n % 12 + 1
        last = calendar.monthrange(y, m)[1]
        want = utc(y, m, min(day, last), 10, 30, 15)
        assert periods.start(anchor, "month", n) == want, (year, day, n)
        assert periods.end(anchor, "month", n) == periods.start(anchor, "month", n + 1)


def test_jan_31_walks_feb_mar_apr_from_the_anchor_not_from_the_clamped_date():
    a = utc(2027, 1, 31)
    assert [periods.iso(periods.start(a, "month", n)) for n in range(4)] == [
        "2027-01-31T00:00:00Z", "2027-02-28T00:00:00Z", "2027-03-31T00:00:00Z",
        "2027-04-30T00:00:00Z"]
    a = utc(2028, 1, 31)
    assert periods.iso(periods.start(a, "month", 1)) == "2028-02-29T00:00:00Z"
    assert periods.iso(periods.start(a, "month", 2)) == "2028-03-31T00:00:00Z"
    a = utc(2100, 1, 29)  # 2100 is not a leap year
    assert periods.iso(periods.start(a, "month", 1)) == "2100-02-28T00:00:00Z"
    assert periods.iso(periods.start(a, "month", 2)) == "2100-03-29T00:00:00Z"
    a = utc(2000, 1, 30)  # 2000 is
    assert periods.iso(periods.start(a, "month", 1)) == "2000-02-29T00:00:00Z"


@pytest.mark.parametrize("day", [28, 29, 30, 31])
def test_quarter_and_year_cycles(day):
    a = utc(2027, 11, min(day, 30), 8)  # November has 30 days
    q = [periods.start(a, "quarter", n) for n in range(5)]
    assert [periods.iso(t)[:10] for t in q] == [
        "2027-11-%02d" % min(day, 30), "2028-02-%02d" % min(day, 29),
        "2028-05-%02d" % min(day, 30), "2028-08-%02d" % min(day, 30),
        "2028-11-%02d" % min(day, 30)]
    feb29 = utc(2028, 2, 29, 12)
    years = [periods.iso(periods.start(feb29, "year", n))[:10] for n in range(5)]
    assert years == ["2028-02-29", "2029-02-28", "2030-02-28", "2031-02-28", "2032-02-29"]
    y2000 = utc(2000, 2, 29)
    assert periods.iso(periods.start(y2000, "year", 100))[:10] == "2100-02-28"


def test_bad_cycle_and_index():
    with pytest.raises(ValueError):
        periods.start(0, "week", 1)
    with pytest.raises(ValueError):
        periods.start(0, "month", -1)


@given(st.integers(utc(1999, 1, 1), utc(2101, 1, 1)), st.sampled_from(periods.CYCLES),
       st.integers(0, 400 * 86400))
def test_index_at_finds_the_period_holding_a_time(anchor, cycle, offset):
    t = anchor + offset
    n = periods.index_at(anchor, cycle, t)
    assert periods.start(anchor, cycle, n) <= t < periods.start(anchor, cycle, n + 1)
    assert periods.index_at(anchor, cycle, anchor - 1) == -1


@given(st.integers(utc(1999, 1, 1), utc(2101, 1, 1)), st.sampled_from(periods.CYCLES))
def test_periods_are_contiguous_and_increasing(anchor, cycle):
    starts = [periods.start(anchor, cycle, n) for n in range(30)]
    assert starts[0] == anchor
    months = periods.CYCLE_MONTHS[cycle]
    for a, b in zip(starts, starts[1:], strict=False):
        assert 28 * 86400 * months <= b - a <= 31 * 86400 * months + 86400
