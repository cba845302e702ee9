# Entry points behind `python -m device run|console`: start the agent on this runtime.
import sys

try:
    import asyncio
except ImportError:  # pragma: no cover
    import uasyncio as asyncio


def run(cfg):
    from device.agent import Agent
    agent = Agent(cfg)
    try:
        asyncio.run(agent.run())
    except KeyboardInterrupt:
        pass
    return 0


def console(cfg):
    """The console on stdin/stdout, against the device's data (the agent must not be running)."""
    from device.agent import Agent
    from device.console import Console
    from device.technician import Commands
    agent = Agent(cfg)
    con = Console(Commands(agent))
    while True:
        line = sys.stdin.readline()
        if not line:
            return 0
        for out in con.feed(line.encode() if isinstance(line, str) else line):
            sys.stdout.write(out.decode())
        if hasattr(sys.stdout, "flush"):
            sys.stdout.flush()
