# Refunds on the terminal (SPEC 8.3): wiring only. The refund record is a queue kind (forwarded
# like charges, answered by refund_result); the desk and its screen open from a receipt's QR on
# idle; waiting refunds show on idle and in status; a granted one prints its payout slip.
from device.refunds.desk import RefundBook, RefundDesk
from device.refunds.payout import Payouts
from device.refunds.record import REFUND
from device.refunds.screen import RefundScreen
from device.screens import messages


def install(agent):
    queue = agent.queue
    book = RefundBook()
    queue.add_kind(REFUND)
    queue.listen(on_commit=book.on_commit, on_resolve=book.on_resolve)
    payouts = Payouts(agent.shop, agent.clock)
    queue.listen(on_resolve=payouts.on_resolve, replay=False)
    desk = RefundDesk(agent.till, queue, agent.settings, agent.roles, book, agent.shop,
                      agent.clock, agent.metrics, agent.log, payouts)
    clerk = agent.clerk
    clerk.on_tick(payouts.tick)
    clerk.add_screen(RefundScreen(desk))
    clerk.route_scan(desk.is_receipt, idle=desk.open)

    def idle_lines():
        n = desk.waiting()
        return [messages.refunds_waiting(n)] if n else []

    clerk.add_idle_lines(idle_lines)
    agent.status.add("refunds", lambda: {"waiting": desk.waiting()})
    return desk
