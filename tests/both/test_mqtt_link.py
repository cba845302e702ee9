# The pure parts of device/ports/mqtt_link.py on both runtimes: reconnect backoff and the
# session's clock. The link itself runs against real mosquitto in tests/integration/test_link.py.
from device.ports.mqtt_link import Backoff, Millis


def test_backoff_doubles_up_to_its_cap_and_resets():
    low = Backoff(0.5, 30.0, 0.25, rand=lambda: 0.0)  # jitter at its lowest: -25 %
    assert [low.next() for _ in range(9)] == [0.375, 0.75, 1.5, 3.0, 6.0, 12.0, 22.5, 22.5,
                                              22.5]
    high = Backoff(0.5, 30.0, 0.25, rand=lambda: 1.0)  # and at its highest: +25 %
    assert [high.next() for _ in range(3)] == [0.625, 1.25, 2.5]
    high.reset()
    assert high.next() == 0.625
    flat = Backoff(1.0, 4.0, 0.0)
    assert [flat.next() for _ in range(4)] == [1.0, 2.0, 4.0, 4.0]


def test_backoff_jitter_spreads_within_its_bounds():
    b = Backoff(1.0, 8.0, 0.25)
    delays = [b.next() for _ in range(60)][3:]  # at the cap from the fourth on
    assert all(6.0 <= d <= 10.0 for d in delays)
    assert len(set(delays)) > 20  # a fleet does not come back in lockstep


def test_millis_counts_up_from_zero():
    import time
    m = Millis()
    a = m()
    time.sleep(0.02)
    b = m()
    assert 0 <= a < 15 and 15 <= b - a < 1000 and m() >= b
