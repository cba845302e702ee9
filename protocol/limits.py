# Message sizes the whole system agrees on (docs/protocol.md, "Sizes"). The terminal's MQTT link
# reads at most protocol.mqtt.MAX_PACKET (256 KiB) of one packet into memory and skips anything
# larger; these limits keep every message the project itself sends well below that.

# The largest signed list (trust list or revocation list: the raw COSE_Sign1 bytes, as they
# travel on {root}/fleet/down/...) a terminal installs. `python -m host_sim.issue` refuses to
# build or publish a larger one. 64 KiB holds about 3 800 revoked serials of 16 bytes (the
# issuer's) or 1 900 of 32 bytes; a terminal installs it within a small heap (docs/bench.md).
LIST_MAX_BYTES = 64 * 1024

# mosquitto's message_size_limit (payload bytes of any PUBLISH) in every broker config the
# project writes: a bit above the largest list, so a list at the maximum always passes and
# anything larger is dropped at the broker, before it reaches a terminal.
BROKER_MESSAGE_LIMIT = LIST_MAX_BYTES + 4 * 1024

# mosquitto's max_packet_size (whole packets, sender disconnected when over) in the locked-down
# broker: room for the largest payload plus its topic and headers. mosquitto 2.0 applies both
# limits to every client (neither can be set per listener or account), so this is also the cap
# on a terminal's uploads, whose real messages are under 2 KiB.
BROKER_PACKET_LIMIT = BROKER_MESSAGE_LIMIT + 1024
