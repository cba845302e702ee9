# PINs (SPEC 5.2): checking a typed PIN against its pbkdf2-sha256 hash, and the lockout that
# stops guessing. Roles: tech (console), supervisor and clerk (keypad).
#
# The lockout state is a small JSON file written atomically on every change, so pulling the plug
# after four bad guesses does not buy a fifth one for free, and a lock outlives a restart.
import json

from device import crypto
from device.ports.storage import SlotFile
from protocol.schema import MAX_PIN_ITERATIONS

ROLES = ("tech", "supervisor", "clerk")
MAX_PIN = 32
MAX_ITERATIONS = MAX_PIN_ITERATIONS  # one bound for device.json, host config and this check
MAX_FAILURES = 5
LOCK_S = 300

OK = "ok"
WRONG = "wrong"
LOCKED = "locked"
NO_PIN = "no_pin"


class PinError(ValueError):
    """A PIN or a stored hash that cannot be used; .code is bad_pin or bad_hash."""

    def __init__(self, code, message):
        super().__init__(code + ": " + message)
        self.code = code
        self.message = message


def check_pin_text(pin):
    """The PIN as typed: 1..32 printable ASCII characters without spaces."""
    if type(pin) is not str or not 1 <= len(pin) <= MAX_PIN:
        raise PinError("bad_pin", "a PIN is 1..%d characters" % MAX_PIN)
    for c in pin:
        if not 0x21 <= ord(c) <= 0x7E:
            raise PinError("bad_pin", "a PIN is printable ASCII without spaces")
    return pin


def parse_hash(stored):
    """"pbkdf2-sha256$ITERATIONS$SALT_HEX$HASH_HEX" -> (iterations, salt, digest)."""
    parts = stored.split("$") if type(stored) is str else []
    if len(parts) != 4 or parts[0] != "pbkdf2-sha256":
        raise PinError("bad_hash", "not pbkdf2-sha256$ITERATIONS$SALT_HEX$HASH_HEX")
    try:
        iterations = int(parts[1])
        salt = bytes.fromhex(parts[2])
        digest = bytes.fromhex(parts[3])
    except ValueError:
        raise PinError("bad_hash", "iterations, salt or hash is not a number / hex")
    if not 1 <= iterations <= MAX_ITERATIONS or not salt or len(digest) != 32:
        raise PinError("bad_hash", "iterations 1..%d, a salt and a 32-byte hash" % MAX_ITERATIONS)
    return iterations, salt, digest


def hash_pin(pin, salt, iterations=1000):
    """The SPEC 5.2 text form of pin's hash (the host and the technician tool make these)."""
    check_pin_text(pin)
    digest = crypto.pbkdf2_sha256(pin.encode(), salt, iterations, 32)
    return "pbkdf2-sha256$%d$%s$%s" % (iterations, salt.hex(), digest.hex())


def verify_pin(stored, pin):
    """True when pin matches the stored hash; the digests are compared in constant time."""
    iterations, salt, digest = parse_hash(stored)
    check_pin_text(pin)
    return crypto.consteq(crypto.pbkdf2_sha256(pin.encode(), salt, iterations, 32), digest)


class Lockout:
    """Failed PIN attempts and the lock they cause, persisted in `path` through the storage port.

    max_failures bad PINs in a row lock for lock_s seconds of the clock port; after the lock the
    count starts again. A clock that jumps back never makes a lock last longer than lock_s."""

    def __init__(self, fs, path, clock, max_failures=MAX_FAILURES, lock_s=LOCK_S):
        # In place (a slot file): a full disk must not turn a lock into a free retry loop.
        self._file = SlotFile(fs, path)
        self.path = path
        self.clock = clock
        self.max_failures = max_failures
        self.lock_s = lock_s
        self.failures = 0
        self.until = 0
        self.save_errors = 0

    def open(self):
        try:
            raw = self._file.read()
        except OSError:
            raw = b"?"  # unreadable: locked, below
        if raw is None:
            try:
                self._save_or_raise()  # make the slot file whole while there is room
            except OSError:
                pass
            return self
        try:
            state = json.loads(raw)
            failures = state["failures"]
            until = state["until"]
            if type(failures) is not int or type(until) is not int or failures < 0:
                raise ValueError("bad lock state")
        except (ValueError, KeyError, TypeError):
            # Unreadable state must not reopen guessing: treat it as a fresh lock.
            self._lock()
            return self
        self.failures = failures
        self.until = until
        return self

    def locked_for(self):
        """Seconds the lock still holds (0 when PINs may be tried)."""
        if not self.until:
            return 0
        left = self.until - self.clock.now()
        if left <= 0:
            return 0
        if left > self.lock_s:
            # The clock went back: restart the lock from now rather than extend it.
            self.until = self.clock.now() + self.lock_s
            self._save()
            left = self.lock_s
        return left

    def failed(self):
        """Counts a wrong PIN; returns the seconds of lock it caused (0 while attempts remain)."""
        self.failures += 1
        if self.failures >= self.max_failures:
            self._lock()
            return self.lock_s
        self._save()
        return 0

    def succeeded(self):
        if self.failures or self.until:
            self.failures = 0
            self.until = 0
            self._save()

    def attempts_left(self):
        return self.max_failures - self.failures

    def _lock(self):
        self.failures = 0
        self.until = self.clock.now() + self.lock_s
        self._save()

    def _save_or_raise(self):
        self._file.write(json.dumps({"failures": self.failures, "until": self.until}).encode())

    def _save(self):
        try:
            self._save_or_raise()
        except OSError:
            # The count still holds in memory until the next restart.
            self.save_errors += 1


def check(pins, role, pin, lockout):
    """The verdict for a PIN typed for `role` against the configured hashes:
    OK, WRONG, LOCKED (no attempt was made) or NO_PIN (no hash for that role).
    A malformed PIN counts as a wrong one; a malformed stored hash as no PIN."""
    if lockout.locked_for():
        return LOCKED
    stored = pins.get(role) if isinstance(pins, dict) else None
    if stored is None:
        return NO_PIN
    try:
        parse_hash(stored)
    except PinError:
        return NO_PIN
    try:
        good = verify_pin(stored, pin)
    except PinError:
        good = False
    if good:
        lockout.succeeded()
        return OK
    lockout.failed()
    return WRONG
