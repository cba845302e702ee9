# CPU time of process trees from Linux /proc: which process a fleet run's time went to (the
# terminals, the workers, the broker, the database), to tell a CPU-bound run from a bound one.
import os

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid):
    """(ppid, CPU seconds of pid and of its children it has reaped)."""
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    rest = s[s.rindex(")") + 2:].split()  # the name may hold spaces; fields from `state` on
    return int(rest[1]), sum(int(x) for x in rest[11:15]) / TICK  # utime stime cutime cstime


def process_seconds(pid):
    """CPU seconds so far of one process (its threads, and children it has reaped)."""
    return _stat(pid)[1]


def _table():
    stats = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stats[int(name)] = _stat(int(name))
            except (OSError, ValueError, IndexError):
                pass  # gone meanwhile, or not ours to read
    return stats


def machine_seconds():
    """CPU seconds the whole machine has been busy (all cores, every process: /proc/stat), to
    tell a part that was starved by other work from one that was idle."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / TICK  # all but idle and iowait


def seconds(groups):
    """{name: CPU seconds so far of the given PIDs and every descendant} for {name: [pid]}.
    A reaped child's time is in its parent's (PostgreSQL backends that closed), a live one's is
    its own: nothing counted twice."""
    stats = _table()
    children = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    out = {}
    for name, pids in groups.items():
        total, todo, seen = 0.0, list(pids), set()
        while todo:
            pid = todo.pop()
            if pid in seen or pid not in stats:
                continue
            seen.add(pid)
            total += stats[pid][1]
            todo.extend(children.get(pid, ()))
        out[name] = total
    return out
