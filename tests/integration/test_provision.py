"""The technician tool provisions a fresh terminal end to end over a serial line (a pty pair).

The terminal starts with no config (`run --config F --console PTY`: console only). The tool,
`python -m host_sim.provision`, on the other end of a bridged pty pair, registers it in
host_sim's registry, pushes the config, logs in, loads the lists, runs the selftest and writes the
label; the terminal then starts its agent in the same process and says a verified hello to
host_sim (plain TCP broker here). Then a factory reset over the console: the process exits with
the restart status, config and data are gone, and the next start is unprovisioned. Both runtimes.

Over TLS (issue 5's last acceptance point): the locked-down broker made from the registry, the host
on it as pos-host, a fresh terminal under a restart-on-exit-3 supervisor; the tool with --certs
makes the terminal's certificate, pushes it with `tls install`, adds the account to the broker
(--broker-config, SIGHUP), reboots the terminal, and the host records its verified hello.
"""
import json
import os
import select
import struct
import subprocess
import sys
import threading
import time
import zlib

import pytest

from device.console.commands import EXIT_REBOOT
from host_sim import issuance
from host_sim.certs import CertStore
from host_sim.mosquitto import Mosquitto, check_password_entry, write_secure_broker
from host_sim.procs import free_port
from host_sim.provision import QR_BORDER, QR_SCALE
from host_sim.registry import Registry
from tests.support.broker import mosquitto_path
from tests.support.terminal import Pty, runtime_cmd, start_host, stop_process, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Bridge:
    """Copies bytes both ways between two pty masters: a null-modem cable between the tool's
    port and the terminal's."""

    def __init__(self, a, b):
        self.fds = {a.master: b.master, b.master: a.master}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            ready, _, _ = select.select(list(self.fds), [], [], 0.05)
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    continue
                view = memoryview(data)
                while len(view):
                    view = view[os.write(self.fds[fd], view):]

    def close(self):
        self.stop.set()
        self.thread.join(5)


@pytest.fixture
def host(broker, tmp_path):
    db = str(tmp_path / "host.db")
    proc = start_host(ROOT, db, broker.port, tmp_path / "host.log",
                      "--client-id", "host-" + tmp_path.name)
    yield db
    stop_process(proc)


@pytest.fixture(scope="module")
def lists(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    with issuance.Keystore(str(d / "ks"), create=True) as ks:
        root = ks.create_root("eddsa")
        ks.create_issuer("M-ACME", "eddsa")
        issuance.write_text(str(d / "trust.txt"), issuance.TRUST_PREFIX, ks.trustlist())
        issuance.write_text(str(d / "rev.txt"), issuance.REVOCATION_PREFIX,
                            ks.revoke(cmp=["WITHDRAWN"]))
    return {"root": root, "trust": str(d / "trust.txt"), "rev": str(d / "rev.txt")}


def _hello(db, device_id):
    reg = Registry(db)
    try:
        d = reg.device(device_id)
        return d and d["last_hello"]
    finally:
        reg.close()


def _read_png(path):
    """(width, height, rows of grey bytes) of the 8-bit greyscale PNG the tool writes."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    i = 8
    idat = b""
    while i < len(data):
        n, kind = struct.unpack(">I4s", data[i:i + 8])
        body = data[i + 8:i + 8 + n]
        assert struct.unpack(">I", data[i + 8 + n:i + 12 + n])[0] == zlib.crc32(kind + body)
        if kind == b"IHDR":
            w, h, depth, colour = struct.unpack(">IIBB", body[:10])
            assert (depth, colour) == (8, 0)
        elif kind == b"IDAT":
            idat += body
        i += 12 + n
    raw = zlib.decompress(idat)
    rows = [raw[r * (w + 1) + 1:(r + 1) * (w + 1)] for r in range(h)]
    assert all(raw[r * (w + 1)] == 0 for r in range(h))
    return w, h, rows


def _check_label(path, device_id):
    import segno
    w, h, rows = _read_png(path)
    qr = segno.make_qr(device_id, error="m")  # a full QR code, never Micro QR
    size = qr.symbol_size(scale=1, border=0)[0]
    # Every module of the symbol is where segno puts it (sampled at module centres).
    for y in range(size):
        for x in range(size):
            px = rows[(QR_BORDER + y) * QR_SCALE + QR_SCALE // 2][
                (QR_BORDER + x) * QR_SCALE + QR_SCALE // 2]
            assert (px == 0) == bool(qr.matrix[y][x]), (x, y)
    # Below the symbol: the id and store in text (some ink under the quiet zone).
    below = rows[(size + 2 * QR_BORDER) * QR_SCALE:]
    assert any(0 in row for row in below)
    return w, h


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_provision_a_fresh_terminal_over_serial(runtime, broker, host, lists, tmp_path):
    term_side, tool_side = Pty(), Pty()
    bridge = Bridge(term_side, tool_side)
    cfg_path = str(tmp_path / "device.json")
    cmd, env = runtime_cmd(runtime, ROOT)
    log = open(tmp_path / "device.log", "w")
    dev = subprocess.Popen(cmd + ["-m", "device", "run", "--config", cfg_path,
                                  "--console", term_side.slave_path],
                           cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def tail():
        with open(tmp_path / "device.log") as f:
            return f.read()[-3000:]

    try:
        st = wait_until(lambda: _try(tool_side, "status"), 30, tail)
        assert st["ok"] and st["provisioned"] is False
        assert ask(tool_side, "login 2468")["error"] == "not_provisioned"

        label = str(tmp_path / "label.png")
        args = [sys.executable, "-m", "host_sim.provision", "--port", tool_side.slave_path,
                "--db", host, "--store", "S-001", "--merchant", "M-ACME", "--currency", "CNY",
                "--root-key", lists["root"], "--trustlist", lists["trust"],
                "--revocations", lists["rev"], "--broker-port", str(broker.port),
                "--data-dir", str(tmp_path / "data"), "--tech-pin", "2468",
                "--supervisor-pin", "9753", "--label-png", label]
        p = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=90)
        assert p.returncode == 0, p.stderr + tail()
        summary = json.loads(p.stdout)
        device_id = summary["device_id"]
        assert device_id == "T-0001" and summary["store_id"] == "S-001"
        assert summary["lists"] == {"trust": 1, "revocations": 1}
        assert summary["selftest"]["passed"] is True and summary["rt"] == runtime
        assert summary["tech_pin"] is None

        # The config on the terminal: the registry's secret, our console, the PIN hashes.
        with open(cfg_path) as f:
            cfg = json.load(f)
        reg = Registry(host)
        try:
            assert bytes.fromhex(cfg["secret_hex"]) == reg.device(device_id)["secret"]
        finally:
            reg.close()
        assert cfg["secret_hex"] not in p.stdout + p.stderr
        assert cfg["console"] == {"driver": "serial", "port": term_side.slave_path}
        assert sorted(cfg["pins"]) == ["supervisor", "tech"]

        # The verified hello (sent on connect, which may come before the lists were loaded).
        hello = wait_until(lambda: _hello(host, device_id), 30, tail)
        assert hello["rt"] == runtime and hello["boot"] == 1 and hello["queue"] == 0
        st = ask(tool_side, "status")
        assert st["device_id"] == device_id and (st["trust_ver"], st["rev_ver"]) == (1, 1)

        w, h = _check_label(label, device_id)
        assert summary["label_size"] == [w, h]

        # A provisioned terminal is not provisioned again by the tool.
        p = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert p.returncode == 1 and "already provisioned" in p.stderr
        assert st["online"] is True

        # Factory reset from the console: the process ends with the restart status, the
        # config and the data are gone, and the next start is unprovisioned again.
        assert ask(tool_side, "login 2468")["ok"]
        code = ask(tool_side, "factory-reset")["confirm"]
        assert ask(tool_side, "factory-reset " + code)["reset"] is True
        assert dev.wait(15) == EXIT_REBOOT, tail()
        assert not os.path.exists(cfg_path) and not os.path.exists(tmp_path / "data")
        dev = subprocess.Popen(cmd + ["-m", "device", "run", "--config", cfg_path,
                                      "--console", term_side.slave_path],
                               cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        st = wait_until(lambda: _try(tool_side, "status"), 30, tail)
        assert st["provisioned"] is False
    finally:
        stop_process(dev)
        log.close()
        bridge.close()
        term_side.close()
        tool_side.close()


def ask(pty, line, timeout=5):
    """One console command from the tool's end of the cable (the slave side the tool opens)."""
    fd = pty.slave
    while select.select([fd], [], [], 0)[0]:
        os.read(fd, 65536)  # whatever an earlier user of the port left unread
    os.write(fd, line.encode() + b"\n")
    buf = b""
    end = time.monotonic() + timeout
    while b"\n" not in buf:
        left = end - time.monotonic()
        if left <= 0:
            raise AssertionError("no reply to %r; got %r" % (line, buf[-200:]))
        if select.select([fd], [], [], left)[0]:
            buf += os.read(fd, 65536)
    return json.loads(buf.split(b"\n", 1)[0])


def _try(pty, line):
    try:
        return ask(pty, line, timeout=1)
    except AssertionError:
        return None


# -- over TLS ------------------------------------------------------------------------------------
class Supervised:
    """A terminal process restarted whenever it exits with EXIT_REBOOT, as a systemd unit with
    RestartForceExitStatus=3 would; stop() ends it for good."""

    def __init__(self, cmd, env, log):
        self.cmd, self.env, self.log = cmd, env, log
        self.starts = 0
        self.lock = threading.Lock()
        self.stopping = False
        self.proc = None
        self._start()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _start(self):
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.starts += 1

    def _watch(self):
        while True:
            code = self.proc.wait()
            with self.lock:
                if self.stopping or code != EXIT_REBOOT:
                    return
                self._start()

    def stop(self):
        with self.lock:
            self.stopping = True
            proc = self.proc
        stop_process(proc)
        self.thread.join(10)


@pytest.fixture(scope="module")
def secure_shop(tmp_path_factory):
    """Certificates, the registry, the locked-down mosquitto (only pos-host has an account yet)
    and `host_sim serve --certs` on it."""
    if mosquitto_path() is None:
        pytest.fail("mosquitto missing: run scripts/ensure-mosquitto")
    base = tmp_path_factory.mktemp("prov-tls")
    certs = str(base / "certs")
    CertStore(certs).ensure()
    db = str(base / "host.db")
    port = free_port()
    reg = Registry(db)
    try:
        out = write_secure_broker(str(base / "broker"), reg, CertStore(certs), port,
                                  log_path=str(base / "broker" / "mosquitto.log"))
    finally:
        reg.close()
    assert out["accounts"] == ["pos-host"]
    broker = Mosquitto(out["conf"], port)
    broker.start()
    host_log = base / "host.log"
    host = subprocess.Popen(
        [sys.executable, "-u", "-m", "host_sim", "serve", "--db", db, "--broker-port",
         str(port), "--certs", certs, "--connect-timeout", "20"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), stdout=open(host_log, "w"),
        stderr=subprocess.STDOUT)

    def host_tail():
        with open(host_log) as f:
            return f.read()[-2000:]

    try:
        wait_until(lambda: "host up" in host_tail() or host.poll() is not None, 25, host_tail)
        assert host.poll() is None and "(TLS)" in host_tail(), host_tail()
        yield {"base": base, "certs": certs, "db": db, "port": port, "broker": broker,
               "broker_dir": str(base / "broker"), "host_tail": host_tail}
    finally:
        stop_process(host)
        broker.stop()


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_provisioned_over_serial_then_a_verified_hello_over_tls(runtime, secure_shop, lists):
    shop = secure_shop
    base = shop["base"]
    device_id = "T-TLS-" + runtime[:2].upper()
    term_side, tool_side = Pty(), Pty()
    bridge = Bridge(term_side, tool_side)
    cfg_path = str(base / (runtime + ".json"))
    data_dir = str(base / ("data-" + runtime))
    cmd, env = runtime_cmd(runtime, ROOT)
    log_path = base / (runtime + ".log")
    log = open(log_path, "w")
    dev = Supervised(cmd + ["-m", "device", "run", "--config", cfg_path, "--console",
                            term_side.slave_path], env, log)

    def tail():
        with open(log_path) as f:
            return f.read()[-3000:] + "\nhost:\n" + shop["host_tail"]()

    try:
        st = wait_until(lambda: _try(tool_side, "status"), 30, tail)
        assert st["provisioned"] is False
        p = subprocess.run(
            [sys.executable, "-m", "host_sim.provision", "--port", tool_side.slave_path,
             "--db", shop["db"], "--device-id", device_id, "--store", "S-001",
             "--merchant", "M-ACME", "--currency", "CNY", "--root-key", lists["root"],
             "--trustlist", lists["trust"], "--revocations", lists["rev"],
             "--broker-port", str(shop["port"]), "--data-dir", data_dir,
             "--tech-pin", "2468", "--certs", shop["certs"],
             "--broker-config", shop["broker_dir"], "--broker-pid", str(shop["broker"].pid),
             "--label-png", str(base / (runtime + ".png"))],
            cwd=ROOT, capture_output=True, text=True, timeout=90)
        assert p.returncode == 0, p.stderr + tail()
        summary = json.loads(p.stdout)
        assert summary["device_id"] == device_id and summary["rt"] == runtime
        assert summary["tls"]["rebooted"] is True and dev.starts == 2
        assert summary["broker_accounts"] == "passwd written, broker reloaded"
        assert summary["online"] is True and summary["selftest"]["passed"] is True
        assert summary["lists"] == {"trust": 1, "revocations": 1}

        # The verified hello: the host stores it only once the envelope's MAC and seq pass.
        row = wait_until(lambda: (_row(shop["db"], device_id) or {}).get("last_hello") and
                         _row(shop["db"], device_id), 30, tail)
        assert row["last_hello"]["rt"] == runtime and row["last_hello"]["boot"] == 2
        assert row["last_seq"] is not None and row["online"]
        assert "hello %s " % device_id in shop["host_tail"]()

        # What the terminal holds: the TLS broker section with its own account, and the pushed
        # files (PEM and the DER twins) that are the certificate the store issued for it.
        with open(cfg_path) as f:
            b = json.load(f)["broker"]
        tls = data_dir + "/tls/"
        assert b["tls"] is True and b["port"] == shop["port"] and b["username"] == device_id
        assert (b["ca"], b["cert"], b["key"]) == (tls + "ca.pem", tls + "cert.pem",
                                                  tls + "key.pem")
        assert summary["tls"]["files"] == [tls + n for n in (
            "ca.pem", "ca.der", "cert.pem", "cert.der", "key.pem", "key.der")]
        store = CertStore(shop["certs"])
        cert, key = store.device_paths(device_id)
        for mine, theirs in ((tls + "ca.der", store.ca_der), (tls + "cert.der", cert[:-4] +
                             ".der"), (tls + "key.der", key[:-4] + ".der")):
            with open(mine, "rb") as f, open(theirs, "rb") as g:
                assert f.read() == g.read(), mine
        if runtime == "cpython":
            assert summary["tls"]["key_mode"] == "0600"
            assert os.stat(tls + "key.pem").st_mode & 0o777 == 0o600
        else:
            assert summary["tls"]["key_mode"] is None
        reg = Registry(shop["db"])
        try:
            password = reg.broker_password(device_id)
        finally:
            reg.close()
        assert b["password"] == password
        with open(os.path.join(shop["broker_dir"], "passwd")) as f:
            entry = [ln for ln in f if ln.startswith(device_id + ":")][0]
        assert check_password_entry(entry, password)
    finally:
        dev.stop()
        log.close()
        bridge.close()
        term_side.close()
        tool_side.close()


def _row(db, device_id):
    reg = Registry(db)
    try:
        return reg.device(device_id)
    finally:
        reg.close()


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_desktop_provisioning_without_hardware(runtime, tmp_path):
    # Issue 17: no serial hardware on a laptop: --spawn starts a fresh terminal on a pty.
    from host_sim.procs import free_port
    db = str(tmp_path / "host.db")
    p = subprocess.run([sys.executable, "-m", "host_sim.provision", "--spawn", runtime,
                        "--spawn-dir", str(tmp_path / "term"), "--db", db, "--store", "S-001",
                        "--merchant", "M-ACME", "--currency", "CNY", "--root-key", "cd" * 32,
                        "--broker-port", str(free_port()), "--tech-pin", "2468",
                        "--timeout", "30"],
                       cwd=ROOT, capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    summary = json.loads(p.stdout)
    assert summary["device_id"] == "T-0001" and summary["rt"] == runtime
    assert summary["spawned"]["running"] is False and summary["label_png"] is None
    cfg = json.load(open(summary["spawned"]["config"]))
    assert cfg["device_id"] == "T-0001" and cfg["data_dir"].startswith(str(tmp_path))


def test_device_label_is_a_full_qr_code():
    from host_sim.provision import QR_BORDER, QR_SCALE, label_pixels
    img = label_pixels("T-0001", "S-001")
    # A Micro QR symbol is at most 17 modules wide; the smallest full QR code is 21.
    assert len(img[0]) >= (21 + 2 * QR_BORDER) * QR_SCALE
