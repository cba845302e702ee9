# The host's database behind one interface: SQLite (a file path: the embedded default of
# `make sim` and the tests) or PostgreSQL (a "postgresql://..." URL: fleets, several workers).
#
# SQL is written once, in the subset both engines run, with `?` placeholders:
#   - types INTEGER (64-bit on both: written BIGINT for PostgreSQL), TEXT, BLOB (BYTEA);
#   - INSERT ... ON CONFLICT (...) DO NOTHING / DO UPDATE, and RETURNING, never INSERT OR IGNORE;
#   - `SELECT ... FOR UPDATE` locks rows on PostgreSQL; SQLite drops the clause (its write
#     transactions are already exclusive: BEGIN IMMEDIATE);
#   - no engine functions beyond COUNT/SUM/MIN/MAX/COALESCE (SUM is NUMERIC on PostgreSQL:
#     wrap it in int());
#   - in ON CONFLICT ... DO UPDATE SET, name the table on the right (`drops.count + 1`):
#     PostgreSQL calls a bare column ambiguous;
#   - `with tx.savepoint() as sp:` nests (SAVEPOINT/RELEASE); sp.rollback() undoes its writes.
# `with store.publish_lock(keys):` orders work on those keys across processes (PostgreSQL session
# advisory locks; SQLite: one lock file beside the database): several host workers publish a
# terminal's answers in the order of their seqs.
# Every write runs inside `with store.transaction() as tx:`; tx.execute(sql, args) returns a
# cursor (fetchone/fetchall/rowcount); rows read as tuples. Uniqueness that exactly-once rests
# on is a key in the database, never a check in a worker's memory.
import contextlib
import fcntl
import hashlib
import itertools
import re
import sqlite3
import threading
import time

_PG_TYPES = ((re.compile(r"\bINTEGER\b"), "BIGINT"), (re.compile(r"\bBLOB\b"), "BYTEA"))
_FOR_UPDATE = re.compile(r"\s+FOR\s+UPDATE(\s+SKIP\s+LOCKED)?\b", re.I)


PUBLISH_LOCKS = 7201  # advisory lock class of publish_lock (two-int form: apart from 424242)


class StoreError(RuntimeError):
    pass


def lock_id(key):
    """A signed 32-bit id for a text key."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big", signed=True)


def is_url(where):
    return isinstance(where, str) and where.startswith(("postgresql://", "postgres://"))


def open_store(where):
    """A Store for a file path (SQLite) or a postgresql:// URL."""
    if is_url(where):
        return PostgresStore(where)
    return SqliteStore(str(where))


_SAVEPOINTS = itertools.count(1)


class Savepoint:
    """SAVEPOINT ... RELEASE around a block; rollback() undoes the block's writes so far (the
    block goes on). An exception leaving the block rolls it back too, then propagates."""

    def __init__(self, tx):
        self._tx = tx
        self.name = "sp%d" % next(_SAVEPOINTS)

    def __enter__(self):
        self._tx.execute("SAVEPOINT " + self.name)
        return self

    def rollback(self):
        self._tx.execute("ROLLBACK TO SAVEPOINT " + self.name)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.rollback()
        self._tx.execute("RELEASE SAVEPOINT " + self.name)
        return False


class _Tx:
    def __init__(self, conn, translate):
        self._conn = conn
        self._translate = translate

    def execute(self, sql, args=()):
        cur = self._conn.cursor()
        cur.execute(self._translate(sql), tuple(args))
        return cur

    def executemany(self, sql, rows):
        cur = self._conn.cursor()
        cur.executemany(self._translate(sql), [tuple(r) for r in rows])
        return cur

    def savepoint(self):
        return Savepoint(self)


class SqliteStore:
    """One connection shared by the threads of one process (serialised by a lock); other
    processes on the same file wait for the write lock (busy timeout)."""

    kind = "sqlite"

    def __init__(self, path):
        self.path = path
        self.where = path
        self._sql = {}
        self.lock = threading.RLock()
        conn = None
        try:
            conn = sqlite3.connect(path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
            _sqlite_wal(conn)  # a file that is not a database fails only here
            # FULL: a committed charge survives a power cut, not only a crash.
            conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as e:  # no such directory, not a database, no permission
            if conn is not None:
                conn.close()
            raise StoreError("cannot open %s: %s" % (path, e))
        self.conn = conn

    def _translate(self, sql):
        out = self._sql.get(sql)
        if out is None:
            out = self._sql[sql] = _FOR_UPDATE.sub("", sql)  # the same few statements
        return out

    def schema(self, ddl):
        """Runs CREATE TABLE/INDEX IF NOT EXISTS statements (';'-separated)."""
        with self.lock:
            self.conn.executescript(ddl)

    def columns(self, table):
        with self.lock:
            return [r[1] for r in self.conn.execute("PRAGMA table_info(%s)" % table)]

    def transaction(self):
        return _SqliteTx(self)

    def transient(self, e):
        """True for an error a second try of the transaction may not meet (another process
        held the write lock past the busy timeout)."""
        return isinstance(e, sqlite3.OperationalError) and (
            "locked" in str(e) or "busy" in str(e))

    def database_error(self, e):
        """True for an error of the database itself (what a command line reports as such)."""
        return isinstance(e, sqlite3.Error)

    def read(self):
        """A read-only view without a write lock (reports)."""
        return _SqliteRead(self)

    @contextlib.contextmanager
    def publish_lock(self, keys):
        """One lock for every key (SQLite has one writer anyway): a lock file beside the
        database, so host processes on the same file take turns."""
        with self.lock:
            if self.path == ":memory:":
                yield
                return
            with open(self.path + "-publish.lock", "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)

    def close(self):
        with self.lock:
            self.conn.close()


def _sqlite_wal(conn, timeout=30.0):
    # Switching a new file to WAL takes an exclusive lock without waiting on the busy timeout:
    # two processes opening the same new database at once get "database is locked" here.
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


class _SqliteTx:
    def __init__(self, store):
        self.store = store

    def __enter__(self):
        self.store.lock.acquire()
        try:
            self.store.conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.store.lock.release()
            raise
        return _Tx(self.store.conn, self.store._translate)

    def __exit__(self, exc_type, exc, tb):
        conn = self.store.conn
        try:
            if exc_type is None:
                try:
                    conn.execute("COMMIT")
                except BaseException:
                    # A failed COMMIT (disk full, I/O error) leaves the transaction open.
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            elif conn.in_transaction:
                conn.execute("ROLLBACK")
        finally:
            self.store.lock.release()
        return False


class _SqliteRead:
    def __init__(self, store):
        self.store = store

    def __enter__(self):
        self.store.lock.acquire()
        return _Tx(self.store.conn, self.store._translate)

    def __exit__(self, *exc):
        self.store.lock.release()
        return False


class PostgresStore:
    """psycopg 3; one connection per store object (one per worker thread that writes)."""

    kind = "postgres"

    def __init__(self, url):
        try:
            import psycopg
        except ImportError:
            raise StoreError("PostgreSQL needs psycopg (pip install 'psycopg[binary]')")
        self.url = url
        self.where = url
        self._sql = {}
        self.lock = threading.RLock()
        self._psycopg = psycopg
        self.conn = None
        self._connect()

    def _connect(self):
        try:
            self.conn = self._psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except self._psycopg.Error as e:
            raise StoreError("cannot open %s: %s" % (_no_password(self.url), e))

    def transient(self, e):
        """True for an error a second try of the transaction may not meet: a deadlock or a
        serialization failure (the loser is rolled back whole), a lost connection."""
        return isinstance(e, self._psycopg.OperationalError)

    def database_error(self, e):
        """True for an error of the database itself (what a command line reports as such)."""
        return isinstance(e, self._psycopg.Error)

    def _ensure(self):
        # A connection the server dropped (restart, idle timeout) is replaced before a new
        # transaction; one lost inside a transaction fails that transaction.
        if self.conn.closed or self.conn.broken:
            self._connect()

    def _translate(self, sql):
        # %s is psycopg's placeholder; a literal % must be doubled first.
        out = self._sql.get(sql)
        if out is None:
            out = self._sql[sql] = sql.replace("%", "%%").replace("?", "%s")
        return out

    def _ddl(self, ddl):
        for pattern, repl in _PG_TYPES:
            ddl = pattern.sub(repl, ddl)
        return ddl

    def schema(self, ddl):
        with self.lock:
            # Two workers creating the same tables at once: serialise on an advisory lock.
            self._ensure()
            with self.conn.transaction():
                self.conn.execute("SELECT pg_advisory_xact_lock(424242)")
                for stmt in self._ddl(ddl).split(";"):
                    if stmt.strip():
                        self.conn.execute(stmt)

    def columns(self, table):
        with self.lock:
            self._ensure()
            rows = self.conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name=%s"
                " AND table_schema=current_schema() ORDER BY ordinal_position",
                (table,)).fetchall()
        return [r[0] for r in rows]

    def transaction(self):
        return _PgTx(self)

    def read(self):
        return _PgTx(self)

    @contextlib.contextmanager
    def publish_lock(self, keys):
        """Session advisory locks on the keys (text), taken in one global order (no deadlock
        between two holders) and held across commits until the block ends."""
        ids = sorted({lock_id(k) for k in keys})
        with self.lock:
            self._ensure()
            taken = []
            try:
                for i in ids:
                    self.conn.execute("SELECT pg_advisory_lock(%s, %s)", (PUBLISH_LOCKS, i))
                    taken.append(i)
                yield
            finally:
                if not self.conn.closed and not self.conn.broken:
                    for i in taken:
                        self.conn.execute("SELECT pg_advisory_unlock(%s, %s)",
                                          (PUBLISH_LOCKS, i))

    def close(self):
        with self.lock:
            self.conn.close()


class _PgTx:
    def __init__(self, store):
        self.store = store
        self._tx = None

    def __enter__(self):
        self.store.lock.acquire()
        try:
            self.store._ensure()
            self._tx = self.store.conn.transaction()
            self._tx.__enter__()
        except BaseException:
            self.store.lock.release()
            raise
        return _PgCursorTx(self.store.conn, self.store._translate)

    def __exit__(self, exc_type, exc, tb):
        try:
            return self._tx.__exit__(exc_type, exc, tb)
        finally:
            self.store.lock.release()


class _PgCursorTx(_Tx):
    def execute(self, sql, args=()):
        cur = self._conn.cursor()
        cur.execute(self._translate(sql), tuple(_pg_arg(a) for a in args))
        return cur

    def executemany(self, sql, rows):
        cur = self._conn.cursor()
        cur.executemany(self._translate(sql), [tuple(_pg_arg(a) for a in r) for r in rows])
        return cur


def _pg_arg(a):
    # bytearray/memoryview go as bytea; bytes already do.
    if isinstance(a, (bytearray, memoryview)):
        return bytes(a)
    return a


def _no_password(url):
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)
