# The heartbeat's spread (device/status.py): terminals that came up together do not send their
# status at the same moment every interval.
from device.status import HEARTBEAT_SPREAD, heartbeat_delay


def test_heartbeat_delay_stays_within_the_spread_of_the_interval():
    for interval in (1, 60, 86400):
        delays = [heartbeat_delay(interval, b) for b in range(256)]
        assert min(delays) == interval * (1 - HEARTBEAT_SPREAD)
        assert max(delays) < interval * (1 + HEARTBEAT_SPREAD)
        assert abs(sum(delays) / 256 - interval) < interval * 0.01  # the mean is the interval


def test_heartbeat_delays_of_different_bytes_differ():
    delays = [heartbeat_delay(60, b) for b in range(256)]
    assert len(set(delays)) == 256
    assert sorted(delays) == delays  # spread evenly over the bytes
