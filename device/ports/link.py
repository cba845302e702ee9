# The MQTT link port. make_link() returns the paho-mqtt link on CPython (device/ports/link_paho.py)
# and
# the asyncio client (device/ports/mqtt_client.py) on MicroPython; both offer the same interface:
#
#   link = make_link(broker, client_id, will, on_connect, on_message, keepalive=30)
#     broker      {"host", "port", "tls", "username", "password", "root"}, and with tls:
#                 "ca" (CA file the broker must chain to; the host name is checked too) and
#                 "cert" + "key" (the client certificate and its key, both or neither). Paths
#                 name PEM files; MicroPython reads the DER twin (X.der beside X.pem) when it
#                 exists, else converts the PEM itself.
#     will        (topic, payload bytes, qos, retain) or None; sent by the broker only when the
#                 connection dies without a DISCONNECT
#     on_connect  async on_connect(link), awaited after every CONNACK (it may subscribe/publish)
#     on_message  on_message(topic: str, payload: bytes), run in the loop's thread for every
#                 inbound PUBLISH before its PUBACK goes out (at least once: duplicates happen)
#   await link.run()                  stay connected (backoff + jitter) until close()
#   link.connected                    bool
#   await link.publish(topic, payload, retain=False, qos=1, timeout=10)   returns on PUBACK
#   await link.subscribe([(filter, qos), ...])                            -> granted codes
#   await link.close()                clean DISCONNECT (no will), run() returns
#   link.stats                        connects, connect_failures, drops, ping_timeouts, rx, tx,
#                                     bad_packets, retransmits, handler_errors
# make_link raises LinkError("config") for TLS files that are missing or unreadable.
# publish/subscribe raise LinkError when not connected, or when the link drops or the answer
# does not come in time. Sessions are persistent (clean_session=False, client id = device id):
# the broker keeps QoS 1 downlinks while the device is offline, and unacknowledged uplinks are
# sent again after a reconnect.
from device.ports import runtime as rt
from device.ports.mqtt_client import LinkError

__all__ = ["LinkError", "make_link"]


def make_link(broker, client_id, will, on_connect, on_message, keepalive=30, impl=None,
              **options):
    """impl: None (the runtime's own), "paho" (CPython) or "native" (device/ports/mqtt_client.py,
    either runtime). options go to the link: clean_session, backoff, max_inflight, ..."""
    if impl is None:
        impl = "native" if rt.MICROPYTHON else "paho"
    options.setdefault("clean_session", False)
    if impl == "native":
        from device.ports.mqtt_client import MQTTClient

        return MQTTClient(broker, client_id, will, on_connect, on_message, keepalive, **options)
    if impl == "paho" and not rt.MICROPYTHON:
        from device.ports.link_paho import PahoLink

        return PahoLink(broker, client_id, will, on_connect, on_message, keepalive, **options)
    raise LinkError("config", "no MQTT link %r on %s" % (impl, rt.NAME))
