# Entry points behind `python -m device run|console`: start the agent on this runtime, provisioned
# or not.
#
#   run --config F [--console PORT]
#       F exists: the agent, with its console on the config's console port (or PORT when the
#       config has none). F missing: the terminal is unprovisioned; only the console runs, on
#       PORT (default stdin/stdout), offering `status` and `provision`. A `provision` writes F
#       and the agent starts at once in this process, keeping the console it was provisioned on.
#   console --config F
#       The console on stdin/stdout against the device's data (the agent must not be running):
#       replies on stdout, log lines on stderr. F missing: unprovisioned, as above.
#
# Exit status: 0 done, 2 bad arguments or a broken config, technician.EXIT_REBOOT (3) after
# `reboot` or `factory-reset`: restart the process (boards reset instead).
import asyncio
import sys
import time

from device.console.factory_reset import finish_factory_reset

USAGE = """usage:
  python -m device run --config device.json [--console PORT]
  python -m device console --config device.json"""
BOOT_POLL_S = 0.02


def parse_args(args):
    """["--config", F, "--console", P] in any order -> (F, P or None); None when malformed."""
    opts = {}
    i = 0
    while i < len(args):
        if args[i] not in ("--config", "--console") or i + 1 >= len(args) or args[i] in opts:
            return None
        opts[args[i]] = args[i + 1]
        i += 2
    if "--config" not in opts:
        return None
    return opts["--config"], opts.get("--console")


def load(path, fs):
    """(cfg, None) when provisioned, (None, None) when F does not exist, (None, error) else."""
    from device import config
    if not fs.exists(path):
        return None, None
    try:
        return config.load(path), None
    except config.ConfigError as e:
        return None, str(e)


def run_agent(agent, console_port=None, console=None):
    try:
        asyncio.run(agent.run(console_port, console))
    except KeyboardInterrupt:
        pass
    except SystemExit as e:  # Agent.restart(): reboot or factory reset
        code = e.args[0] if e.args else 0  # MicroPython's SystemExit has no .code
        return code if type(code) is int else 1
    return 0


def new_agent(cfg, path, log_out=None):
    from device.agent import Agent
    from device.ports import runtime
    runtime.settle()  # what importing the code left behind goes before the state is built
    return Agent(cfg, config_path=path, log_out=log_out)


def _start(path):
    """(fs, cfg or None, exit code or None): a factory reset finished, the config read."""
    from device.ports.storage import PosixFS
    fs = PosixFS()
    finish_factory_reset(fs, path)
    cfg, err = load(path, fs)
    if err:
        sys.stderr.write("config error: %s\n" % err)
        return fs, None, 2
    return fs, cfg, None


def run_path(path, console_port=None):
    fs, cfg, code = _start(path)
    if code is not None:
        return code
    console_cfg = {"driver": "serial", "port": console_port} if console_port else None
    if cfg is not None:
        if cfg["console"] is None and console_cfg is not None:
            cfg["console"] = console_cfg
        code = run_agent(new_agent(cfg, path))
    else:
        code = _unprovisioned(path, fs, console_cfg)
    finish_factory_reset(fs, path)
    return code


def _unprovisioned(path, fs, console_cfg):
    from device.console.commands import Commands
    from device.console.lines import Console
    from device.drivers.serial import SerialError, open_serial
    # With the console on stdin/stdout, log lines go to stderr (stdout carries only replies).
    log_out = sys.stderr if console_cfg is None else None
    cmds = Commands(None, path, fs=fs, console_cfg=console_cfg, log_out=log_out,
                    on_provisioned=lambda cfg: new_agent(cfg, path, log_out))
    con = Console(cmds)
    cmds.log("no config at %s: console only, waiting for provision" % path)
    try:
        port = open_serial(console_cfg or {"driver": "stdio"})
    except (SerialError, ValueError) as e:
        sys.stderr.write("unprovisioned and no console: %s\n" % e)
        return 2
    _serve(con, cmds, port, until_agent=True)
    if cmds.exit_code is not None or cmds.started is None:
        return cmds.exit_code or 0
    # The console the terminal was provisioned on (a serial line or stdin) goes on serving it,
    # session and all.
    return run_agent(cmds.started, port, con)


def _serve(con, cmds, port, until_agent=False):
    """Feeds the console from a port until the input ends, a command restarts the terminal,
    or (until_agent) a `provision` started the agent."""
    from device.drivers.serial import SerialError
    while True:
        try:
            data = port.read_available()
            if not data and getattr(port, "eof", False):
                data = b"\n"  # the last line may have no line end
            for out in con.feed(data):
                port.write(out)
        except SerialError as e:  # the cable pulled mid-line: wait for the next one
            cmds.log(str(e))
            data = b""
            time.sleep(0.5)
        if cmds.exit_code is not None:
            return cmds.exit_code
        if until_agent and cmds.started is not None:
            return 0
        if getattr(port, "eof", False):
            return 0
        if not data:
            time.sleep(BOOT_POLL_S)


def console_path(path):
    """The console on stdin/stdout (replies on stdout, logs on stderr)."""
    from device.console.commands import Commands
    from device.console.lines import Console
    from device.drivers.serial import StdioPort
    fs, cfg, code = _start(path)
    if code is not None:
        return code
    agent = new_agent(cfg, path, sys.stderr) if cfg is not None else None
    cmds = Commands(agent.view if agent else None, path, fs=fs, log_out=sys.stderr,
                    on_provisioned=lambda c: new_agent(c, path, sys.stderr))
    code = _serve(Console(cmds), cmds, StdioPort())
    agent = agent or cmds.started
    if agent is not None and not cmds.reset_done:
        agent.flush()
    finish_factory_reset(fs, path)
    return code


def main(argv):
    if len(argv) < 1 or argv[0] not in ("run", "console"):
        sys.stderr.write(USAGE + "\n")
        return 2
    parsed = parse_args(argv[1:])
    if parsed is None or (argv[0] == "console" and parsed[1] is not None):
        sys.stderr.write(USAGE + "\n")
        return 2
    path, port = parsed
    if argv[0] == "run":
        return run_path(path, port)
    return console_path(path)
