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


# ---------------------------------------------------------------- host databases

HOST_ENGINES = ("sqlite", "postgres")


@pytest.fixture(scope="session")
def pg_server():
    """One throwaway PostgreSQL server for the session (tests/support/postgres.py); skips the
    test where PostgreSQL cannot be installed."""
    from tests.support.postgres import Postgres, missing_reason

    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    pg = Postgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.close()


@pytest.fixture(scope="session")
def pg_url(pg_server):
    """The session server's maintenance database URL."""
    return pg_server.url


@pytest.fixture(params=HOST_ENGINES)
def new_host_db(request, tmp_path):
    """new_host_db(name) -> a fresh host database: a SQLite path in tmp_path, or the URL of a
    new database on the session's PostgreSQL server (the test runs once per engine)."""
    if request.param == "sqlite":
        return lambda name="host": str(tmp_path / (name + ".db"))
    pg = request.getfixturevalue("pg_server")
    return lambda name="host": pg.new_database(name.replace("-", "_")[:20])


@pytest.fixture
def host_db(new_host_db):
    """A fresh host database, once per engine (SQLite path or PostgreSQL URL)."""
    return new_host_db("host")
