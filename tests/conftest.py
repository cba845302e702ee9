"""Shared pytest fixtures: the repo root on sys.path and real mosquitto brokers."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # for `import device` / `import protocol`; make sets PYTHONPATH too

from tests.support.broker import Broker  # noqa: E402 - needs the path above


@pytest.fixture(scope="session")
def root():
    return ROOT


@pytest.fixture(scope="session")
def broker():
    """One mosquitto for the whole session; tests must not stop or pause it."""
    b = Broker()
    try:
        b.start()
        yield b
    finally:
        b.close()


@pytest.fixture
def fresh_broker():
    """A mosquitto of the test's own, free to stop, kill, pause and restart on its port."""
    b = Broker()
    try:
        b.start()
        yield b
    finally:
        b.close()


@pytest.fixture
def shop(fresh_broker, tmp_path):
    """A shop on its own broker: host_sim, an issuer keystore, terminals (support/shop.py)."""
    from tests.support.shop import Shop
    s = Shop(tmp_path, fresh_broker)
    try:
        yield s
    finally:
        s.close()
