# The host's device registry (SPEC 3, 3.1, 5): tables in the host database (host_sim/store.py:
# a SQLite file or PostgreSQL) shared with the charge processor and the store services. It
# holds each terminal's secret, its place in the shop (store, merchant), the highest uplink seq
# the host accepted (persisted, so a restarted host still refuses replays), the host's own
# downlink seq (only grows, persisted before use), presence and the last hello/status, and drop
# counters per device and reason. For the locked-down broker (host_sim/mosquitto.py) it also
# keeps each terminal's broker password and the host's own: random, never derived from the MAC
# secret, so a broker-side leak of one says nothing about the other.
import contextlib
import json
import os
import time

from device.config import DEFAULT_LIMITS
from host_sim.store import open_store
from protocol.messages import LIMIT_KEYS

SECRET_LEN = 32
BROKER_PASSWORD_BYTES = 32  # 256 random bits as 64 hex chars: nothing to guess or stretch
# The host's broker identity (username and certificate CN). Device ids are refused when equal to
# it: the broker's ACL grants this name every topic.
HOST_USERNAME = "pos-host"
DRIVER_KEYS = ("scanner", "keypad", "display", "printer", "console")
BROKER_KEYS = ("host", "port", "tls", "username", "password", "root", "ca", "cert", "key")
_DEFAULT_BROKER = {"host": "127.0.0.1", "port": 1883, "tls": False, "username": None,
                   "password": None, "root": "pos/v1"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device_id   TEXT PRIMARY KEY,
    secret      BLOB NOT NULL,
    store_id    TEXT NOT NULL,
    merchant_id TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    last_seq    INTEGER,
    host_seq    INTEGER NOT NULL DEFAULT 0,
    online      INTEGER NOT NULL DEFAULT 0,
    last_hello  TEXT,
    last_status TEXT,
    last_seen   INTEGER,
    broker_password TEXT,
    seq_window  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS devices_store ON devices (store_id);
CREATE TABLE IF NOT EXISTS drops (
    device_id TEXT NOT NULL,
    reason    TEXT NOT NULL,
    count     INTEGER NOT NULL,
    PRIMARY KEY (device_id, reason)
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


# Uplink seqs accepted out of order, only by a host of several workers (serve --shared): bit i
# of seq_window is seq (last_seq - i), so each seq is accepted once, up to SEQ_WINDOW - 1 below
# the highest (docs/decisions.md 2026-12-04, an amendment of SPEC 3.1 for that deployment). A
# single host keeps the SPEC's rule: window 1, nothing at or below the highest.
SEQ_WINDOW = 63
_WINDOW_MASK = (1 << SEQ_WINDOW) - 1

_DEVICE_COLUMNS = ("device_id", "secret", "store_id", "merchant_id", "created_at", "last_seq",
                   "host_seq", "online", "last_hello", "last_status", "last_seen")
_DEVICE_SQL = ", ".join(_DEVICE_COLUMNS)


class RegistryError(ValueError):
    def __init__(self, code, message):
        super().__init__(code + ": " + message)
        self.code = code
        self.message = message


def check_id(value, name):
    # Ids become MQTT topic levels: printable ASCII without separators or wildcards.
    if type(value) is not str or not value or len(value) > 64:
        raise RegistryError("bad_id", "%s must be non-empty text of at most 64 chars" % name)
    for c in value:
        if c in "/+#" or not 0x21 <= ord(c) <= 0x7E:
            raise RegistryError("bad_id", "%s has a character not allowed: %r" % (name, c))
    return value


def _json(obj):
    # Bodies may carry bytes (ids): store them as hex so the JSON column stays readable.
    return json.dumps(obj, sort_keys=True, default=lambda v: v.hex() if isinstance(
        v, (bytes, bytearray)) else str(v))


class Registry:
    """The host database's devices, seqs and drops (host_sim/store.py: SQLite or PostgreSQL).

    Every method takes an optional `tx`: given, it works inside that transaction (the host
    handles a batch of messages in one); absent, it opens its own."""

    def __init__(self, db, clock=time.time, seq_window=1):
        """db: a file path or postgresql:// URL (opened here, closed by close()) or a Store.
        seq_window: 1 is SPEC 3.1 to the letter (a seq must be above the highest accepted);
        several workers sharing the terminals' messages pass SEQ_WINDOW (below)."""
        self.seq_window = seq_window
        self._owns_store = not hasattr(db, "transaction")
        self.store = open_store(db) if self._owns_store else db
        self.path = self.store.where
        self.clock = clock
        self.store.schema(_SCHEMA)
        self._migrate()

    def _migrate(self):
        # Databases made before broker passwords (seq windows) existed get the column; rows
        # get a password the first time one is asked for (broker_password).
        for column, ddl in (("broker_password", "TEXT"),
                            ("seq_window", "INTEGER NOT NULL DEFAULT 0")):
            if column in self.store.columns("devices"):
                continue
            try:
                with self.store.transaction() as tx:
                    tx.execute("ALTER TABLE devices ADD COLUMN %s %s" % (column, ddl))
            except Exception:  # noqa: BLE001 - another process may have added it first
                if column not in self.store.columns("devices"):
                    raise

    def close(self):
        if self._owns_store:
            self.store.close()

    def transaction(self):
        return self.store.transaction()

    def now(self):
        return int(self.clock())

    def _write(self, tx):
        """The caller's transaction, or a new one."""
        return contextlib.nullcontext(tx) if tx is not None else self.store.transaction()

    def _read(self, tx):
        return contextlib.nullcontext(tx) if tx is not None else self.store.read()

    # ------------------------------------------------------------ devices

    def register(self, device_id, store_id, merchant_id, secret=None):
        """Adds a device or re-registers it with a new secret; returns the secret.

        Re-registering (re-provisioning) rotates the secret and the broker password and forgets
        the uplink seq: the terminal may start again from an empty data dir, and replays of
        anything sealed with the old secret fail the MAC anyway. host_seq is kept: it only ever
        grows.
        """
        check_id(device_id, "device_id")
        if device_id == HOST_USERNAME:
            raise RegistryError("reserved_id", "%r is the host's broker identity" % device_id)
        check_id(store_id, "store_id")
        check_id(merchant_id, "merchant_id")
        if secret is None:
            secret = os.urandom(SECRET_LEN)
        if not isinstance(secret, (bytes, bytearray)) or len(secret) != SECRET_LEN:
            raise RegistryError("bad_secret", "secret must be %d bytes" % SECRET_LEN)
        secret = bytes(secret)
        with self.transaction() as c:
            c.execute(
                "INSERT INTO devices (device_id, secret, store_id, merchant_id, created_at,"
                " broker_password) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE"
                " SET secret=excluded.secret, store_id=excluded.store_id,"
                " merchant_id=excluded.merchant_id, last_seq=NULL, seq_window=0,"
                " broker_password=excluded.broker_password",
                (device_id, secret, store_id, merchant_id, self.now(), _new_password()))
        return secret

    # ------------------------------------------------------------ broker credentials

    def broker_password(self, device_id):
        """The device's broker password (made now for a row from before passwords existed)."""
        with self.transaction() as c:
            row = c.execute("SELECT broker_password FROM devices WHERE device_id=? FOR UPDATE",
                            (device_id,)).fetchone()
            if row is None:
                raise RegistryError("unknown_device", "no device %r" % (device_id,))
            if row[0] is not None:
                return row[0]
            password = _new_password()
            c.execute("UPDATE devices SET broker_password=? WHERE device_id=?",
                      (password, device_id))
            return password

    def host_broker_password(self):
        """The host's broker password, made once and then kept."""
        with self.transaction() as c:
            c.execute("INSERT INTO meta (key, value) VALUES ('host_broker_password', ?)"
                      " ON CONFLICT (key) DO NOTHING", (_new_password(),))
            return c.execute("SELECT value FROM meta WHERE key='host_broker_password'"
                             ).fetchone()[0]

    def broker_accounts(self):
        """[(username, password)]: every registered device, then the host."""
        with self.store.read() as c:
            ids = [r[0] for r in c.execute(
                "SELECT device_id FROM devices ORDER BY device_id").fetchall()]
        out = [(dev, self.broker_password(dev)) for dev in ids]
        out.append((HOST_USERNAME, self.host_broker_password()))
        return out

    def device(self, device_id, tx=None):
        """The device's row as a dict (last_hello/last_status decoded), or None."""
        with self._read(tx) as c:
            row = c.execute("SELECT %s FROM devices WHERE device_id=?" % _DEVICE_SQL,
                            (device_id,)).fetchone()
        return _device_dict(row) if row else None

    def devices(self, store_id=None, tx=None):
        with self._read(tx) as c:
            if store_id is None:
                rows = c.execute("SELECT %s FROM devices ORDER BY device_id"
                                 % _DEVICE_SQL).fetchall()
            else:
                rows = c.execute("SELECT %s FROM devices WHERE store_id=? ORDER BY device_id"
                                 % _DEVICE_SQL, (store_id,)).fetchall()
        return [_device_dict(r) for r in rows]

    # ------------------------------------------------------------ sequence numbers

    def lookup(self, device_id, tx=None):
        """(secret, last_seq, store_id) for checking an uplink, or None for an unknown device."""
        with self._read(tx) as c:
            row = c.execute(
                "SELECT secret, last_seq, store_id FROM devices WHERE device_id=?",
                (device_id,)).fetchone()
        return (bytes(row[0]), row[1], row[2]) if row else None

    def accept_seq(self, device_id, seq, tx=None):
        """Accepts an uplink seq once: True for a seq above the highest, or below it within
        SEQ_WINDOW and not accepted before (two host workers may finish a terminal's messages
        out of order); False for a seq seen already or older than the window (stale). Atomic:
        the terminal's row stays locked to the transaction."""
        with self._write(tx) as c:
            window = self.seq_window_of(device_id, c)
            if window is None or not self.take_seq(window, seq):
                return False
            self.save_seq_window(device_id, window, c)
            return True

    def seq_window_of(self, device_id, tx):
        """[highest accepted seq, window bits] of the terminal, its row locked to tx (None for
        an unknown device): take_seq() on it accepts seqs in memory, save_seq_window() writes it
        back. A batch of one terminal's messages reads and writes it once."""
        row = tx.execute("SELECT last_seq, seq_window FROM devices WHERE device_id=?"
                         " FOR UPDATE", (device_id,)).fetchone()
        return None if row is None else [row[0], row[1] or 0]

    def take_seq(self, window, seq):
        """accept_seq's rule on a window from seq_window_of(), updated in place."""
        high, bits = window
        if high is None:
            # The first seq this host accepts from the terminal (new, or re-provisioned): those
            # below it were never accepted either. Two workers may finish a new terminal's first
            # messages out of order; with the window all "seen" the earlier ones were dropped
            # and only the terminal's 5 s retry brought them (a fleet storm found it).
            high, bits = seq, 1
        elif seq > high:
            shift = seq - high
            bits = ((bits << shift) | 1) & _WINDOW_MASK if shift < SEQ_WINDOW else 1
            high = seq
        else:
            back = high - seq
            if back == 0 or back >= self.seq_window or bits >> back & 1:
                return False
            bits |= 1 << back
        window[0], window[1] = high, bits
        return True

    def save_seq_window(self, device_id, window, tx):
        tx.execute("UPDATE devices SET last_seq=?, seq_window=? WHERE device_id=?",
                   (window[0], window[1], device_id))

    def seq_is_stale(self, last_seq, seq):
        """The gate's quick check before the authoritative accept_seq: True when seq cannot
        be accepted whatever the window holds."""
        return last_seq is not None and (seq == last_seq or seq <= last_seq - self.seq_window)

    def next_host_seq(self, device_id, tx=None):
        """Reserves and persists the next downlink seq for the device, before it is used."""
        return self.reserve_host_seqs(device_id, 1, tx)[0]

    def reserve_host_seqs(self, device_id, n, tx=None):
        """Reserves n downlink seqs for the device in one write: (first seq, secret)."""
        with self._write(tx) as c:
            row = c.execute("UPDATE devices SET host_seq = host_seq + ? WHERE device_id=?"
                            " RETURNING host_seq, secret", (n, device_id)).fetchone()
        if row is None:
            raise RegistryError("unknown_device", "no device %r" % (device_id,))
        return row[0] - n + 1, bytes(row[1])

    # ------------------------------------------------------------ presence and reports

    def record_hello(self, device_id, body, tx=None):
        self._update(device_id, "last_hello=?, online=1, last_seen=?",
                     (_json(body), self.now()), tx)

    def record_status(self, device_id, body, tx=None):
        self._update(device_id, "last_status=?, last_seen=?", (_json(body), self.now()), tx)

    def set_online(self, device_id, online, at=None, tx=None):
        self._update(device_id, "online=?, last_seen=?",
                     (1 if online else 0, self.now() if at is None else int(at)), tx)

    def _update(self, device_id, assignments, args, tx):
        with self._write(tx) as c:
            c.execute("UPDATE devices SET %s WHERE device_id=?" % assignments,
                      args + (device_id,))

    # ------------------------------------------------------------ drops

    def count_drop(self, device_id, reason, tx=None):
        with self._write(tx) as c:
            c.execute("INSERT INTO drops (device_id, reason, count) VALUES (?, ?, 1)"
                      " ON CONFLICT (device_id, reason) DO UPDATE SET count = drops.count + 1",
                      (device_id, reason))

    def drops(self, device_id=None):
        """{device_id: {reason: count}} (only that device's when device_id is given)."""
        with self.store.read() as c:
            rows = c.execute(
                "SELECT device_id, reason, count FROM drops ORDER BY device_id, reason"
            ).fetchall()
        out = {}
        for dev, reason, count in rows:
            out.setdefault(dev, {})[reason] = count
        if device_id is not None:
            return out.get(device_id, {})
        return out

    # ------------------------------------------------------------ provisioning

    def device_config(self, device_id, broker, data_dir, root_keys, currency, scanner=None,
                      keypad=None, display=None, printer=None, console=None, limits=None,
                      pins=None):
        """The SPEC 5 config object for a registered device (the caller writes the file).

        broker: dict with any of host, port, tls, username, password, root, ca, cert, key (the
        rest default). With tls true the broker is the locked-down one: username and password
        are the device's own (filled in here), ca (the CA's PEM path) is required, and cert/key
        are the device's client certificate and key (CertStore.device_broker gives all three).
        drivers: dicts such as {"driver": "jsonl", "path": ...} or None; pins: role -> hash.
        """
        dev = self.device(device_id)
        if dev is None:
            raise RegistryError("unknown_device", "no device %r" % (device_id,))
        if type(currency) is not str or len(currency) != 3 or not currency.isalpha() \
                or not currency.isupper():
            raise RegistryError("bad_currency", "currency must be a 3-letter upper-case code")
        if not isinstance(root_keys, (list, tuple)) or not root_keys:
            raise RegistryError("bad_root_keys", "root_keys must be a non-empty list of hex")
        keys = []
        for k in root_keys:
            k = k.hex() if isinstance(k, (bytes, bytearray)) else k
            if type(k) is not str or len(k) not in (64, 66, 130) \
                    or any(ch not in "0123456789abcdef" for ch in k):
                raise RegistryError("bad_root_keys",
                                    "root key must be lowercase hex of 32, 33 or 65 bytes")
            keys.append(k)
        b = dict(_DEFAULT_BROKER)
        for k, v in (broker or {}).items():
            if k not in BROKER_KEYS:
                raise RegistryError("bad_broker", "unknown broker key %r" % (k,))
            b[k] = v
        if b["tls"] is True:
            self._tls_credentials(device_id, b)
        lim = dict(DEFAULT_LIMITS)
        for k, v in (limits or {}).items():
            if k not in LIMIT_KEYS:  # the device's own list (SPEC 4 and 8 limits)
                raise RegistryError("bad_limits", "unknown limit %r" % (k,))
            lim[k] = v
        cfg = {
            "device_id": device_id,
            "store_id": dev["store_id"],
            "merchant_id": dev["merchant_id"],
            "currency": currency,
            "secret_hex": dev["secret"].hex(),
            "root_keys": keys,
            "data_dir": str(data_dir),
            "broker": b,
        }
        drivers = {"scanner": scanner, "keypad": keypad, "display": display,
                   "printer": printer, "console": console}
        for key in DRIVER_KEYS:
            d = drivers[key]
            if d is not None and (not isinstance(d, dict) or "driver" not in d):
                raise RegistryError("bad_driver", "%s must be a dict with a driver" % key)
            cfg[key] = dict(d) if d is not None else None
        cfg["limits"] = lim
        cfg["pins"] = dict(pins or {})
        return cfg

    def _tls_credentials(self, device_id, b):
        for k in ("ca", "cert", "key"):
            if b.get(k) is not None and (type(b[k]) is not str or not b[k]):
                raise RegistryError("bad_broker", "broker %s must be a file path" % k)
        if not b.get("ca"):
            raise RegistryError("bad_broker", "a TLS broker needs the CA file (broker ca)")
        if b["username"] not in (None, device_id):
            raise RegistryError("bad_broker", "the broker username is the device id")
        password = self.broker_password(device_id)
        if b["password"] not in (None, password):
            raise RegistryError("bad_broker", "the broker password comes from the registry")
        b["username"] = device_id
        b["password"] = password


def _new_password():
    return os.urandom(BROKER_PASSWORD_BYTES).hex()


def _device_dict(row):
    # The broker password only leaves through broker_password(): reports print device rows.
    d = dict(zip(_DEVICE_COLUMNS, row, strict=True))
    d["secret"] = bytes(d["secret"])
    d["online"] = bool(d["online"])
    for key in ("last_hello", "last_status"):
        if d[key] is not None:
            d[key] = json.loads(d[key])
    return d
