# What `config get` shows and `config set` may change in the terminal's config: the settable
# keys, value parsing, dotted-key paths, and hiding secrets. Identity, keys and PINs come only
# from `provision` and the host.
import json

from device import config
from protocol.messages import LIMIT_KEYS

BROKER_KEYS = ("host", "port", "tls", "username", "password", "root", "ca", "cert", "key",
               "keepalive")
LIVE_KEYS = ("limits", "status_interval_s")  # take effect at once; the rest at the next boot
SECRET = "<set>"
MISSING = object()  # lookup() of a key that is not there (None is a real value)


def settable(parts):
    top = parts[0]
    if top == "broker":
        return len(parts) == 2 and parts[1] in BROKER_KEYS
    if top in config.DRIVER_KEYS:
        return len(parts) <= 2 and all(parts)
    if top == "limits":
        return len(parts) == 2 and parts[1] in LIMIT_KEYS
    return parts == ["status_interval_s"]


def parse_value(text):
    """JSON when it parses (numbers, true/false/null, objects, "quoted text"), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def set_path(obj, parts, value):
    cur = obj
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            if p in config.DRIVER_KEYS:
                raise ValueError("%s is not configured: set the whole driver object first" % p)
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def lookup(obj, key):
    cur = obj
    for p in key.split("."):
        if not isinstance(cur, dict) or p not in cur:
            return MISSING
        cur = cur[p]
    return cur


def redact(cfg):
    """A copy of cfg with the device secret, the broker password and the PIN hashes hidden."""
    out = json.loads(json.dumps(cfg))
    out["secret_hex"] = SECRET
    if out.get("broker", {}).get("password") is not None:
        out["broker"]["password"] = SECRET
    out["pins"] = {role: SECRET for role in out.get("pins", {})}
    return out
