# A link under remote control, for tests/integration/test_link.py: the device's one MQTT link
# (device/ports/link.py), run on MicroPython or CPython.
#
#   LINK_PROBE='<json config>' micropython tests/integration/mp_link_probe.py
#   (an environment variable: this MicroPython unix port dies with "FATAL: uncaught NLR" when
#   a command-line argument is 256 characters or longer)
#     {"port": 1883, "client_id": "...", "keepalive": 30, "subs": [[filter, qos], ...],
#      "will": [topic, text, qos, retain] or null, "ctl": "control/topic",
#      "backoff": [first, cap] or null, "host": "127.0.0.1", "tls": false, "ca": path}
#
# Prints one JSON object per line (flushed) for everything that happens:
#   {"ev": "connected", "n": connects, "no_delay": bool}   {"ev": "subscribed", "codes": [...]}
#   {"ev": "msg", "topic": t, "payload": text}   {"ev": "oversized", "topic": t, "size": bytes}
#   {"ev": "published", "id": id}          {"ev": "publish_error", "id": id, "code": c}
#   {"ev": "stats", "t": ms since start, "stats": {...}, "connected": bool}  (on every change)
#   {"ev": "closed"}
# Commands arrive as JSON on the "ctl" topic: {"op": "publish", "id", "topic", "payload",
# "retain", "qos"}, {"op": "close"}.
import asyncio
import json
import os
import sys
import time

from device.ports.link import LinkError, make_link
from device.ports.mqtt_link import Backoff

try:
    from time import ticks_diff, ticks_ms
except ImportError:

    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b


T0 = ticks_ms()
WATCHED = ("connects", "connect_failures", "drops", "ping_timeouts", "bad_packets", "oversized")


def emit(**event):
    sys.stdout.write(json.dumps(event) + "\n")
    try:
        sys.stdout.flush()
    except AttributeError:
        pass


class Probe:
    def __init__(self, cfg):
        self.cfg = cfg
        self.done = asyncio.Event()
        will = cfg.get("will")
        if will:
            will = (will[0], will[1].encode(), will[2], will[3])
        options = {}
        if cfg.get("backoff"):
            options["backoff"] = Backoff(cfg["backoff"][0], cfg["backoff"][1])
        broker = {"host": cfg.get("host", "127.0.0.1"), "port": cfg["port"],
                  "tls": cfg.get("tls", False), "ca": cfg.get("ca"), "username": None,
                  "password": None, "root": "pos/v1"}
        self.link = make_link(broker, cfg["client_id"], will, self.on_connect, self.on_message,
                              cfg.get("keepalive", 30), on_oversized=self.on_oversized,
                              **options)

    async def on_connect(self, link):
        emit(ev="connected", n=link.stats["connects"], no_delay=link.no_delay)
        subs = [tuple(s) for s in self.cfg.get("subs", [])]
        if self.cfg.get("ctl"):
            subs.append((self.cfg["ctl"], 1))
        if subs:
            emit(ev="subscribed", codes=await link.subscribe(subs))

    def on_message(self, topic, payload):
        if topic == self.cfg.get("ctl"):
            asyncio.create_task(self.command(json.loads(payload)))
            return
        emit(ev="msg", topic=topic, payload=payload.decode())

    def on_oversized(self, topic, size):
        emit(ev="oversized", topic=topic, size=size)

    async def command(self, cmd):
        if cmd["op"] == "publish":
            try:
                await self.link.publish(cmd["topic"], cmd["payload"].encode(),
                                        cmd.get("retain", False), cmd.get("qos", 1))
                emit(ev="published", id=cmd["id"])
            except LinkError as e:
                emit(ev="publish_error", id=cmd["id"], code=e.code)
        elif cmd["op"] == "close":
            await self.link.close()

    async def watch(self):
        last = None
        while not self.done.is_set():
            now = [self.link.stats[k] for k in WATCHED] + [self.link.connected]
            if now != last:
                last = now
                emit(ev="stats", t=ticks_diff(ticks_ms(), T0), stats=self.link.stats,
                     connected=self.link.connected)
            await asyncio.sleep(0.01)

    async def main(self):
        watcher = asyncio.create_task(self.watch())
        await self.link.run()
        self.done.set()
        await watcher
        emit(ev="closed")


asyncio.run(Probe(json.loads(os.getenv("LINK_PROBE"))).main())
