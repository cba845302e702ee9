# The store services the agent installs at start-up, in this order. Each is a module with
# install(agent) that registers what it adds (queue kinds, downlink handlers, screens, till
# gates, console commands, status facts); the agent's own code never names a service.
SERVICES = (
    "device.members.service",
    "device.licence.service",
    "device.bookings.service",
    "device.refunds.service",
)
