# A host-only storm: charges sealed beforehand for terminals registered only for it, published by
# one light paho client as fast as the broker takes them. No simulated terminal spends CPU while
# it runs, so the host workers (and their database) bound the rate: this is how throughput
# scales with workers on a machine whose cores the terminals' shards would otherwise fill.
# Each round checks that every charge it published is in the host's charges table once.
import os
import time

import paho.mqtt.client as mqtt

from host_sim.registry import Registry
from host_sim.store import open_store
from protocol import envelope, topics

PREFIX = "HS"  # device ids HS0000...: apart from a fleet's F0000...
INFLIGHT = 1024


class HostStorm:
    def __init__(self, db, broker, devices=200, per_device=15, currency="CNY",
                 merchant="M-FLEET", root=topics.DEFAULT_ROOT, per_store=10):
        self.db = db
        self.broker = broker  # (host, port)
        self.per_device = per_device
        self.currency = currency
        self.merchant = merchant
        self.root = root
        self.per_store = per_store
        self.devices = [PREFIX + "%04d" % i for i in range(devices)]
        self.secrets = {}
        self.seq = 0  # the last seq sealed, the same for every storm terminal
        self.sent = set()  # (device, cid) of every round published so far

    def prepare(self):
        reg = Registry(self.db)
        try:
            for i, dev in enumerate(self.devices):
                self.secrets[dev] = reg.register(dev, "HS%03d" % (i // self.per_store),
                                                 self.merchant)
        finally:
            reg.close()

    def seal_round(self):
        """[(topic, envelope, device, cid)]: per_device charges per terminal, interleaved (one
        of each terminal, then the next), each terminal's seqs rising."""
        now = int(time.time())
        out = []
        for _ in range(self.per_device):
            self.seq += 1
            for dev in self.devices:
                cid = os.urandom(16)
                amt = 100 + self.seq
                body = {"cid": cid, "kind": "sale", "gross": amt, "amt": amt,
                        "cur": self.currency, "at": now, "off": True, "clerk": "storm",
                        "cpn": []}
                data = envelope.seal(self.secrets[dev], dev, "charge", self.seq, now, body,
                                     os.urandom(16))
                out.append((topics.up(self.root, dev, "charge"), data, dev, cid))
        return out

    def run(self, messages, timeout=300.0, poll_s=0.05):
        """Publishes a sealed round and waits until the host has every charge of it; returns
        {"charges", "drain_s", "charges_per_s", "lost", "duplicated", "drops"} (drops: messages
        of the storm's terminals the workers refused meanwhile, by reason; none expected)."""
        store = open_store(self.db)
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id="host-storm-%d" % os.getpid())
        client.max_inflight_messages_set(INFLIGHT)
        client.max_queued_messages_set(0)
        try:
            before = self._count(store)
            drops0 = self._drops(store)
            client.connect(self.broker[0], self.broker[1])
            client.loop_start()
            self.sent.update((dev, cid) for _, _, dev, cid in messages)
            t0 = time.monotonic()
            for topic, data, _, _ in messages:
                client.publish(topic, data, qos=1)
            want = before + len(messages)
            deadline = t0 + timeout
            got = before
            while got < want and time.monotonic() < deadline:
                time.sleep(poll_s)
                got = self._count(store)
            took = max(time.monotonic() - t0, 1e-3)
            out = {"charges": len(messages), "drain_s": round(took, 2),
                   "charges_per_s": round((got - before) / took, 1)}
            out.update(self._check(store, messages))
            drops = self._drops(store)
            out["drops"] = {k: n - drops0.get(k, 0) for k, n in drops.items()
                            if n != drops0.get(k, 0)}
            return out
        finally:
            client.loop_stop()
            client.disconnect()
            store.close()

    def _count(self, store):
        with store.read() as tx:
            return tx.execute("SELECT COUNT(*) FROM charges WHERE device_id LIKE ?",
                              (PREFIX + "%",)).fetchone()[0]

    def _drops(self, store):
        with store.read() as tx:
            rows = tx.execute("SELECT reason, SUM(count) FROM drops WHERE device_id LIKE ?"
                              " GROUP BY reason", (PREFIX + "%",)).fetchall()
        return {reason: int(n) for reason, n in rows}

    def _check(self, store, messages):
        """lost: published, not at the host; duplicated: at the host twice, or never sent."""
        with store.read() as tx:
            rows = tx.execute("SELECT device_id, cid FROM charges WHERE device_id LIKE ?",
                              (PREFIX + "%",)).fetchall()
        host = {}
        for dev, cid in rows:
            key = (dev, bytes(cid))
            host[key] = host.get(key, 0) + 1
        lost = sum(1 for _, _, dev, cid in messages if (dev, cid) not in host)
        twice = sum(n - 1 for n in host.values()) + sum(1 for k in host if k not in self.sent)
        return {"lost": lost, "duplicated": twice}
