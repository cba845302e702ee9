# Host-managed settings (SPEC 3.2 `config`, SPEC 8): the one owner of the keys the host may set
# (protocol/messages.CONFIG_KEYS: limits, pins, status_interval_s, tier_disc, vip_tiers,
# bookings). The technician's device.json gives the starting values; the host's partial updates
# are kept in host_settings.json beside it and win over them until the technician sets the same
# key again on the console. Every value passes the protocol schema, on the way in and when read
# back from flash; keys this firmware does not keep are refused and counted, never stored.
import json

from protocol import messages

FILE = "/host_settings.json"
_MERGED = ("limits", "pins", "tier_disc")  # maps merged key by key; the rest are replaced


class HostSettings:
    def __init__(self, fs, data_dir, provisioned, metrics, log):
        self.fs = fs
        self.path = data_dir + FILE
        self.metrics = metrics
        self.log = log
        self._prov = {"limits": dict(provisioned.get("limits") or {}),
                      "pins": dict(provisioned.get("pins") or {}),
                      "status_interval_s": provisioned.get("status_interval_s", 60)}
        self._host = {}
        self._listeners = []

    def on_change(self, fn):
        """fn(keys) after the host or the technician changed these top-level keys."""
        self._listeners.append(fn)

    # -- reading ----------------------------------------------------------------------------
    def get(self, key, default=None):
        base = self._prov.get(key)
        host = self._host.get(key)
        if key in _MERGED:
            out = dict(base or {})
            if host:
                out.update(host)
            return out
        if host is not None:
            return host
        return default if base is None else base

    def limits(self):
        return self.get("limits")

    def pins(self):
        return self.get("pins")

    def status_interval_s(self):
        return self.get("status_interval_s")

    # -- the host's updates -----------------------------------------------------------------
    def load(self):
        raw = self.fs.read(self.path)
        if not raw:
            return self
        try:
            saved = json.loads(raw)
            if type(saved) is not dict:
                raise ValueError("not an object")
            saved = self._known(saved, "host_settings_unknown_key")
            messages.check("config", saved)
        except (ValueError, messages.MessageError) as e:
            # Written by an older firmware or damaged: the provisioned values stand (this is
            # also how a terminal recovers from settings it could not use).
            self.metrics.inc("bad_host_settings")
            self.log("host settings ignored: %s" % e)
            return self
        self._host = saved
        return self

    def _known(self, body, counter):
        unknown = messages.config_unknown(body)
        if not unknown:
            return body
        self.metrics.inc(counter, len(unknown))
        self.log("config keys refused: %s" % ",".join(unknown))
        out = {}
        for key, value in body.items():
            if key not in messages.CONFIG_KEYS:
                continue
            if key in messages.CONFIG_SUBKEYS:
                value = {k: v for k, v in value.items() if k in messages.CONFIG_SUBKEYS[key]}
                if not value:
                    continue
            out[key] = value
        return out

    def apply(self, body):
        """A `config` body that passed the schema: known keys merged, unknown refused."""
        body = self._known(body, "config_unknown_key")
        changed = []
        for key, value in body.items():
            if key in _MERGED:
                cur = dict(self._host.get(key) or {})
                cur.update(value)
                self._host[key] = cur
            else:
                self._host[key] = value
            changed.append(key)
        self._save()
        self.log("config from host: %s" % (",".join(changed) or "nothing"))
        self._changed(changed)
        return changed

    def set_provisioned(self, key, value):
        """The technician set `key` (top level) in device.json: that value stands until the host
        sends the key again."""
        self._prov[key] = value
        if key in self._host:
            del self._host[key]
            self._save()
        self._changed([key])

    def _save(self):
        try:
            self.fs.write_atomic(self.path, json.dumps(self._host).encode())
        except OSError as e:  # a full disk: live now, lost at the next boot (counted)
            self.metrics.inc("host_settings_not_saved")
            self.log("host settings not saved: %s" % e)

    def _changed(self, keys):
        for fn in self._listeners:
            fn(keys)
