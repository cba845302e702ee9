# The technician console's commands (SPEC 6), run against a live agent.
from device import build, rt
from device.console import reply_ok


class Commands:
    def __init__(self, agent):
        self.agent = agent

    def cmd_status(self, arg):
        a = self.agent
        count, amount, oldest = a.queue.totals()
        return reply_ok(
            device_id=a.device_id, store_id=a.cfg["store_id"], fw=build.FW, rt=rt.NAME,
            online=a.online, queue={"pending": count, "amount": amount, "oldest_at": oldest},
            trust_ver=a.trust_ver(), rev_ver=a.rev_ver(),
            declined_unseen=len(a.queue.unacked), boot=a.counters.boot,
            uptime=a.uptime(), drops=a.metrics.drops(), metrics=a.metrics.snapshot())
