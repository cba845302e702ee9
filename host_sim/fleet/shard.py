# One process of the fleet simulator: N terminals (host_sim/fleet/terminal.py) in one asyncio
# event loop, behind two relays of this process (host_sim/fleet/relay.py): "steady" and
# "outage" (the part of the fleet whose network the plan cuts). Driven by the orchestrator
# (host_sim/fleet/run.py) with one JSON command per line on stdin; answers one JSON event per
# line on stdout.
#
#   python -m host_sim.fleet.shard PLAN.json
#   PLAN: {"configs": [path, ...], "outage": [device_id, ...], "broker": [host, port],
#          "coupons": [token, ...], "seed": int}
#   commands: {"cmd": "phase", "name"}            tag the sales committed from now on
#             {"cmd": "sell", "rate", "duration", "coupon_share", "amount": [lo, hi]}
#             {"cmd": "burst", "per_terminal", "coupon_share", "amount": [lo, hi]}
#             {"cmd": "cut"|"restore", "group": "outage"|"all"}
#             {"cmd": "wait_online", "timeout"}  {"cmd": "wait_drained", "timeout"}
#             {"cmd": "report"}                  {"cmd": "stop"}
#   every command is answered by {"ev": "<cmd>", ...} once done.
import asyncio
import json
import random
import sys
import time

from device import config as device_config
from host_sim.fleet.relay import Relay
from host_sim.fleet.terminal import FleetTerminal

POLL_S = 0.05


class Shard:
    def __init__(self, plan):
        self.plan = plan
        self.rand = random.Random(plan.get("seed", 0))
        self.coupons = list(plan.get("coupons", ()))
        self.terminals = []
        self.relays = {}
        self.group_of = {}
        self.phase = "start"
        self.phase_of = {}  # cid -> phase it was committed in
        self._selling = set()

    async def start(self):
        host, port = self.plan["broker"]
        outage = set(self.plan.get("outage", ()))
        for name in ("steady", "outage"):
            self.relays[name] = await Relay(host, port).start()
        for path in self.plan["configs"]:
            cfg = device_config.load(path)
            group = "outage" if cfg["device_id"] in outage else "steady"
            cfg["broker"]["host"] = "127.0.0.1"
            cfg["broker"]["port"] = self.relays[group].port
            t = FleetTerminal(cfg)
            self.group_of[t.device_id] = group
            self.terminals.append(t)
        for t in self.terminals:
            t.start()
        return {"terminals": len(self.terminals)}

    # ------------------------------------------------------------ commands

    async def cmd_phase(self, name):
        self.phase = name
        return {"name": name}

    def _sell_one(self, t, share, amount):
        coupon = None
        if self.coupons and self.rand.random() < share:
            coupon = self.rand.choice(self.coupons)
        cid = t.sell(self.rand.randint(amount[0], amount[1]), coupon)
        if cid is not None:
            self.phase_of[cid] = self.phase
        return cid

    async def cmd_sell(self, rate, duration, coupon_share=0.2, amount=(100, 20000)):
        """Sales at `rate` per second over this shard's terminals (Poisson arrivals)."""
        at = time.monotonic()
        end = at + duration
        n = 0
        while True:
            at += self.rand.expovariate(rate)  # arrival times, whatever a sale takes
            if at >= end:
                break
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            if self._sell_one(self.rand.choice(self.terminals), coupon_share, amount):
                n += 1
        return {"sold": n}

    async def cmd_burst(self, per_terminal, coupon_share=0.2, amount=(100, 20000)):
        n = 0
        for t in self.terminals:
            for _ in range(per_terminal):
                if self._sell_one(t, coupon_share, amount):
                    n += 1
            await asyncio.sleep(0)
        return {"sold": n}

    async def cmd_cut(self, group):
        for name in (("steady", "outage") if group == "all" else (group,)):
            self.relays[name].cut()
        return {"group": group, "at": time.time()}

    async def cmd_restore(self, group):
        for name in (("steady", "outage") if group == "all" else (group,)):
            self.relays[name].restore()
        return {"group": group, "at": time.time()}

    async def cmd_wait_online(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            online = sum(1 for t in self.terminals if t.online)
            if online == len(self.terminals):
                break
            await asyncio.sleep(POLL_S)
        online = sum(1 for t in self.terminals if t.online)
        return {"online": online, "at": time.time()}

    async def cmd_wait_drained(self, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(t.pending() == 0 for t in self.terminals):
                break
            await asyncio.sleep(POLL_S)
        pending = sum(t.pending() for t in self.terminals)
        return {"pending": pending, "at": time.time(), "last_result": self._last_result()}

    def _last_result(self):
        """Wall-clock time of the newest result on flash (for drain rates)."""
        last = max((r[0] for t in self.terminals for r in t.results.values()), default=None)
        return None if last is None else time.time() - (time.monotonic() - last)

    async def cmd_report(self):
        terminals = {}
        latency = {}
        for t in self.terminals:
            terminals[t.device_id] = {
                "committed": sorted(cid.hex() for cid in t.committed),
                "resolved": sorted(cid.hex() for cid in t.results),
                "double_results": t.double_results, "refused": t.refused,
                "coupons_used": t.coupons_used, "pending": t.pending(),
                "trust_ver": t.agent.status.hello_body()["trust_ver"],
                "declined": sum(1 for r in t.results.values() if r[1] == "declined"),
                "drops": {k: v for k, v in t.agent.metrics.snapshot().items()
                          if k.startswith(("drop_", "handler", "task_restarts"))},
            }
            for cid, (at, _amt, online) in t.committed.items():
                res = t.results.get(cid)
                if res is None:
                    continue
                key = "%s/%s" % (self.phase_of.get(cid, "start"),
                                 "online" if online else "offline")
                latency.setdefault(key, []).append(round((res[0] - at) * 1000, 2))
        return {"terminals": terminals, "latency_ms": latency,
                "relay_cuts": {k: r.cuts for k, r in self.relays.items()}}

    async def cmd_stop(self):
        await asyncio.gather(*(t.stop() for t in self.terminals))
        for r in self.relays.values():
            await r.close()
        return {}


async def main_async(plan_path):
    with open(plan_path) as f:
        plan = json.load(f)
    shard = Shard(plan)
    emit({"ev": "started", **(await shard.start())})
    loop = asyncio.get_event_loop()
    running = set()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            line = '{"cmd": "stop"}'
        cmd = json.loads(line)
        name = cmd.pop("cmd")
        if name == "stop":
            for task in running:
                task.cancel()
            emit({"ev": "stop", **(await shard.cmd_stop())})
            return
        # commands run concurrently (sales go on while a group is cut)
        task = asyncio.ensure_future(_run(shard, name, cmd))
        running.add(task)
        task.add_done_callback(running.discard)


async def _run(shard, name, args):
    try:
        out = await getattr(shard, "cmd_" + name)(**args)
        emit({"ev": name, **out})
    except Exception as e:  # noqa: BLE001 - reported to the orchestrator, which fails the run
        emit({"ev": name, "error": "%s: %s" % (type(e).__name__, e)})


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    asyncio.run(main_async(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
