"""Issue 16 point 1, end to end: one downlink over the terminal link's 256 KiB used to cut a
MicroPython terminal off for good (connection dropped, the broker redelivering the message on
every reconnect, every later downlink stuck behind it, nothing counted).

Real mosquitto without a message size limit (what a broker the project did not configure lets
through), real terminal processes on both runtimes: while a terminal is away, a retained
oversized list and a queued oversized downlink are published, then a normal `config`. Back
online, the terminal counts the big ones (`drop_oversized`), applies the config, stays
connected and installs a list published afterwards (which replaces the big retained one); after
another restart nothing oversized comes again: the queued one was acknowledged.
"""
import json
import os
import time

import paho.mqtt.client as paho
import pytest

from protocol import envelope, topics
from tests.support.broker import Broker
from tests.support.shop import Shop
from tests.support.terminal import wait_until

BIG = 300 * 1024  # over the link's protocol.mqtt.MAX_PACKET


@pytest.fixture
def shop(tmp_path):
    broker = Broker(message_size_limit=0)
    broker.start()
    s = Shop(tmp_path, broker)
    try:
        yield s
    finally:
        s.close()
        broker.close()


def publish(broker, topic, payload, retain=False):
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="pub-%d" % os.getpid(),
                    protocol=paho.MQTTv311)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    try:
        info = c.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)
        assert info.is_published()
    finally:
        c.disconnect()
        c.loop_stop()


def connections(broker, device_id):
    return broker.log().count(" as %s " % device_id)


def settings(t):
    try:
        with open(os.path.join(t.data_dir, "host_settings.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_oversized_downlinks_never_cut_a_terminal_off(shop, runtime):
    broker = shop.broker
    dev = "T-OV" + runtime[:2].upper()
    t = shop.terminal(dev, runtime)
    t.wait_status(lambda s: s["online"])
    t.stop()
    root = t.cfg["broker"]["root"]
    publish(broker, topics.fleet(root, "revocations"), os.urandom(BIG), retain=True)
    publish(broker, topics.down(root, dev, "config"), os.urandom(BIG))
    config = envelope.seal(t.secret, dev, "config", 1000, int(time.time()),
                           {"status_interval_s": 7}, os.urandom(16))
    publish(broker, topics.down(root, dev, "config"), config)

    t.start()
    # the queued copy of the retained list, the queued big config, the retained list again
    st = t.wait_status(lambda s: s["online"] and s["metrics"].get("drop_oversized") == 3, 60)
    wait_until(lambda: settings(t).get("status_interval_s") == 7, 20, t.tail)
    assert st["drops"] >= 3
    assert "oversized message on %s" % topics.down(root, dev, "config") in t.tail(20000)
    # still the same connection, and later downlinks flow
    out = shop.publish(revocations=shop.ks.revoke(cmp=["OLD-CAMPAIGN"]))
    assert out["published"] == ["revocations"]
    st = t.wait_status(lambda s: s["rev_ver"] == shop.ks.rev_ver, 20)
    assert st["online"] and connections(broker, dev) == 2, broker.log()[-3000:]

    # acknowledged: after a restart the queued big one does not come again
    t.stop()
    t.start()
    st = t.wait_status(lambda s: s["online"], 30)
    time.sleep(1)
    st = t.status()
    assert st["metrics"].get("drop_oversized", 0) == 0  # the retained big list was replaced
    assert st["rev_ver"] == shop.ks.rev_ver and connections(broker, dev) == 3
