# The technician's provisioning tool: one command turns a fresh terminal on a serial line into a
# registered, configured, tested one (SPEC 6 console, over pyserial).
#
#   python -m host_sim.provision --port PORT --db HOSTDB --store S --merchant M --currency CUR
#       --root-key HEX [--root-key HEX ...] [--device-id ID] [--trustlist FILE]
#       [--revocations FILE] [--broker-host H] [--broker-port P] [--root R] [--data-dir DIR]
#       [--drivers FILE] [--tech-pin PIN] [--supervisor-pin PIN] [--clerk-pin PIN]
#       [--certs DIR [--broker-config DIR [--broker-pid PID]]]
#       [--baud B] [--timeout S] [--label-png FILE]
#   python -m host_sim.provision --spawn cpython|micropython [--keep] ... (the same options)
#       Desktop provisioning without hardware: starts a fresh, unprovisioned terminal process
#       whose console is a new pseudo-terminal, provisions it over that line like a real one,
#       and stops it at the end (--keep leaves it running and prints its pid).
#
# Steps: `status` (the terminal must be unprovisioned) -> register it in the host registry (a new
# 32-byte secret; the id is --device-id or the next free T-NNNN) -> `provision` the config ->
# `login` with the tech PIN -> `trust load` / `revocations load` -> `selftest` -> `status` ->
# label PNG when asked (a full QR code of the device id: handheld scanners often cannot read Micro
# QR; the id and store in text) -> one JSON summary on stdout.
# With --certs DIR (the locked-down broker of issue 5): the device's client certificate is made
# or kept in DIR (host_sim.certs, the CA must exist), the config's broker section is TLS with the
# device's own account (username = device id, password from the registry) and the files at
# <data_dir>/tls/{ca,cert,key}.pem, and after `login` the three PEM files are pushed with
# `tls install` (a terminal shares no disk with this laptop). The link reads its TLS files when
# it starts, and the agent started at `provision` before they existed, so the tool then sends
# `reboot`, waits for the terminal to come back (it must run under a supervisor that restarts it
# on exit status 3; a board resets), logs in again and waits until it is online.
# --broker-config DIR (the directory `host_sim broker-config` wrote): the broker's password_file
# there is rewritten from the registry so the new account exists; --broker-pid PID then sends
# that mosquitto SIGHUP to re-read it (without it, reload the broker yourself).
# Without --tech-pin a random 6-digit PIN is made and shown once in the summary.
# --drivers FILE: a JSON object with any of scanner/keypad/display/printer/console driver configs;
# without it the display and printer are files in the data dir, as `host_sim register` does, and
# the console stays the port the terminal was provisioned on.
# Exit codes: 0 provisioned, 1 failure (message on stderr), 2 bad arguments.
import argparse
import json
import os
import secrets
import signal
import sys
import time

from host_sim import cli, png
from host_sim.__main__ import CliError, pin_hash, read_list
from host_sim.files import write_atomic
from host_sim.registry import Registry, RegistryError
from protocol import topics

DEFAULT_TIMEOUT = 20.0
TLS_DIR = "/tls"  # under the terminal's data dir, as device/console/tls_files.py writes it
POLL_S = 0.5


class ProvisionError(Exception):
    pass


# -- the serial console ------------------------------------------------------------------------
class Terminal:
    """A terminal's technician console on a serial port: one command, one JSON reply."""

    def __init__(self, port, baud=9600, timeout=DEFAULT_TIMEOUT, stream=None):
        if stream is None:
            import serial
            try:
                stream = serial.Serial(port, baud, timeout=0.1, write_timeout=timeout)
            except (OSError, ValueError, serial.SerialException) as e:
                raise ProvisionError("cannot open %s: %s" % (port, e))
        self.s = stream
        self.timeout = timeout
        self._buf = b""
        # A half-typed line on the terminal's side ends here; its reply (if any) is dropped.
        self.s.write(b"\n")
        time.sleep(0.2)
        self.s.reset_input_buffer()

    def command(self, line, timeout=None):
        self._buf = b""
        self.s.reset_input_buffer()
        self.s.write(line.encode() + b"\n")
        self.s.flush()
        end = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < end:
            chunk = self.s.read(65536)
            if chunk:
                self._buf += chunk
            while b"\n" in self._buf:
                raw, self._buf = self._buf.split(b"\n", 1)
                try:
                    rep = json.loads(raw)
                except ValueError:
                    continue  # line noise, a log line: not our reply
                if isinstance(rep, dict) and "ok" in rep:
                    return rep
        raise ProvisionError("no reply to %r within %.0f s" % (line.split(" ")[0], timeout
                                                                 or self.timeout))

    def must(self, line, what):
        rep = self.command(line)
        if not rep.get("ok"):
            raise ProvisionError("%s: %s: %s" % (what, rep.get("error"), rep.get("message")))
        return rep

    def close(self):
        self.s.close()


class PtyStream:
    """The master side of a pseudo-terminal with the few pyserial calls Terminal makes."""

    def __init__(self, fd):
        self.fd = fd

    def write(self, data):
        os.write(self.fd, data)

    def flush(self):
        pass

    def read(self, n):
        import select
        r, _, _ = select.select([self.fd], [], [], 0.1)
        return os.read(self.fd, n) if r else b""

    def reset_input_buffer(self):
        while self.read(65536):
            pass

    def close(self):
        os.close(self.fd)


def spawn_terminal(runtime, workdir):
    """A fresh unprovisioned terminal on a new pty: (process, console stream, config path)."""
    import subprocess
    import tty
    master, slave = os.openpty()
    tty.setraw(slave)
    os.makedirs(workdir, exist_ok=True)
    cfg_path = os.path.join(workdir, "device.json")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if runtime == "micropython":
        cmd = [os.path.join(os.path.dirname(sys.executable), "micropython")]
        env = dict(os.environ, MICROPYPATH=root + ":.frozen")
    else:
        cmd = [sys.executable, "-u"]
        env = dict(os.environ, PYTHONPATH=root)
    log = open(os.path.join(workdir, "device.log"), "a")
    proc = subprocess.Popen(cmd + ["-m", "device", "run", "--config", cfg_path, "--console",
                                   os.ttyname(slave)], cwd=root, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    os.close(slave)  # the terminal holds its own end open
    return proc, PtyStream(master), cfg_path


# -- the label ---------------------------------------------------------------------------------
QR_SCALE = 8
QR_BORDER = 4
TEXT_SCALE = 3


def _text_rows(text, scale):
    """Rows of 0/1 pixels (1 = ink) of text in the 5x7 font, 1 column between glyphs."""
    cols = []
    for ch in text.upper():
        cols.extend(png.glyph(ch))
        cols.append(0)
    rows = []
    for bit in range(7):
        row = []
        for c in cols:
            row.extend([(c >> bit) & 1] * scale)
        rows.extend([row] * scale)
    return rows


def label_pixels(device_id, store_id):
    """The label as rows of 0/1 (1 = black): the QR of the device id, then the id and store."""
    import segno
    qr = segno.make_qr(device_id, error="m")  # never Micro QR
    img = [list(r) for r in qr.matrix_iter(scale=QR_SCALE, border=QR_BORDER)]
    gap = QR_SCALE * 2
    for text in (device_id, store_id):
        rows = _text_rows(text, TEXT_SCALE)
        width = max(len(img[0]), len(rows[0]) + 2 * gap)
        img = [r + [0] * (width - len(r)) for r in img]
        left = (width - len(rows[0])) // 2
        img.extend([[0] * width for _ in range(TEXT_SCALE * 2)])
        for r in rows:
            img.append([0] * left + r + [0] * (width - left - len(r)))
    img.extend([[0] * len(img[0]) for _ in range(gap)])
    return img


def write_png(path, pixels):
    """An 8-bit greyscale PNG of 0/1 pixel rows (1 = black), written whole then renamed."""
    h = len(pixels)
    w = len(pixels[0])
    grey = bytes(0 if p else 255 for row in pixels for p in row)
    write_atomic(path, png.grey(w, h, grey, level=9), 0o644)
    return w, h


# -- TLS and the broker ------------------------------------------------------------------------
def _cert_store(args):
    """The CertStore of --certs (None without it); checks the other broker options too."""
    if not args.certs:
        if args.broker_config or args.broker_pid:
            raise ProvisionError("--broker-config and --broker-pid go with --certs")
        return None
    from host_sim.certs import CertStore
    store = CertStore(args.certs)
    if not os.path.exists(store.ca_pem):
        # A new CA made here would not be the one the broker trusts.
        raise ProvisionError("no CA in %s: run `python -m host_sim certs --dir %s` first"
                             % (store.dir, args.certs))
    if args.broker_pid and not args.broker_config:
        raise ProvisionError("--broker-pid goes with --broker-config")
    if args.broker_config and not os.path.exists(_passwd_path(args.broker_config)):
        raise ProvisionError("no password file in %s: run `python -m host_sim broker-config` "
                             "first" % args.broker_config)
    if args.broker_pid:
        try:
            os.kill(args.broker_pid, 0)
        except OSError as e:
            raise ProvisionError("broker pid %d: %s" % (args.broker_pid, e))
    return store


def device_tls(store, device_id, data_dir):
    """(broker section TLS part, `tls install` JSON): the device's certificate made or kept in
    the store, its files as the terminal will hold them."""
    from host_sim.certs import CertError
    try:
        store.ensure_device(device_id)
        cert, key = store.device_paths(device_id)
        texts = {}
        for name, path in (("ca", store.ca_pem), ("cert", cert), ("key", key)):
            with open(path) as f:
                texts[name] = f.read()
    except (CertError, OSError) as e:
        raise ProvisionError("certificate: %s" % e)
    d = data_dir + TLS_DIR
    broker = {"tls": True, "ca": d + "/ca.pem", "cert": d + "/cert.pem", "key": d + "/key.pem"}
    return broker, json.dumps(texts, separators=(",", ":"))


def _passwd_path(broker_dir):
    return os.path.join(broker_dir, "passwd")


def update_broker_accounts(reg, broker_dir, pid=None):
    """Rewrites the broker's password_file from the registry (every terminal and the host),
    then SIGHUPs mosquitto when its pid is given. Returns what was done."""
    from host_sim.mosquitto import MosquittoError, password_file_text
    path = _passwd_path(broker_dir)
    try:
        text = password_file_text(reg.broker_accounts())
    except MosquittoError as e:
        raise ProvisionError("broker accounts: %s" % e)
    try:
        # Mode set before a byte lands: the file holds every account's password hash.
        write_atomic(path, text, 0o600)
    except OSError as e:
        raise ProvisionError("cannot write %s: %s" % (path, e))
    if not pid:
        return "passwd written: reload the broker (SIGHUP)"
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as e:
        raise ProvisionError("broker pid %d: %s (passwd written: reload it yourself)" % (pid, e))
    return "passwd written, broker reloaded"


def wait_for(term, ok, timeout, what):
    """Polls `status` until ok(reply) holds; returns that reply."""
    end = time.monotonic() + timeout
    while True:
        try:
            rep = term.command("status", timeout=1)
            if rep.get("ok") and ok(rep):
                return rep
        except ProvisionError:
            pass  # restarting: nobody answers yet
        if time.monotonic() > end:
            raise ProvisionError("%s within %.0f s" % (what, timeout))
        time.sleep(POLL_S)


# -- the steps ---------------------------------------------------------------------------------
def next_device_id(reg):
    taken = {d["device_id"] for d in reg.devices()}
    n = 1
    while "T-%04d" % n in taken:
        n += 1
    return "T-%04d" % n


def _list_text(path, what):
    try:
        read_list(path, what)  # checks the file: prefix, base45, COSE_Sign1 shape
    except CliError as e:
        raise ProvisionError(str(e))
    with open(path) as f:
        return f.read().strip("\r\n")  # only line ends: a space is a base45 digit


def _drivers(args, data_dir):
    if args.drivers:
        try:
            with open(args.drivers) as f:
                d = json.load(f)
        except (OSError, ValueError) as e:
            raise ProvisionError("drivers: cannot read %s: %s" % (args.drivers, e))
        if not isinstance(d, dict) or any(k not in ("scanner", "keypad", "display", "printer",
                                                    "console") for k in d):
            raise ProvisionError("drivers: a JSON object of scanner/keypad/display/printer/"
                                 "console driver configs")
        return d
    return {"display": {"driver": "jsonl", "path": data_dir + "/screen.jsonl"},
            "printer": {"driver": "file", "path": data_dir + "/printer.bin"}}


def provision(args, out=sys.stdout):
    lists = []
    if args.trustlist:
        lists.append(("trust", _list_text(args.trustlist, "trustlist")))
    if args.revocations:
        lists.append(("revocations", _list_text(args.revocations, "revocations")))
    store = _cert_store(args)
    spawned = None
    if args.spawn:
        proc, stream, cfg_path = spawn_terminal(args.spawn, args.spawn_dir)
        spawned = {"pid": proc.pid, "runtime": args.spawn, "config": cfg_path,
                   "log": os.path.join(args.spawn_dir, "device.log"), "running": True}
        time.sleep(0.5)
        term = Terminal(None, timeout=args.timeout, stream=stream)
    else:
        term = Terminal(args.port, args.baud, args.timeout)
    try:
        st = term.must("status", "status")
        if st.get("provisioned"):
            raise ProvisionError("the terminal is already provisioned as %s: factory-reset it "
                                 "first" % st.get("device_id"))
        reg = Registry(args.db)
        try:
            device_id = args.device_id or next_device_id(reg)
            data_dir = args.data_dir or (os.path.join(args.spawn_dir, "data") if args.spawn
                                         else "var/" + device_id)
            # the certificate first: a failure there leaves the registry as it was
            tls, bundle = device_tls(store, device_id, data_dir) if store else ({}, None)
            existed = reg.device(device_id) is not None
            reg.register(device_id, args.store, args.merchant)
            tech_pin = args.tech_pin or "%06d" % secrets.randbelow(1000000)
            pins = {"tech": pin_hash(tech_pin)}
            for role in ("supervisor", "clerk"):
                pin = getattr(args, role + "_pin")
                if pin:
                    pins[role] = pin_hash(pin)
            broker = {"host": args.broker_host, "port": args.broker_port, "root": args.root}
            broker.update(tls)
            cfg = reg.device_config(device_id, broker, data_dir,
                                    [k.lower() for k in args.root_key], args.currency,
                                    pins=pins, **_drivers(args, data_dir))
            reload = update_broker_accounts(reg, args.broker_config, args.broker_pid) \
                if args.broker_config else None
        except RegistryError as e:
            raise ProvisionError("registry: %s" % e)
        finally:
            reg.close()
        term.must("provision " + json.dumps(cfg, separators=(",", ":")), "provision")
        term.must("login " + tech_pin, "login")
        tls_rep = term.must("tls install " + bundle, "tls install") if bundle else None
        installed = {}
        for kind, text in lists:
            rep = term.command("%s load %s" % (kind, text))
            if not rep.get("ok") and rep.get("error") != "rollback":
                raise ProvisionError("%s load: %s: %s" % (kind, rep.get("error"),
                                                          rep.get("message")))
            installed[kind] = rep.get("ver") if rep.get("ok") else "kept (not newer)"
        if tls_rep is not None:
            if tls_rep.get("reboot_needed"):
                boot = term.must("status", "status").get("boot") or 0
                term.must("reboot", "reboot")
                wait_for(term, lambda r: r.get("provisioned") and (r.get("boot") or 0) > boot,
                         args.timeout, "the terminal did not come back after `reboot` (is it "
                         "run under a supervisor that restarts it on exit status 3?)")
                term.must("login " + tech_pin, "login")
            try:
                wait_for(term, lambda r: r.get("online"), args.timeout, "not online")
            except ProvisionError:
                pass  # the selftest below says so (link warning); the summary shows it
        test = term.must("selftest", "selftest")
        st = term.must("status", "status")
        term.command("logout")
    finally:
        term.close()
        if spawned is not None and not args.keep:
            from host_sim.procs import stop_process
            stop_process(proc, 10)
            spawned["running"] = False
    size = write_png(args.label_png, label_pixels(device_id, args.store)) \
        if args.label_png else None
    summary = {
        "device_id": device_id, "store_id": args.store, "merchant_id": args.merchant,
        "data_dir": data_dir, "secret_rotated": existed, "tech_pin": None if args.tech_pin
        else tech_pin, "lists": installed, "trust_ver": st.get("trust_ver"),
        "rev_ver": st.get("rev_ver"), "selftest": {"passed": test.get("passed"),
                                                   "failures": test.get("failures"),
                                                   "warnings": test.get("warnings")},
        "fw": st.get("fw"), "rt": st.get("rt"), "online": st.get("online"),
        "tls": None if tls_rep is None else {"files": tls_rep.get("files"),
                                             "key_mode": tls_rep.get("key_mode"),
                                             "rebooted": bool(tls_rep.get("reboot_needed"))},
        "broker_accounts": reload, "label_png": args.label_png,
        "label_size": list(size) if size else None, "spawned": spawned,
    }
    out.write(json.dumps(summary, indent=1) + "\n")
    out.flush()
    return summary



def _pid(text):
    v = int(text)
    if v <= 0:  # 0 and negatives name process groups: ours included
        raise argparse.ArgumentTypeError("must be a process id > 0")
    return v



def build_parser():
    p = argparse.ArgumentParser(prog="python -m host_sim.provision",
                                description="Provision a terminal over its serial console.")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial port of the terminal's console")
    where.add_argument("--spawn", choices=("cpython", "micropython"),
                       help="no hardware: start a fresh terminal on a pseudo-terminal")
    p.add_argument("--spawn-dir", default="var/provisioned",
                   help="with --spawn: where the spawned terminal keeps its config and log")
    p.add_argument("--keep", action="store_true",
                   help="with --spawn: leave the provisioned terminal running")
    p.add_argument("--baud", type=int, default=9600)
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help="seconds to wait for each reply")
    p.add_argument("--db", required=True, help="host_sim registry (SQLite)")
    p.add_argument("--device-id", help="default: the next free T-NNNN in the registry")
    p.add_argument("--store", required=True)
    p.add_argument("--merchant", required=True)
    p.add_argument("--currency", required=True)
    p.add_argument("--root-key", action="append", required=True, help="hex (repeat)")
    p.add_argument("--trustlist", help="file holding the PT1: text")
    p.add_argument("--revocations", help="file holding the PR1: text")
    p.add_argument("--broker-host", default="127.0.0.1")
    p.add_argument("--broker-port", type=cli.port, default=1883)
    p.add_argument("--root", type=cli.topic_root, default=topics.DEFAULT_ROOT)
    p.add_argument("--data-dir", help="on the terminal (default var/DEVICE_ID)")
    p.add_argument("--drivers", help="JSON file of driver configs for the terminal")
    p.add_argument("--tech-pin", help="default: a random 6-digit PIN, shown once")
    p.add_argument("--supervisor-pin")
    p.add_argument("--clerk-pin")
    p.add_argument("--label-png", help="write the device label (PNG) here")
    p.add_argument("--certs", help="certificate directory: TLS broker with the device's own "
                   "certificate, pushed with `tls install`")
    p.add_argument("--broker-config", help="the `host_sim broker-config` directory: rewrite its "
                   "password file with the new account")
    p.add_argument("--broker-pid", type=_pid, help="mosquitto to SIGHUP after --broker-config")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        provision(args)
    except ProvisionError as e:
        sys.stderr.write("provision: %s\n" % e)
        return 1
    except Exception as e:  # a CliError from read_list, an OSError writing the label, ...
        sys.stderr.write("provision: %s: %s\n" % (type(e).__name__, e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
