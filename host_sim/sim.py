"""`make sim`: a broker, the host and one virtual terminal you drive from the keyboard.

    python -m host_sim.sim [--runtime cpython|micropython] [--dir var/sim] [--fresh]
                           [--decline-rate R] [--headless SECONDS [--press STEP,STEP...]]

The terminal is a real device process: its keypad, scanner and console are pseudo-terminals
this program writes to, its display is the jsonl file this program draws, its printer the file
whose receipts it shows beside the screen, and its network goes through a relay
(host_sim/netcut.py) that the `n` key cuts and restores. Below the screen: the host's last
charges (from its database) and the technician console's last reply. Ctrl-C or `q` stops
everything this program started.

Demo PINs: technician 2468 (console `login 2468`), supervisor 9753 (MENU on the keypad: declined
charges and other notices). The store has demo bookings for today (F2 on idle) and a demo member
(`k` scans the card, `a` a fresh app code). `d` changes how many charges the host declines.

--headless prints JSON lines instead of drawing: each new frame, {"receipt": [lines]} for each
receipt printed, {"host": {...}} for each charge the host decided, {"console": reply}. --press
plays steps once the idle screen is online: keypad keys (1, ENTER, F2...), `wait:TEXT` (until a
frame shows TEXT), `console:LINE` (a console command), `scan:TEXT`, `v`/`k`/`a` (the demo
coupon, member card, app code), `sleep:S`.
"""
import argparse
import contextlib
import io
import json
import os
import select
import signal
import subprocess
import sys
import termios
import time
import tty

from host_sim.__main__ import pin_hash
from host_sim.mosquitto import Mosquitto, MosquittoError, run_dev_broker
from host_sim.netcut import NetCut
from host_sim.procs import free_port, stop_process
from host_sim.registry import Registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICE = "T-0001"
STORE = "S-001"
MERCHANT = "M-ACME"
CURRENCY = "CNY"
DEMO_MEMBER = "M-DEMO"
DEMO_BALANCE = 50000
DEMO_LIMITS = {"offline_member_max": 20000, "offline_member_total": 50000}
DEMO_PINS = {"tech": "2468", "supervisor": "9753"}
DEMO_VIP_TIERS = (("silver", 4900, "month"), ("gold-club", 9900, "month"))
DEMO_TIER_DISC = {"gold": 10}  # the demo member's tier: 10% off its sales
DECLINE_RATES = (0.0, 0.5, 1.0)  # what `d` steps through

KEYS = {"\r": "ENTER", "\n": "ENTER", "\x7f": "CLEAR", "\x08": "CLEAR", "c": "CANCEL",
        "m": "MENU", "\x1b[A": "UP", "\x1b[B": "DOWN", "\x1bOP": "F1", "\x1bOQ": "F2",
        "\x1bOR": "F3", "\x1bOS": "F4", "\x1b[11~": "F1", "\x1b[12~": "F2", "\x1b[13~": "F3",
        "\x1b[14~": "F4"}
for _d in "0123456789":
    KEYS[_d] = _d
HELP = ("0-9 amount  Enter=ENTER  Backspace=CLEAR  c=CANCEL  m=MENU  arrows=UP/DOWN  F1-F4\r\n"
        "t=console line  d=host decline rate  PINs: tech 2468, supervisor 9753 (MENU)\r\n"
        "F2 on idle=bookings  s=paste a scan  v=demo coupon  k=scan the member card\r\n"
        "a=scan a fresh member app code (on sale: F2=pay from balance F3=top-up)\r\n"
        "n=cut/restore network  q=quit")
# Demo bookings for today: (minutes from the current half hour, minutes long, name, service).
# The first one has started, so F4 (no-show) works on it at once.
DEMO_BOOKINGS = ((-30, 30, "Ann Lee", "Haircut"), (0, 45, "Bo Chen", "Nails"),
                 (60, 60, "Cy Dorn", "Massage"), (150, 90, "Di Eve", "Colour"))


def split_keys(data):
    """One read of the keyboard -> key sequences: typed ahead or pasted keys come together."""
    out = []
    i = 0
    while i < len(data):
        if data[i] == "\x1b":
            for n in (5, 3):  # ESC [ 1 1 ~  /  ESC O P, ESC [ A
                if data[i:i + n] in KEYS:
                    out.append(data[i:i + n])
                    i += n
                    break
            else:
                out.append(data[i])
                i += 1
        else:
            out.append(data[i])
            i += 1
    return out


class AmqttBroker:
    """The pure-Python fallback broker (no root to install mosquitto): amqtt in a subprocess."""

    def __init__(self, workdir):
        self.port = free_port()
        code = ("import asyncio, sys\nfrom amqtt.broker import Broker\n"
                "cfg = {'listeners': {'default': {'type': 'tcp', 'bind': '127.0.0.1:%d'}},"
                " 'auth': {'allow-anonymous': True}, 'topic-check': {'enabled': False}}\n"
                "async def main():\n    b = Broker(cfg)\n    await b.start()\n"
                "    await asyncio.Event().wait()\nasyncio.run(main())\n" % self.port)
        self.proc = subprocess.Popen([sys.executable, "-c", code],
                                     stdout=open(os.path.join(workdir, "amqtt.log"), "w"),
                                     stderr=subprocess.STDOUT)
        _wait_port(self.port, 15)

    def stop(self):
        stop_process(self.proc, 5)


def _wait_port(port, timeout):
    import socket
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("broker did not come up on port %d" % port)


class Sim:
    def __init__(self, args):
        self.args = args
        self.dir = os.path.abspath(args.dir)
        self.procs = []
        self.broker = None
        self.net = None
        self.ptys = {}
        self.frame = {"screen": "(starting)", "lines": []}
        self.frame_pos = 0
        self.message = ""
        self.demo = []
        self.host = None
        self.db = None
        self.trust_path = None
        self.decline_rate = getattr(args, "decline_rate", 0.0)
        self.receipt = []
        self.printer_pos = 0
        self.charges = []     # the host's decided charges, as `report --charges` lines
        self.console_reply = ""
        self._console_buf = b""

    # -- start-up --------------------------------------------------------------------------------
    def start(self):
        if self.args.fresh and os.path.isdir(self.dir):
            import shutil
            shutil.rmtree(self.dir)
        os.makedirs(self.dir, exist_ok=True)
        self.broker = self._start_broker()
        self.net = NetCut(self.broker.port)
        for name in ("keypad", "scanner", "console"):
            m, s = os.openpty()
            tty.setraw(s)
            self.ptys[name] = (m, s, os.ttyname(s))
        self.db = db = os.path.join(self.dir, "host.db")
        root_key, self.trust_path = self._issuer()
        self.demo_member(db)
        cfg_path = self._register(db, root_key)
        self._demo_bookings(db)
        self._demo_vip(db)
        self.screen_path = os.path.join(self.dir, DEVICE, "screen.jsonl")
        self.printer_path = os.path.join(self.dir, DEVICE, "printer.bin")
        # What an earlier session left on the screen and the paper is not this session's.
        self.frame_pos = _size(self.screen_path)
        self.printer_pos = _size(self.printer_path)
        self.start_host()
        if self.args.runtime == "micropython":
            cmd = [os.path.join(os.path.dirname(sys.executable), "micropython")]
            env = dict(os.environ, MICROPYPATH=ROOT + ":.frozen")
        else:
            cmd = [sys.executable, "-u"]
            env = dict(os.environ, PYTHONPATH=ROOT)
        dev_log = open(os.path.join(self.dir, "device.log"), "a")
        self.procs.append(subprocess.Popen(cmd + ["-m", "device", "run", "--config", cfg_path],
                                           cwd=ROOT, env=env, stdout=dev_log,
                                           stderr=subprocess.STDOUT))
        self.note("PINs: tech %s, supervisor %s" % (DEMO_PINS["tech"], DEMO_PINS["supervisor"]))

    def note(self, text):
        self.message = self.message + "; " + text if self.message else text

    def start_host(self):
        """`python -m host_sim serve` with the decline rate in force (restarted by `d`)."""
        if self.host is not None:
            stop_process(self.host, 5)
            self.procs.remove(self.host)
        host_log = open(os.path.join(self.dir, "host.log"), "a")
        self.host = subprocess.Popen(
            [sys.executable, "-u", "-m", "host_sim", "serve", "--db", self.db, "--broker-host",
             "127.0.0.1", "--broker-port", str(self.broker.port), "--trustlist",
             self.trust_path, "--decline-rate", str(self.decline_rate)],
            cwd=ROOT, stdout=host_log, stderr=subprocess.STDOUT)
        self.procs.append(self.host)

    def next_decline_rate(self):
        i = DECLINE_RATES.index(self.decline_rate) if self.decline_rate in DECLINE_RATES else -1
        self.decline_rate = DECLINE_RATES[(i + 1) % len(DECLINE_RATES)]
        self.start_host()
        self.message = "the host now declines %d%% of charges" % (self.decline_rate * 100)

    def _start_broker(self):
        if self.args.broker == "amqtt":
            self.message = "broker: amqtt (pure Python) as asked"
            return AmqttBroker(self.dir)
        try:
            b = run_dev_broker(os.path.join(self.dir, "broker"))
            self.message = "broker: mosquitto on 127.0.0.1:%d" % b.port
            return b
        except (MosquittoError, OSError) as e:
            self.message = ("mosquitto unavailable (%s): using the pure-Python amqtt broker"
                            % str(e)[:60])
            print(self.message)
            return AmqttBroker(self.dir)

    def _issuer(self):
        """A root key, an issuer key and a batch of demo coupons (key `v` scans the next one)."""
        from host_sim.issuance import Keystore, write_text
        kdir = os.path.join(self.dir, "keys")
        ks = Keystore(kdir, create=not os.path.isdir(kdir))
        try:
            if not ks.root_keys():
                ks.create_root("eddsa")
                ks.create_issuer(MERCHANT)
            self.demo = ks.create_campaign("DEMO", "Demo 10% off", "pct", 10, quantity=10,
                                           iss=MERCHANT)
            path = write_text(os.path.join(self.dir, "trustlist.txt"), "PT1:", ks.trustlist())
            with open(os.path.join(self.dir, "coupons.txt"), "w") as f:
                f.write("\n".join(self.demo) + "\n")
            return ks.root_keys()[0], path
        finally:
            ks.close()

    def _register(self, db, root_key):
        reg = Registry(db)
        try:
            if reg.device(DEVICE) is None:
                reg.register(DEVICE, STORE, MERCHANT)
            data_dir = os.path.join(self.dir, DEVICE)
            cfg = reg.device_config(
                DEVICE, {"host": "127.0.0.1", "port": self.net.port}, data_dir, [root_key],
                CURRENCY,
                scanner={"driver": "serial", "port": self.ptys["scanner"][2], "baud": 9600},
                keypad={"driver": "serial", "port": self.ptys["keypad"][2]},
                display={"driver": "jsonl", "path": os.path.join(data_dir, "screen.jsonl")},
                printer={"driver": "file", "path": os.path.join(data_dir, "printer.bin")},
                console={"driver": "serial", "port": self.ptys["console"][2]},
                limits=DEMO_LIMITS,
                pins={role: pin_hash(pin) for role, pin in DEMO_PINS.items()})
        finally:
            reg.close()
        path = os.path.join(self.dir, DEVICE + ".json")
        with open(path, "w") as f:
            json.dump(cfg, f, indent=1)
        return path

    def _demo_bookings(self, db):
        """Today's demo bookings, unless the store has bookings today already."""
        from host_sim import bookings, service
        from host_sim.store import open_store

        store = open_store(db)
        try:
            store.schema(bookings.SCHEMA)
            store.schema(service.OUTBOX_SCHEMA)
            now = int(time.time())
            today = bookings.day_of(now) * bookings.DAY
            with store.transaction() as tx:
                if bookings.between(tx, STORE, today, today + bookings.DAY):
                    return
                half = now - now % 1800
                for start, length, name, svc in DEMO_BOOKINGS:
                    bookings.create(tx, STORE, half + start * 60, length * 60, name, svc, now)
        finally:
            store.close()
        self.note("demo bookings: F2 on idle")

    def members(self, *argv):
        """`python -m host_sim members` on the sim's database and keystore, in this process:
        its JSON lines, or None when it failed (its message goes to self.message)."""
        from host_sim import members_cli

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = members_cli.main(["--db", os.path.join(self.dir, "host.db"), "--keystore",
                                   os.path.join(self.dir, "keys")] + list(argv))
        if rc != 0:
            self.message = err.getvalue().strip()[:70]
            return None
        return [json.loads(line) for line in out.getvalue().splitlines()]

    def _demo_vip(self, db):
        """Two VIP tiers (F4 on a sale with the member) and the gold tier's 10% discount, sent
        to the terminal through the host outbox like any host-managed setting."""
        from host_sim import __main__ as host_cli
        from host_sim import billing, vip
        from host_sim.store import open_store

        store = open_store(db)
        try:
            store.schema(billing.SCHEMA)
            eng = vip.engine(store)
            now = int(time.time())
            for name, fee, cycle in DEMO_VIP_TIERS:
                vip.set_tier(eng, store, name, fee, cycle, now)
        finally:
            store.close()
        with contextlib.redirect_stdout(io.StringIO()):
            host_cli.main(["config", "--db", db, "--device", DEVICE,
                           json.dumps({"tier_disc": DEMO_TIER_DISC})])
        self.note("VIP tiers: F4 on a member's sale")

    def demo_member(self, db):
        """The demo member with a balance, made once (kept across sim restarts)."""
        if self.members("show", DEMO_MEMBER) is None:
            self.members("add", DEMO_MEMBER, "--name", "Demo Member", "--tier", "gold",
                         "--balance", str(DEMO_BALANCE))
            self.message = ""

    def member_card(self):
        """The demo member's current printed card (a reissue replaces it)."""
        out = self.members("show", DEMO_MEMBER)
        return out[0]["card"] if out else None

    def app_code(self):
        """A fresh dynamic code of the demo member, issued by the host like the member's app."""
        out = self.members("code", DEMO_MEMBER)
        return out[0]["code"] if out else None

    # -- the screen ------------------------------------------------------------------------------
    def poll_frames(self):
        try:
            with open(self.screen_path, "rb") as f:
                f.seek(self.frame_pos)
                data = f.read()
        except OSError:
            return False
        if b"\n" not in data:
            return False
        complete = data[:data.rindex(b"\n") + 1]
        self.frame_pos += len(complete)
        for line in complete.splitlines():
            try:
                self.frame = json.loads(line)
            except ValueError:
                pass
        return True

    def poll_printer(self):
        """True when a new receipt came out (self.receipt: its lines)."""
        from host_sim.receipt_text import receipts
        try:
            with open(self.printer_path, "rb") as f:
                f.seek(self.printer_pos)
                data = f.read()
        except OSError:
            return False
        cut = data.rfind(b"\x1dV")  # the last complete receipt ends with its cut
        if cut < 0:
            return False
        end = cut + 4
        done = receipts(data[:end])
        self.printer_pos += end
        if not done:
            return False
        self.receipt = done[-1]
        return True

    def poll_host(self):
        """The host's charges decided since the last poll: [line] (report --charges lines)."""
        from host_sim.charges import Charges
        from host_sim.registry import Registry
        try:
            reg = Registry(self.db)
        except Exception:  # the host is creating the database
            return []
        try:
            lines = list(Charges(reg).lines())
        except Exception:
            return []
        finally:
            reg.close()
        seen = set((c["device_id"], c["cid"]) for c in self.charges)
        new = [c for c in lines if (c["device_id"], c["cid"]) not in seen]
        self.charges.extend(new)
        return new

    def poll_console(self):
        """The console's replies since the last poll (JSON lines from its pty)."""
        m = self.ptys["console"][0]
        out = []
        while select.select([m], [], [], 0)[0]:
            chunk = os.read(m, 65536)
            if not chunk:
                break
            self._console_buf += chunk
        while b"\n" in self._console_buf:
            line, self._console_buf = self._console_buf.split(b"\n", 1)
            line = line.strip(b"\r")
            if line:
                out.append(line.decode(errors="replace"))
                self.console_reply = out[-1]
        return out

    def render(self):
        width = 36
        lines = list(self.frame.get("lines", []))[:8]
        receipt = self.receipt[-12:]
        out = ["\x1b[H\x1b[2J",
               "terminal %s  screen: %-12s  last receipt:\r\n" % (DEVICE,
                                                                   self.frame.get("screen")),
               "+" + "-" * width + "+\r\n"]
        box = ["|" + str(ln)[:width].ljust(width) + "|" for ln in lines + [""] * (8 - len(lines))]
        box.append("+" + "-" * width + "+")
        for i in range(max(len(box), len(receipt))):
            left = box[i] if i < len(box) else " " * (width + 2)
            right = receipt[i] if i < len(receipt) else ""
            out.append(left + "  " + right[:42] + "\r\n")
        out.append("network: %s   host declines: %d%%   %s\r\n"
                   % (self.net.mode.upper(), self.decline_rate * 100, self.message[:80]))
        out.append("host, last charges:\r\n")
        for c in self.charges[-4:]:
            out.append("  " + _charge_text(c) + "\r\n")
        out.append("console: %s\r\n" % self.console_reply[:110])
        out.append(HELP + "\r\n")
        sys.stdout.write("".join(out))
        sys.stdout.flush()

    # -- input -----------------------------------------------------------------------------------
    def send(self, name, text):
        os.write(self.ptys[name][0], text.encode() + b"\r\n")

    def read_line(self, prompt):
        sys.stdout.write(prompt)
        sys.stdout.flush()
        buf = ""
        while True:
            ch = os.read(0, 1).decode(errors="replace")
            if ch in ("\r", "\n"):
                return buf
            if ch == "\x03" or ch == "\x1b":
                return None
            if ch in ("\x7f", "\x08"):
                buf = buf[:-1]
            else:
                buf += ch
            sys.stdout.write(ch if ch not in ("\x7f", "\x08") else "\b \b")
            sys.stdout.flush()

    def key(self, seq):
        if seq in ("q", "\x03"):
            return False
        if seq == "n":
            if self.net.mode == "up":
                self.net.cut()
                self.message = "network cut"
            else:
                self.net.restore()
                self.message = "network restored"
        elif seq == "v":
            if self.demo:
                self.send("scanner", self.demo[0])
                if self.frame.get("screen") == "sale":
                    self.demo.pop(0)  # redeemed with the sale (on idle it is only checked)
                self.message = "scanned a demo coupon (%d unused)" % len(self.demo)
        elif seq == "t":
            text = self.read_line("console> ")
            if text:
                self.send("console", text)
                self.message = "console: %s" % text.split(" ")[0]
        elif seq == "d":
            self.next_decline_rate()
        elif seq in ("k", "a"):
            what = "member card" if seq == "k" else "member app code"
            text = self.member_card() if seq == "k" else self.app_code()
            if text:
                self.send("scanner", text)
                self.message = "scanned the %s of %s" % (what, DEMO_MEMBER)
        elif seq == "s":
            text = self.read_line("scan> ")
            if text:
                self.send("scanner", text)
                self.message = "scanned %d chars" % len(text)
        elif seq in KEYS:
            self.send("keypad", KEYS[seq])
        return True

    def interactive(self):
        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
        tty.setraw(fd)
        try:
            self.render()
            while True:
                changed = self.poll_frames()
                changed = self.poll_printer() or changed
                changed = bool(self.poll_console()) or changed
                changed = bool(self.poll_host()) or changed
                if changed:
                    self.render()
                r, _, _ = select.select([fd], [], [], 0.1)
                if not r:
                    self._check_children()
                    continue
                data = os.read(fd, 64).decode(errors="replace")
                for seq in split_keys(data):
                    if not self.key(seq):
                        return
                self.render()
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
            sys.stdout.write("\r\n")

    def headless(self, seconds, press=()):
        """Prints JSON lines (frames, receipts, host charges, console replies) for `seconds`;
        plays the `press` steps once the idle screen is online."""
        end = time.monotonic() + seconds
        print(self.message, flush=True)
        steps = list(press)
        started = False
        waiting = None
        sleep_until = 0
        while time.monotonic() < end:
            if self.poll_frames():
                print(json.dumps(self.frame), flush=True)
                if not started and self.frame.get("screen") == "idle" \
                        and "online" in self.frame.get("lines", ()):
                    started = True
                if waiting and any(waiting in ln for ln in self.frame.get("lines", ())):
                    waiting = None
            if self.poll_printer():
                print(json.dumps({"receipt": self.receipt}), flush=True)
            for c in self.poll_host():
                print(json.dumps({"host": c}), flush=True)
            for reply in self.poll_console():
                print(json.dumps({"console": reply}), flush=True)
            while started and steps and not waiting and time.monotonic() >= sleep_until:
                step = steps.pop(0)
                if step.startswith("wait:"):
                    waiting = step[5:]
                elif step.startswith("sleep:"):
                    sleep_until = time.monotonic() + float(step[6:])
                elif step.startswith("console:"):
                    self.send("console", step[8:])
                elif step.startswith("scan:"):
                    self.send("scanner", step[5:])
                elif step in ("v", "k", "a"):
                    self.key(step)
                else:
                    self.send("keypad", step)
                    time.sleep(0.05)
            self._check_children()
            time.sleep(0.05)

    def _check_children(self):
        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError("a simulator process exited (code %s): see %s"
                                   % (p.returncode, self.dir))

    def stop(self):
        for p in reversed(self.procs):
            stop_process(p, 5)
        if self.net:
            self.net.close()
        if isinstance(self.broker, Mosquitto):
            self.broker.stop()
        elif self.broker is not None:
            self.broker.stop()
        for m, s, _ in self.ptys.values():
            for fd in (m, s):
                try:
                    os.close(fd)
                except OSError:
                    pass


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _charge_text(c):
    """One line of the host pane from a `report --charges` line."""
    res = c.get("auth") or c.get("code") or ""
    conflicts = " conflicts=%d" % c["conflicts"] if c.get("conflicts") else ""
    return "%s %s %d.%02d %s %s %s%s" % (c["device_id"], c["kind"], c["amt"] // 100,
                                        c["amt"] % 100, c["cur"], c["status"], res, conflicts)

def _interrupt(signum, frame):
    raise KeyboardInterrupt()


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m host_sim.sim")
    ap.add_argument("--runtime", choices=("cpython", "micropython"), default="cpython")
    ap.add_argument("--dir", default=os.path.join(ROOT, "var", "sim"))
    ap.add_argument("--fresh", action="store_true", help="start from an empty registry")
    ap.add_argument("--broker", choices=("auto", "amqtt"), default="auto",
                    help="auto: mosquitto, or amqtt where mosquitto cannot run")
    ap.add_argument("--headless", type=float, metavar="SECONDS",
                    help="print frames as JSON lines for SECONDS instead of drawing")
    ap.add_argument("--press", default="", metavar="STEP,STEP",
                    help="headless: steps played once the idle screen is online: keypad keys, "
                    "wait:TEXT, console:LINE, scan:TEXT, v/k/a, sleep:S")
    ap.add_argument("--decline-rate", type=float, default=0.0, metavar="R",
                    help="share of charges the host declines at start (0..1; `d` changes it)")
    args = ap.parse_args(argv)
    sim = Sim(args)
    # SIGTERM, and SIGHUP when the terminal window closes: stop everything like Ctrl-C does.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    try:
        sim.start()
        if args.headless is not None or not sys.stdin.isatty():
            sim.headless(args.headless or 10, [k for k in args.press.split(",") if k])
        else:
            sim.interactive()
    except KeyboardInterrupt:
        pass
    except RuntimeError as e:
        print("sim: %s" % e, file=sys.stderr)
        return 1
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

