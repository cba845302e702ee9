# Device configuration (SPEC 5): parsed, checked and completed with defaults.
# Every error names the bad key, e.g. "broker.port: must be an integer 1..65535".
import json

from protocol.messages import LIMIT_KEYS
from protocol.schema import MAX_PIN_ITERATIONS

DEFAULT_LIMITS = {
    "offline_max_charge": 50000,
    "offline_max_total": 500000,
    "offline_max_count": 2000,
    "offline_max_age_s": 259200,
}
DEFAULT_BROKER = {"host": "127.0.0.1", "port": 1883, "tls": False, "username": None,
                  "password": None, "root": "pos/v1", "ca": None, "cert": None, "key": None,
                  "keepalive": 30}
DRIVER_KEYS = ("scanner", "keypad", "display", "printer", "console")
FILE_DRIVERS = ("display", "printer")  # drivers that write a file: confined by `config set`
PIN_ROLES = ("tech", "supervisor", "clerk")
_HEX = "0123456789abcdef"


class ConfigError(ValueError):
    def __init__(self, key, reason):
        super().__init__("%s: %s" % (key, reason))
        self.key = key
        self.reason = reason


def _text(obj, key, name=None, optional=False, max_len=64):
    name = name or key
    v = obj.get(key)
    if v is None and optional:
        return None
    if not isinstance(v, str) or not v or len(v) > max_len:
        raise ConfigError(name, "must be a non-empty text of at most %d chars" % max_len)
    return v


def _int(obj, key, name, lo, hi=None):
    v = obj.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
        raise ConfigError(name, "must be an integer %d..%s" % (lo, hi if hi is not None else ""))
    return v


def _hex(v, name, lengths):
    if not isinstance(v, str) or len(v) not in lengths or any(c not in _HEX for c in v):
        raise ConfigError(name, "must be lowercase hex of %s chars" % "/".join(
            str(n) for n in lengths))
    return v


def _check_id(v, name):
    # Ids become MQTT topic levels: no wildcards, separators or control characters.
    for c in v:
        if c in "/+#" or ord(c) < 0x21 or ord(c) > 0x7E:
            raise ConfigError(name, "has a character not allowed in an id: %r" % c)
    return v


def check_pin_hash(v, name):
    parts = v.split("$") if isinstance(v, str) else []
    if len(parts) != 4 or parts[0] != "pbkdf2-sha256":
        raise ConfigError(name, "must be pbkdf2-sha256$ITERATIONS$SALT_HEX$HASH_HEX")
    try:
        iters = int(parts[1])
    except ValueError:
        iters = 0
    if iters < 1 or iters > MAX_PIN_ITERATIONS:
        raise ConfigError(name, "iterations must be 1..%d" % MAX_PIN_ITERATIONS)
    if not parts[2] or len(parts[2]) % 2 or any(c not in _HEX for c in parts[2]):
        raise ConfigError(name, "salt must be lowercase hex")
    _hex(parts[3], name + " hash", (64,))
    return v


def _driver(v, name, data_dir, confine):
    if v is None:
        return None
    if not isinstance(v, dict) or not isinstance(v.get("driver"), str):
        raise ConfigError(name, "must be an object with a \"driver\" name, or null")
    if "baud" in v:
        _int(v, "baud", name + ".baud", 50, 4000000)
    if name in FILE_DRIVERS and "path" in v:
        path = v["path"]
        if not isinstance(path, str) or not path or "\x00" in path:
            raise ConfigError(name + ".path", "must be a file path")
        if name in confine:
            _confined(path, name + ".path", data_dir)
    return dict(v)


def _plain(path):
    while path.startswith("./"):
        path = path[2:]
    return path


def _confined(path, name, data_dir):
    """A file the display or printer driver writes, as `config set` may change it: inside
    data_dir, or a device node under /dev/ (a printer port), never anywhere else a console
    could point it."""
    if ".." in path.split("/"):
        raise ConfigError(name, "must not contain ..")
    base = _plain(data_dir).rstrip("/") + "/"
    if not (_plain(path).startswith(base) or path.startswith("/dev/")):
        raise ConfigError(name, "must be inside data_dir (%s) or a /dev/ device" % data_dir)
    return path


def parse(obj, confine=()):
    """Checks a config object (as loaded from JSON) and returns a completed copy. confine: the
    file drivers (FILE_DRIVERS) whose path must stay inside data_dir: those `config set` changes
    (SPEC 5 lets the config file and a provision put them anywhere)."""
    if not isinstance(obj, dict):
        raise ConfigError("config", "must be a JSON object")
    cfg = {}
    for key in ("device_id", "store_id", "merchant_id"):
        cfg[key] = _check_id(_text(obj, key), key)
    cur = _text(obj, "currency", max_len=3)
    if len(cur) != 3 or not cur.isalpha() or cur.upper() != cur:
        raise ConfigError("currency", "must be a 3-letter upper-case code")
    cfg["currency"] = cur
    cfg["secret_hex"] = _hex(obj.get("secret_hex"), "secret_hex", (64,))
    roots = obj.get("root_keys")
    if not isinstance(roots, list) or not roots:
        raise ConfigError("root_keys", "must be a non-empty list of hex public keys")
    cfg["root_keys"] = [_hex(k, "root_keys[%d]" % i, (64, 66, 130)) for i, k in enumerate(roots)]
    cfg["data_dir"] = _text(obj, "data_dir", max_len=200)

    broker = obj.get("broker", {})
    if not isinstance(broker, dict):
        raise ConfigError("broker", "must be an object")
    b = dict(DEFAULT_BROKER)
    b.update(broker)
    _text(b, "host", "broker.host", max_len=253)
    _int(b, "port", "broker.port", 1, 65535)
    if not isinstance(b["tls"], bool):
        raise ConfigError("broker.tls", "must be true or false")
    for k in ("username", "password", "ca", "cert", "key"):
        if b[k] is not None and not isinstance(b[k], str):
            raise ConfigError("broker." + k, "must be text or null")
    _check_id(_text(b, "root", "broker.root", max_len=64).replace("/", "_"), "broker.root")
    _int(b, "keepalive", "broker.keepalive", 5, 3600)
    cfg["broker"] = b

    for key in DRIVER_KEYS:
        cfg[key] = _driver(obj.get(key), key, cfg["data_dir"], confine)

    limits = obj.get("limits", {})
    if not isinstance(limits, dict):
        raise ConfigError("limits", "must be an object")
    cfg["limits"] = dict(DEFAULT_LIMITS)
    for k in limits:
        if k not in LIMIT_KEYS:
            raise ConfigError("limits." + k, "unknown limit")
        cfg["limits"][k] = _int(limits, k, "limits." + k, 0)

    pins = obj.get("pins", {})
    if not isinstance(pins, dict):
        raise ConfigError("pins", "must be an object")
    cfg["pins"] = {}
    for k in pins:
        if k not in PIN_ROLES:
            raise ConfigError("pins." + k, "unknown role (tech, supervisor, clerk)")
        cfg["pins"][k] = check_pin_hash(pins[k], "pins." + k)

    cfg["status_interval_s"] = 60
    if "status_interval_s" in obj:
        cfg["status_interval_s"] = _int(obj, "status_interval_s", "status_interval_s", 1, 86400)
    return cfg


def load(path):
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise ConfigError("config", "cannot read %s: %s" % (path, e))
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise ConfigError("config", "not valid JSON: %s" % e)
    return parse(obj)


def dumps(cfg):
    return json.dumps(cfg)
