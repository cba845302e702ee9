"""A terminal against a host that knows only SPEC 3.2 (issue 14, charges in batches): the
terminal offers `batch` in its hello, but with no `caps` answer it must forward every charge as
SPEC's single `charge` and resolve each on its `charge_result`. The host here is a bare paho
client on a real mosquitto that speaks exactly SPEC 3 (no host_sim), with a real terminal
process whose journal holds sales made offline.
"""
import os
import random
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from protocol import envelope, topics
from tests.integration.test_broker_flaps import offline_journal

N = 40
ROOT = topics.DEFAULT_ROOT


class SpecHost:
    """Answers each `charge` with an approved `charge_result`; records every uplink type."""

    def __init__(self, port, dev, secret):
        self.dev, self.secret = dev, secret
        self.seq = 0
        self.types = []
        self.hellos = []
        self.answered = set()
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id="spec-host-" + os.urandom(4).hex(),
                                  protocol=mqtt.MQTTv311)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, 30)
        self.client.subscribe("%s/dev/%s/up/#" % (ROOT, dev), 1)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg):
        _, dev, mtype = topics.parse(ROOT, msg.topic)
        p = envelope.open_envelope(self.secret, msg.payload, dev, mtype)
        with self.lock:
            self.types.append(mtype)
            if mtype == "hello":
                self.hellos.append(p["body"])
            if mtype != "charge":
                return
            self.seq += 1
            cid = p["body"]["cid"]
            self.answered.add(cid)
            body = {"cid": cid, "st": "approved", "auth": "SPEC", "cpn": []}
            data = envelope.seal(self.secret, dev, "charge_result", self.seq, int(time.time()),
                                 body, os.urandom(16))
        client.publish(topics.down(ROOT, dev, "charge_result"), data, 1)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_a_spec_only_host_gets_single_charges_and_the_queue_empties(shop, runtime):
    t = shop.terminal("T-S", runtime, start=False)
    sales = offline_journal(t.data_dir, N, int(time.time()), random.Random(7))
    host = SpecHost(shop.broker.port, "T-S", t.secret)
    try:
        t.start()
        st = t.wait_status(lambda s: s["queue"]["pending"] == 0, 60)
        assert st["queue"] == {"pending": 0, "amount": 0, "oldest_at": None}
        with host.lock:
            assert host.answered == set(sales)
            assert set(host.types) <= {"hello", "charge", "status"}, host.types
            # the offer was made (a key SPEC's hello does not have) and went unanswered
            assert host.hellos and host.hellos[0]["batch"] >= 2
        assert st["metrics"].get("recv_charge_result", 0) >= N
        assert "recv_charge_results" not in st["metrics"]
    finally:
        host.close()
