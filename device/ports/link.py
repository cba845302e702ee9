# The MQTT link port: make_link() returns the device's one MQTT link, the asyncio edge of
# device/ports/mqtt_link.py around the sans-I/O session of protocol/mqtt_session.py, on CPython
# and MicroPython alike (docs/decisions.md, 2026-12-04). Its interface:
#
#   link = make_link(broker, client_id, will, on_connect, on_message, keepalive=30)
#     broker      {"host", "port", "tls", "username", "password", "root"}, and with tls:
#                 "ca" (CA file the broker must chain to; the host name is checked too) and
#                 "cert" + "key" (the client certificate and its key, both or neither). Paths
#                 name PEM files; MicroPython reads the DER twin (X.der beside X.pem) when it
#                 exists, else converts the PEM itself (device/ports/tls.py).
#     will        (topic, payload bytes, qos, retain) or None; sent by the broker only when the
#                 connection dies without a DISCONNECT
#     on_connect  async on_connect(link), awaited after every CONNACK (it may subscribe/publish)
#     on_message  on_message(topic: str, payload: bytes), run in the event loop for every
#                 inbound PUBLISH before its PUBACK goes out (at least once: duplicates happen)
#     options     clean_session, backoff, max_inflight, max_packet, connect_timeout,
#                 on_oversized(topic, size): told of every inbound PUBLISH over max_packet
#                 (256 KiB), which is skipped unread and acknowledged, never fatal;
#                 on_messages([(topic, payload), ...]): in place of on_message, every message
#                 of one read at once, before any of their PUBACKs (effects made durable
#                 together: device/delivery.py)
#   await link.run()                  stay connected (backoff + jitter) until close()
#   link.connected                    bool
#   await link.publish(topic, payload, retain=False, qos=1, timeout=10)   returns on PUBACK
#   await link.publish_many([(topic, payload), ...], timeout=10)  QoS 1, one write, one wait:
#                                     [None (acknowledged) or LinkError, ...] in the same order
#   await link.subscribe([(filter, qos), ...])                            -> granted codes
#   await link.close()                clean DISCONNECT (no will), run() returns
#   link.stats                        connects, connect_failures, drops, ping_timeouts, rx, tx,
#                                     bad_packets, retransmits, handler_errors, oversized
# make_link raises LinkError("config") for TLS files that are missing or unreadable.
# publish/subscribe raise LinkError when not connected, or when the link drops or the answer
# does not come in time. Sessions are persistent (clean_session=False, client id = device id):
# the broker keeps QoS 1 downlinks while the device is offline, and unacknowledged uplinks are
# sent again after a reconnect.
from device.ports.mqtt_link import LinkError, MQTTLink

__all__ = ["LinkError", "make_link"]


def make_link(broker, client_id, will, on_connect, on_message, keepalive=30, **options):
    options.setdefault("clean_session", False)
    return MQTTLink(broker, client_id, will, on_connect, on_message, keepalive, **options)
