"""A throwaway PostgreSQL server for tests, from the Debian package (scripts/ensure-postgresql).

    pg = Postgres(); pg.start(); url = pg.new_database(); ...; pg.close()

initdb makes a cluster in a temp dir (trust auth, loopback only); `postgres` listens on a free
127.0.0.1 port with its unix socket in the same temp dir, started as a child of ours and stopped
by its PID (fast shutdown, SIGINT). PostgreSQL refuses to run as root: as root the server and
initdb run as the `postgres` OS user, which then owns the temp dir. Durability is off
(fsync=off): these clusters hold test data only.
"""
import atexit
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time

from host_sim.procs import free_port, stop_process

_LIVE = set()
SUPERUSER = "postgres"


class PostgresError(Exception):
    pass


def bin_dir():
    """The newest installed server's bin directory, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0)
    return os.path.dirname(found[-1]) if found else None


def missing_reason():
    """Why no server can be started here, or None when one can."""
    if bin_dir() is None:
        return "PostgreSQL is not installed (scripts/ensure-postgresql installs it as root)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (make setup)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres OS user to run the server as"
    return None


class Postgres:
    host = "127.0.0.1"

    def __init__(self):
        reason = missing_reason()
        if reason:
            raise PostgresError(reason)
        self.bin = bin_dir()
        self.dir = tempfile.mkdtemp(prefix="pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = None
        self.proc = None
        self._n = 0
        self._user = None
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            self._user = pw.pw_uid, pw.pw_gid
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)

    @property
    def url(self):
        """The maintenance database (`postgres`)."""
        return self.database_url("postgres")

    def database_url(self, name):
        return "postgresql://%s@%s:%d/%s" % (SUPERUSER, self.host, self.port, name)

    def _run_as(self):
        if self._user is None:
            return {}
        return {"user": self._user[0], "group": self._user[1], "extra_groups": []}

    def start(self, timeout=30.0):
        log = os.path.join(self.dir, "initdb.log")
        with open(log, "w") as out:
            if self._user:
                os.chown(log, *self._user)
            r = subprocess.run([os.path.join(self.bin, "initdb"), "-D", self.data, "-U",
                                SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C",
                                "--no-sync"], stdout=out, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, cwd=self.dir, **self._run_as())
        if r.returncode != 0:
            raise PostgresError("initdb failed: %s" % open(log).read()[-2000:])
        for _ in range(2):  # a free port taken before the server binds it: once more
            self.port = free_port(self.host)
            if self._start(timeout):
                return self
        raise PostgresError("postgres did not start: %s" % self.log()[-2000:])

    def _start(self, timeout):
        self.log_path = os.path.join(self.dir, "postgres.log")
        out = open(self.log_path, "a")
        if self._user:
            os.chown(self.log_path, *self._user)
        self.proc = subprocess.Popen(
            [os.path.join(self.bin, "postgres"), "-D", self.data, "-p", str(self.port),
             "-h", self.host, "-k", self.dir, "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=200"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.dir,
            **self._run_as())
        out.close()
        _LIVE.add(self)
        import psycopg

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                _LIVE.discard(self)
                return False
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return True
            except psycopg.OperationalError:
                time.sleep(0.1)
        self.stop()
        return False

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except (OSError, AttributeError):
            return ""

    def new_database(self, prefix="t"):
        """A fresh empty database; returns its URL."""
        import psycopg

        self._n += 1
        name = "%s_%d_%s" % (prefix, self._n, os.urandom(3).hex())
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute('CREATE DATABASE "%s"' % name)
        return self.database_url(name)

    def drop_database(self, url):
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)

    def stop(self):
        if self.proc is not None:
            # SIGINT is PostgreSQL's fast shutdown (SIGTERM waits for every client to leave).
            stop_process(self.proc, timeout=10, sig="SIGINT")
            self.proc = None
        _LIVE.discard(self)

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@atexit.register
def _stop_leftovers():
    for pg in list(_LIVE):
        try:
            pg.stop()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
