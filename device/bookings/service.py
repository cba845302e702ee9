# Bookings at the counter (SPEC 8.4): wiring only. The host's list (listing.py) arrives in
# `bookings` downlinks, the clerk's actions are queue records of kind "bkup" (records.py) shown
# over the list at once (overlay.py, rebuilt from the journal), the `bookings` screen
# (screen.py) opens on F2 from idle through the desk (desk.py). Host config `bookings: false`
# turns the screen off; lists are still kept so that turning it on shows them at once, and
# actions already recorded are still forwarded.
from device.bookings import records
from device.bookings.desk import Desk
from device.bookings.listing import Listing
from device.bookings.overlay import Overlay
from device.bookings.screen import NAME, BookingsScreen
from device.screens import messages


def install(agent):
    clerk = agent.clerk
    listing = Listing(agent.fs, agent.data_dir, agent.metrics, agent.log).load()
    overlay = Overlay(listing, on_change=clerk.touch)
    desk = Desk(listing, overlay, agent.queue, agent.till, agent.roles, agent.settings,
                agent.clock, agent.metrics, agent.log)
    agent.queue.add_kind(records.kind())
    agent.queue.listen(on_commit=overlay.on_commit, on_resolve=overlay.on_resolve)

    def on_bookings(body, seq):
        if listing.install(body):
            overlay.prune()
            agent.log("bookings ver %d: %d item(s)" % (listing.ver, len(listing.items)))
            clerk.touch()

    agent.downlink.on("bookings", on_bookings)
    clerk.add_screen(BookingsScreen(desk))

    def on_idle_key(c, key, now):
        if key != "F2":
            return None
        if not desk.enabled():
            return c.go_idle(messages.BOOKINGS_OFF, now)
        return c.go(NAME, now)

    clerk.on_key("idle", on_idle_key)

    def idle_lines():
        if not desk.enabled() or not listing.items:
            return []
        return [messages.idle_bookings(desk.to_come(agent.clock.now()))]

    clerk.add_idle_lines(idle_lines)
    agent.settings.on_change(lambda keys: clerk.touch() if "bookings" in keys else None)
    agent.status.add("bookings", lambda: {"ver": listing.ver, "items": len(listing.items),
                                          "waiting": overlay.waiting()})
