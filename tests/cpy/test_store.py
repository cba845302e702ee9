# host_sim/store.py on both engines (a SQLite file, a real PostgreSQL database): the portable SQL
# subset its header promises, transactions, savepoints, row locks and concurrent schema creation.
import threading

import pytest

from host_sim.store import StoreError, open_store

DDL = """
CREATE TABLE IF NOT EXISTS things (
    id    INTEGER PRIMARY KEY,
    name  TEXT NOT NULL,
    data  BLOB,
    n     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS things_name ON things (name);
"""


@pytest.fixture
def store(host_db):
    s = open_store(host_db)
    s.schema(DDL)
    yield s
    s.close()


def rows(store, sql="SELECT id, name, data, n FROM things ORDER BY id"):
    with store.read() as tx:
        return [tuple(r) for r in tx.execute(sql).fetchall()]


def test_types_placeholders_and_upserts(store):
    big = (1 << 63) - 1
    with store.transaction() as tx:
        tx.execute("INSERT INTO things (id, name, data, n) VALUES (?, ?, ?, ?)",
                   (1, "100% sure?", b"\x00\xff", big))
        tx.execute("INSERT INTO things (id, name, data) VALUES (?, ?, ?)",
                   (2, "b", bytearray(b"ba")))
        tx.executemany("INSERT INTO things (id, name, data) VALUES (?, ?, ?)",
                       [(3, "c", memoryview(b"mv")), (4, "d", None)])
        cur = tx.execute("INSERT INTO things (id, name) VALUES (?, ?) ON CONFLICT (id)"
                         " DO UPDATE SET n = things.n + 1 RETURNING n", (2, "ignored"))
        assert cur.fetchone()[0] == 1
        tx.execute("INSERT INTO things (id, name) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
                   (1, "ignored"))
        assert tx.execute("UPDATE things SET n = n WHERE name LIKE '%sure%'").rowcount == 1
    got = rows(store)
    assert got == [(1, "100% sure?", b"\x00\xff", big), (2, "b", b"ba", 1),
                   (3, "c", b"mv", 0), (4, "d", None, 0)]
    assert all(type(r[2]) is bytes for r in got if r[2] is not None)
    with store.read() as tx:
        total = tx.execute("SELECT SUM(n), COUNT(*), MAX(id) FROM things WHERE id > 1").fetchone()
    assert (int(total[0]), total[1], total[2]) == (1, 3, 4)
    assert store.columns("things") == ["id", "name", "data", "n"]
    assert store.columns("nothing_here") == []


def test_a_transaction_commits_whole_or_not_at_all(store):
    with pytest.raises(RuntimeError):
        with store.transaction() as tx:
            tx.execute("INSERT INTO things (id, name) VALUES (1, 'a')")
            raise RuntimeError("crash between two writes")
    assert rows(store) == []
    with pytest.raises(Exception):  # noqa: B017 - each engine raises its own IntegrityError
        with store.transaction() as tx:
            tx.execute("INSERT INTO things (id, name) VALUES (1, 'a')")
            tx.execute("INSERT INTO things (id, name) VALUES (1, 'again')")
    assert rows(store) == []
    with store.transaction() as tx:  # the store is usable after a failed transaction
        tx.execute("INSERT INTO things (id, name) VALUES (1, 'a')")
    assert rows(store) == [(1, "a", None, 0)]


def test_savepoints_roll_back_only_their_part(store):
    with store.transaction() as tx:
        tx.execute("INSERT INTO things (id, name) VALUES (1, 'kept')")
        with tx.savepoint() as sp:
            tx.execute("INSERT INTO things (id, name) VALUES (2, 'undone')")
            sp.rollback()
            tx.execute("INSERT INTO things (id, name) VALUES (3, 'after the rollback')")
        with pytest.raises(Exception):  # noqa: B017 - a failed statement inside a savepoint
            with tx.savepoint():
                tx.execute("INSERT INTO things (id, name) VALUES (4, 'gone')")
                tx.execute("INSERT INTO things (id, name) VALUES (1, 'duplicate')")
        # PostgreSQL would refuse every statement after an error outside a savepoint.
        tx.execute("INSERT INTO things (id, name) VALUES (5, 'still fine')")
    assert [r[0] for r in rows(store)] == [1, 3, 5]


def test_for_update_skip_locked_on_two_connections(store, host_db):
    with store.transaction() as tx:
        tx.executemany("INSERT INTO things (id, name) VALUES (?, ?)", [(1, "a"), (2, "b")])
    if store.kind == "sqlite":
        # SQLite drops the clause: its write transaction is the lock (one writer at a time).
        with store.transaction() as tx:
            got = tx.execute("SELECT id FROM things ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
                             ).fetchall()
        assert [r[0] for r in got] == [1]
        return
    other = open_store(host_db)
    try:
        with store.transaction() as tx:
            first = tx.execute("SELECT id FROM things ORDER BY id LIMIT 1"
                               " FOR UPDATE SKIP LOCKED").fetchall()
            with other.transaction() as tx2:  # another worker meanwhile skips the locked row
                second = tx2.execute("SELECT id FROM things ORDER BY id LIMIT 1"
                                     " FOR UPDATE SKIP LOCKED").fetchall()
        assert [r[0] for r in first] == [1] and [r[0] for r in second] == [2]
    finally:
        other.close()


def test_two_processes_creating_the_schema_at_once(host_db):
    ddl = DDL + "".join("CREATE TABLE IF NOT EXISTS t%d (k TEXT PRIMARY KEY);" % i
                        for i in range(20))
    errors = []
    start = threading.Barrier(4)

    def create():
        try:
            s = open_store(host_db)
            try:
                start.wait(10)
                s.schema(ddl)
            finally:
                s.close()
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    s = open_store(host_db)
    try:
        assert s.columns("t19") == ["k"]
    finally:
        s.close()


def test_a_url_that_cannot_be_opened_names_no_password():
    with pytest.raises(StoreError) as e:
        open_store("postgresql://pos:hunter2@127.0.0.1:9/nope")
    assert "pos:***@" in str(e.value) and "hunter2" not in str(e.value)
