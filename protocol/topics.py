# MQTT topic names of SPEC 3:
#   {root}/dev/{device_id}/up/{type}      device -> host
#   {root}/dev/{device_id}/down/{type}    host -> device
#   {root}/dev/{device_id}/state          retained presence, broker LWT
#   {root}/fleet/down/{trustlist|revocations}
DEFAULT_ROOT = "pos/v1"
FLEET_LISTS = ("trustlist", "revocations")


def _segment(name, value):
    # A topic level we build or parse must be plain: no empty level, separator or wildcard.
    if type(value) is not str or not value or "/" in value or "+" in value or "#" in value \
            or "\x00" in value:
        raise ValueError("bad topic %s %r" % (name, value))
    return value


def _root(root):
    if type(root) is not str or not root:
        raise ValueError("bad topic root %r" % (root,))
    for level in root.split("/"):
        _segment("root level", level)
    return root


def up(root, dev, mtype):
    return "%s/dev/%s/up/%s" % (_root(root), _segment("device", dev), _segment("type", mtype))


def down(root, dev, mtype):
    return "%s/dev/%s/down/%s" % (_root(root), _segment("device", dev), _segment("type", mtype))


def state(root, dev):
    return "%s/dev/%s/state" % (_root(root), _segment("device", dev))


def fleet(root, what):
    if what not in FLEET_LISTS:
        raise ValueError("fleet topic is trustlist or revocations, not %r" % (what,))
    return "%s/fleet/down/%s" % (_root(root), what)


def device_subscriptions(root, dev):
    """Exactly what a device subscribes to: its own down/# and the fleet lists."""
    return ["%s/dev/%s/down/#" % (_root(root), _segment("device", dev)),
            "%s/fleet/down/#" % root]


def parse(root, topic):
    """Splits a concrete topic into (kind, dev, mtype).

    kind "up"/"down": (kind, device, type); "state": ("state", device, None);
    "fleet": ("fleet", None, "trustlist"|"revocations"). Anything else raises ValueError.
    """
    prefix = _root(root) + "/"
    if type(topic) is not str or not topic.startswith(prefix):
        raise ValueError("topic %r is not under %r" % (topic, root))
    levels = topic[len(prefix):].split("/")
    for level in levels:
        _segment("level", level)
    n = len(levels)
    if levels[0] == "dev":
        if n == 4 and levels[2] in ("up", "down"):
            return levels[2], levels[1], levels[3]
        if n == 3 and levels[2] == "state":
            return "state", levels[1], None
    elif levels[0] == "fleet":
        if n == 3 and levels[1] == "down" and levels[2] in FLEET_LISTS:
            return "fleet", None, levels[2]
    raise ValueError("unknown topic %r" % (topic,))
