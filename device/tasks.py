# The agent's long-running tasks under a supervisor: a task that raises is logged, counted
# (task_restarts_<name>) and started again after a short pause, so no loop of the terminal
# (heartbeat, forwarding, I/O) can die silently.
import asyncio

RESTART_PAUSE_S = 1


class Tasks:
    def __init__(self, metrics, log):
        self.metrics = metrics
        self.log = log
        self._tasks = []

    def start(self, name, fn):
        """Runs `await fn()` for as long as the agent runs, restarting it when it fails."""
        self._tasks.append(asyncio.create_task(self._supervise(name, fn)))

    async def _supervise(self, name, fn):
        while True:
            try:
                await fn()
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.metrics.inc("task_restarts_" + name)
                self.log("task %s failed (%s: %s): restarting" % (name, type(e).__name__, e))
            await asyncio.sleep(RESTART_PAUSE_S)

    def cancel(self):
        for t in self._tasks:
            t.cancel()
        self._tasks = []
