# Members on the terminal (SPEC 8.1): install(agent) wires the member code verifier, the
# `member` screen on idle with its balance query, the member on `sale` (tier discount, F2 pay from
# balance, F3 top-up, F4 VIP), the offline limits of balance payments, and the receipts that
# wait for the host's new balance. Wiring only: each concept is its own module here.
import asyncio

from device.members.balance_query import BalanceQuery
from device.members.counter import Counter
from device.members.offline import OfflineBalance
from device.members.receipts import HeldReceipts
from device.members.screen import NAME, MemberScreen
from device.members.verifier import PREFIX, MemberVerifier, new_result


def checker(verifier, clock, metrics, log):
    """check(text) -> reading: the stateful check at the terminal's clock, never raising."""
    def check(text):
        try:
            r = verifier.check(text, clock.now(), clock.trusted(), stateful=True)
        except Exception as e:  # the screens must get a verdict, whatever went wrong
            metrics.inc("member_check_errors")
            log("member code check failed: %s" % e)
            r = new_result()
        metrics.inc("member_" + r["verdict"])
        return r
    return check


def sender(uplink, metrics, log):
    """send(body, failed): member_query published in the background (SPEC 8.1: not queued)."""
    def send(body, failed):
        async def publish():
            try:
                await uplink.send("member_query", body)
            except Exception as e:  # offline in between, broker gone: the screen says so
                metrics.inc("member_query_failed")
                log("member_query not sent: %s" % e)
                failed(body["qid"])
        coro = publish()
        try:
            asyncio.create_task(coro)
        except RuntimeError:  # no event loop (a console-only start)
            coro.close()
            failed(body["qid"])
    return send


def install(agent):
    metrics = agent.metrics
    check = checker(MemberVerifier(agent.trust), agent.clock, metrics, agent.log)
    query = BalanceQuery(sender(agent.uplink, metrics, agent.log), agent.uplink, agent.clock,
                         metrics)
    query.on_change = agent.clerk.touch
    screen = MemberScreen(query)
    offline = OfflineBalance(agent.settings, agent.shop["currency"], metrics)
    receipts = HeldReceipts(agent.queue, agent.shop, agent.clock)
    # The queue's ledger is rebuilt at boot and compaction: ask the queue at the time of use.
    counter = Counter(check, agent.till, agent.settings,
                      lambda cti: agent.queue.ledger.uses(cti), receipts)

    def on_idle(clerk, text, now):
        return clerk.go(NAME, now, reading=check(text))

    clerk = agent.clerk
    clerk.add_screen(screen)
    clerk.route_scan(PREFIX, idle=on_idle, sale=counter.scan)
    clerk.on_key("sale", counter.key)
    clerk.add_sale_lines(counter.lines)
    clerk.on_tick(receipts.tick)
    agent.till.add_check(offline.check)
    agent.queue.listen(on_commit=offline.on_commit, on_resolve=offline.on_resolve)
    agent.queue.listen(on_resolve=receipts.on_resolve)
    agent.downlink.on("member_info", query.on_info)
