# Command line of the host simulator:
#   python -m host_sim serve --db PATH --broker-host H --broker-port P [--root R]
#       [--trustlist FILE] [--revocations FILE] [--decline-over N] [--decline-rate R --seed S]
#       [--block-member MEM ...] [--latency S] [--client-id ID]
#       [--certs DIR | --tls-ca FILE [--tls-cert FILE --tls-key FILE]]
#       [--username NAME] [--password-from-db | --password-file FILE]
#       [--shared | --worker N] [--amqp URL [--amqp-queue NAME]] [--http-port P]
#     (--shared: one of several workers on the `$share/host/...` subscription; --worker N the
#      same with client id host_sim-wN; --amqp: up messages from a RabbitMQ queue instead,
#      host_sim/amqp_inbound.py; --http-port: the dashboard on 127.0.0.1, host_sim/dashboard.py)
#     (--certs DIR: TLS with DIR's CA and host certificate, as user pos-host with the password
#      the registry keeps for it; the locked-down broker of `broker-config`)
#     (runs the store services of host_sim/services.py)
#   python -m host_sim register DEVICE_ID --db PATH --store S --merchant M --currency CUR
#       --root-key HEX [--root-key HEX ...] [--broker-host H] [--broker-port P] [--root R]
#       [--data-dir DIR] [--scanner-port TTY] [--keypad-port TTY] [--console-port TTY]
#       [--tech-pin PIN] [--supervisor-pin PIN] [--clerk-pin PIN] [--certs DIR]
#       --config-out FILE
#     (--certs DIR: a TLS broker section with the device's certificate from DIR, made now if
#      needed, and its broker password; run `broker-config` afterwards so the broker knows it)
#   python -m host_sim config --db PATH [--device ID ... | --store S] JSON
#     (host-managed settings to terminals, through the host outbox: docs/operations.md)
#   python -m host_sim report --db PATH [--charges | --refunds]
#     (--charges / --refunds: one JSON line per charge / refund, oldest first, instead of the
#      totals)
# --db is a SQLite file path or a postgresql:// URL wherever it is taken.
#   python -m host_sim certs [--dir DIR] [--device ID ...] [--server-host H ...]
#   python -m host_sim broker-config --db PATH --certs DIR --port P --out DIR [--root R]
#       [--log FILE]
#   python -m host_sim fleet --terminals N --db URL --broker-port P [...] (host_sim/fleet/run.py)
#   python -m host_sim members --db DB [--keystore DIR] add|show|history|block|reissue|code|topup
#     (member accounts, cards and codes: host_sim/members_cli.py)
#   python -m host_sim bookings --db DB create|list|cancel|history
#     (the store's bookings: host_sim/bookings_cli.py)
#   python -m host_sim refunds --db DB list|approve RID|reject RID --reason TEXT|settings
#     (the supervisor's review of refunds and the refund rules: host_sim/refunds_cli.py)
# `serve` runs the store services of host_sim/services.py (host_sim/service.py's shape).
#   python -m host_sim vip --db PATH tier|enrol|cancel|tick|ledger|reminders ...  (host_sim/vip.py)
#   python -m host_sim licence --db PATH --keystore DIR plan|issue|show|renew|tick ...
#       (host_sim/licences.py)
# Exit codes: 0 done, 1 failure (message on stderr), 2 bad arguments.
import argparse
import hashlib
import json
import os
import signal
import sys
import threading
import time

from host_sim import cli, licences, refunds, vip
from host_sim.charges import ChargeError, Charges, Rules
from host_sim.files import write_atomic
from host_sim.registry import Registry, RegistryError
from host_sim.store import StoreError
from protocol import cbor, topics

PIN_ITERATIONS = 1000
DEFAULT_CLIENT_ID = "host_sim"
# The store services `serve` runs (host_sim/service.py), in this order.
LIST_PREFIX = {"trustlist": "PT1:", "revocations": "PR1:"}


class CliError(Exception):
    pass


def read_list(path, what):
    """The raw COSE bytes of a "PT1:"/"PR1:" list, given as its text or a file holding it."""
    from host_sim.issuance import IssuanceError, read_text
    try:
        data = bytes(read_text(path, LIST_PREFIX[what]))
        msg = cbor.loads(data)
    except IssuanceError as e:
        raise CliError("%s: %s" % (what, e.message))
    except (ValueError, cbor.CBORError) as e:
        raise CliError("%s: not base45 of CBOR: %s" % (what, e))
    if isinstance(msg, cbor.Tag) and msg.tag == 18:
        msg = msg.value
    if type(msg) is not list or len(msg) != 4:
        raise CliError("%s: not a COSE_Sign1" % what)
    return data


def pin_hash(pin, iterations=PIN_ITERATIONS):
    """SPEC 5.2 form: pbkdf2-sha256$ITERATIONS$SALT_HEX$HASH_HEX."""
    salt = os.urandom(16)
    h = hashlib.pbkdf2_hmac("sha256", pin.encode(), salt, iterations, 32)
    return "pbkdf2-sha256$%d$%s$%s" % (iterations, salt.hex(), h.hex())


def _emit(line):
    _emit_lines((line,))


def _emit_lines(lines):
    if not lines:
        return
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    sys.stdout.write("".join("%s %s\n" % (stamp, line) for line in lines))
    sys.stdout.flush()


_emit.lines = _emit_lines  # the host writes a batch's lines at once


def cmd_serve(args):
    from host_sim.host import Host, HostError
    from host_sim.services import SERVICES

    lists = {}
    if args.trustlist:
        lists["trustlist"] = read_list(args.trustlist, "trustlist")
    if args.revocations:
        lists["revocations"] = read_list(args.revocations, "revocations")
    try:
        rules = Rules(decline_over=args.decline_over, decline_rate=args.decline_rate,
                      seed=args.seed, blocked_members=args.block_member or ())
    except ChargeError as e:
        raise CliError(str(e))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    tls = _serve_tls(args)
    client_id = args.client_id
    if args.worker is not None:
        args.shared = True
        if client_id == DEFAULT_CLIENT_ID:
            client_id = "%s-w%d" % (DEFAULT_CLIENT_ID, args.worker)
    inbound = None
    if args.amqp:
        from host_sim.amqp_inbound import AmqpInbound

        inbound = AmqpInbound(args.amqp, args.root, queue=args.amqp_queue)
    try:
        host = Host(args.db, args.broker_host, args.broker_port, root=args.root, rules=rules,
                    latency_s=args.latency, client_id=client_id, log=_emit,
                    services=SERVICES, shared=args.shared, inbound=inbound, **tls)
    except HostError as e:
        raise CliError(str(e))
    try:
        host.start(timeout=args.connect_timeout)
    except HostError as e:
        raise CliError(str(e))
    board = None
    try:
        if args.http_port is not None:
            from host_sim.dashboard import Dashboard

            board = Dashboard(args.db, port=args.http_port, log=_emit).start()
        if "trustlist" in lists:
            host.publish_trustlist(lists["trustlist"])
        if "revocations" in lists:
            host.publish_revocations(lists["revocations"])
        while not stop.wait(0.5):
            pass
    finally:
        if board is not None:
            board.stop()
        host.stop()
    return 0


def _serve_tls(args):
    """Host(...) keyword arguments for the broker account and TLS the serve options ask for."""
    from host_sim.registry import HOST_USERNAME

    out = {"ca": args.tls_ca, "cert": args.tls_cert, "key": args.tls_key,
           "username": args.username, "password": None}
    if args.certs:
        from host_sim.certs import CertStore

        if args.tls_ca or args.tls_cert or args.tls_key:
            raise CliError("--certs names the TLS files: drop --tls-ca/--tls-cert/--tls-key")
        store = CertStore(args.certs)
        out["ca"] = store.ca_pem
        out["cert"], out["key"] = store.host_paths()
        for path in (out["ca"], out["cert"], out["key"]):
            if not os.path.exists(path):
                raise CliError("%s is missing: run `python -m host_sim certs --dir %s`"
                               % (path, args.certs))
        if out["username"] is None:
            out["username"] = HOST_USERNAME
        if args.password_file is None:
            args.password_from_db = True
    if args.password_from_db:
        if out["username"] is None:
            out["username"] = HOST_USERNAME
        if out["username"] != HOST_USERNAME:
            raise CliError("the registry keeps the password of %r only" % HOST_USERNAME)
        reg = Registry(args.db)
        try:
            out["password"] = reg.host_broker_password()
        finally:
            reg.close()
    elif args.password_file:
        try:
            with open(args.password_file) as f:
                out["password"] = f.readline().rstrip("\r\n")
        except (OSError, UnicodeError) as e:
            raise CliError("cannot read %s: %s" % (args.password_file, e))
        if out["username"] is None:
            raise CliError("--password-file needs --username")
    return out


def _device_tls(certs_dir, device_id):
    """The TLS part of a device's broker section; the device certificate is made if needed."""
    from host_sim.certs import CertError, CertStore

    store = CertStore(certs_dir)
    if not os.path.exists(store.ca_pem):
        # A new CA here would not be the one the broker trusts.
        raise CliError("no CA in %s: run `python -m host_sim certs --dir %s` first"
                       % (store.dir, certs_dir))
    try:
        store.ensure_device(device_id)
        return store.device_broker(device_id)
    except CertError as e:
        raise CliError(str(e))


def cmd_register(args):
    # the certificate first: a missing CA then changes nothing in the registry
    tls = _device_tls(args.certs, args.device_id) if args.certs else {}
    reg = Registry(args.db)
    try:
        existed = reg.device(args.device_id) is not None
        reg.register(args.device_id, args.store, args.merchant)
        data_dir = args.data_dir or os.path.join("var", args.device_id)
        drivers = {
            "display": {"driver": "jsonl", "path": os.path.join(data_dir, "screen.jsonl")},
            "printer": {"driver": "file", "path": os.path.join(data_dir, "printer.bin")},
        }
        if args.scanner_port:
            drivers["scanner"] = {"driver": "serial", "port": args.scanner_port, "baud": 9600}
        if args.keypad_port:
            drivers["keypad"] = {"driver": "serial", "port": args.keypad_port}
        if args.console_port:
            drivers["console"] = {"driver": "serial", "port": args.console_port}
        pins = {}
        for role in ("tech", "supervisor", "clerk"):
            pin = getattr(args, role + "_pin")
            if pin:
                pins[role] = pin_hash(pin)
        broker = {"host": args.broker_host, "port": args.broker_port, "root": args.root}
        broker.update(tls)
        cfg = reg.device_config(args.device_id, broker, data_dir,
                                [k.lower() for k in args.root_key], args.currency,
                                pins=pins, **drivers)
    except RegistryError as e:
        raise CliError(str(e))
    finally:
        reg.close()
    _write_private(args.config_out, json.dumps(cfg, indent=1) + "\n")
    print(json.dumps({"device_id": args.device_id, "store_id": args.store,
                      "config": args.config_out, "secret_rotated": existed,
                      "tls": cfg["broker"]["tls"]}))
    return 0


def _write_private(path, text):
    # The config holds the device secret: owner-only, and never half written.
    try:
        write_atomic(path, text, 0o600)
    except OSError as e:
        raise CliError("cannot write %s: %s" % (path, e))


def cmd_report(args):
    if cli.db_missing(args.db):
        raise CliError("no database at %s" % args.db)
    reg = Registry(args.db)
    try:
        if args.charges:
            for line in Charges(reg).lines():
                sys.stdout.write(json.dumps(line, sort_keys=True) + "\n")
            return 0
        reg.store.schema(refunds.SCHEMA)
        with reg.store.read() as tx:
            if args.refunds:
                for r in refunds.every(tx):
                    sys.stdout.write(json.dumps(refunds.public(r), sort_keys=True) + "\n")
                return 0
            refund_totals = refunds.report(tx)
        out = {"charges": Charges(reg).report(), "refunds": refund_totals, "drops": reg.drops(),
               "devices": []}
        for d in reg.devices():
            d.pop("secret")
            out["devices"].append(d)
    finally:
        reg.close()
    print(json.dumps(out, indent=1, sort_keys=True))
    return 0


def cmd_config(args):
    """Pushes a `config` (the host-managed settings, SPEC 3.2) to terminals through the host
    outbox: the serving host seals and sends it, now or once they reconnect."""
    from host_sim import service
    from host_sim.store import open_store
    from protocol import messages

    try:
        body = json.loads(args.settings)
        messages.check("config", body)
    except ValueError as e:
        raise CliError("settings: %s" % e)
    unknown = messages.config_unknown(body)
    if unknown:
        raise CliError("settings: terminals keep no %s" % ", ".join(unknown))
    if cli.db_missing(args.db):
        raise CliError("no database at %s" % args.db)
    store = open_store(args.db)
    try:
        store.schema(service.OUTBOX_SCHEMA)
        with store.transaction() as tx:
            if args.device:
                devices = [d for d in args.device if tx.execute(
                    "SELECT 1 FROM devices WHERE device_id=?", (d,)).fetchone()]
                missing = sorted(set(args.device) - set(devices))
                if missing:
                    raise CliError("no device %s" % ", ".join(missing))
            elif args.store:
                devices = service.store_devices(tx, args.store)
            else:
                devices = [r[0] for r in tx.execute(
                    "SELECT device_id FROM devices ORDER BY device_id")]
            now = int(time.time())
            for dev in devices:
                service.push(tx, dev, "config", body, now)
    finally:
        store.close()
    print(json.dumps({"config": body, "devices": devices}, sort_keys=True))
    return 0


def cmd_certs(args):
    from host_sim.certs import SERVER_HOSTS, CertError, CertStore

    store = CertStore(args.dir)
    try:
        report = store.ensure(devices=args.device or (), hosts=args.server_host or SERVER_HOSTS)
    except CertError as e:
        raise CliError(str(e))
    print(json.dumps({"dir": store.dir, "written": report["written"], "kept": report["kept"]}))
    return 0


def cmd_broker_config(args):
    from host_sim.certs import CertError, CertStore
    from host_sim.mosquitto import MosquittoError, write_secure_broker

    if cli.db_missing(args.db):
        raise CliError("no database at %s" % args.db)
    reg = Registry(args.db)
    try:
        # Every registered terminal gets its certificate too (kept when still valid), so one
        # command leaves a broker every terminal can reach.
        store = CertStore(args.certs)
        certs = store.ensure(devices=[d["device_id"] for d in reg.devices()])
        out = write_secure_broker(args.out, reg, store, args.port, root=args.root,
                                  log_path=args.log or os.path.join(args.out, "mosquitto.log"))
    except (CertError, MosquittoError, RegistryError) as e:
        raise CliError(str(e))
    finally:
        reg.close()
    print(json.dumps({"conf": out["conf"], "passwd": out["passwd"], "acl": out["acl"],
                      "port": out["port"], "accounts": out["accounts"],
                      "certs_written": certs["written"],
                      "run": "mosquitto -c %s" % out["conf"]}))
    return 0


def _http_port(text):
    v = int(text)
    if not 0 <= v < 65536:
        raise argparse.ArgumentTypeError("must be 0..65535")
    return v


def _rate(text):
    v = float(text)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError("must be within 0..1")
    return v


def _nonneg_float(text):
    v = float(text)
    if v < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return v




def build_parser():
    p = argparse.ArgumentParser(prog="python -m host_sim",
                                description="Desktop payment host for terminal agents.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the host until SIGTERM/SIGINT")
    s.add_argument("--db", required=True)
    s.add_argument("--broker-host", default="127.0.0.1")
    s.add_argument("--broker-port", type=cli.port, default=1883)
    s.add_argument("--root", type=cli.topic_root, default=topics.DEFAULT_ROOT)
    s.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    s.add_argument("--trustlist", help="file holding the PT1: text")
    s.add_argument("--revocations", help="file holding the PR1: text")
    s.add_argument("--decline-over", type=int, help="decline charges with amt above N")
    s.add_argument("--decline-rate", type=_rate, default=0.0, help="fraction declined 0..1")
    s.add_argument("--seed", type=int, default=0, help="seed of the random declines")
    s.add_argument("--block-member", action="append", help="member id to decline (repeat)")
    s.add_argument("--latency", type=_nonneg_float, default=0.0,
                   help="seconds before a charge_result is sent")
    s.add_argument("--connect-timeout", type=_nonneg_float, default=10.0)
    s.add_argument("--certs", help="TLS as the host of this certificate directory (user "
                   "pos-host, password from the registry)")
    s.add_argument("--tls-ca", help="CA file (PEM): TLS, broker certificate and name checked")
    s.add_argument("--tls-cert", help="the host's client certificate (PEM)")
    s.add_argument("--tls-key", help="its private key (PEM)")
    s.add_argument("--username", help="broker account")
    pw = s.add_mutually_exclusive_group()
    pw.add_argument("--password-from-db", action="store_true",
                    help="the pos-host password the registry keeps (see broker-config)")
    pw.add_argument("--password-file", help="file whose first line is the broker password")
    w = s.add_mutually_exclusive_group()
    w.add_argument("--shared", action="store_true",
                   help="one of several host workers: MQTT shared subscription $share/host/")
    w.add_argument("--worker", type=int, metavar="N",
                   help="--shared with the client id host_sim-wN (unless --client-id)")
    s.add_argument("--amqp", metavar="URL",
                   help="take up messages from a RabbitMQ queue (amqp://...) instead of MQTT")
    s.add_argument("--amqp-queue", default="host.up", help="the durable queue (default host.up)")
    s.add_argument("--http-port", type=_http_port,
                   help="serve the dashboard on 127.0.0.1:P (0 for a free port)")
    s.set_defaults(fn=cmd_serve)

    f = sub.add_parser("fleet", help="run N simulated terminals against host workers")
    from host_sim.fleet import run as fleet_run

    fleet_run.add_arguments(f)
    f.set_defaults(fn=fleet_run.main)

    r = sub.add_parser("register", help="register a device and write its config")
    r.add_argument("device_id")
    r.add_argument("--db", required=True)
    r.add_argument("--store", required=True)
    r.add_argument("--merchant", required=True)
    r.add_argument("--currency", required=True)
    r.add_argument("--root-key", action="append", required=True, help="hex (repeat)")
    r.add_argument("--broker-host", default="127.0.0.1")
    r.add_argument("--broker-port", type=cli.port, default=1883)
    r.add_argument("--root", type=cli.topic_root, default=topics.DEFAULT_ROOT)
    r.add_argument("--data-dir")
    r.add_argument("--scanner-port")
    r.add_argument("--keypad-port")
    r.add_argument("--console-port")
    r.add_argument("--tech-pin")
    r.add_argument("--supervisor-pin")
    r.add_argument("--clerk-pin")
    r.add_argument("--certs", help="certificate directory: TLS broker section with the "
                   "device's certificate and broker password")
    r.add_argument("--config-out", required=True)
    r.set_defaults(fn=cmd_register)

    q = sub.add_parser("report", help="charges and refunds report as JSON")
    q.add_argument("--db", required=True)
    lines = q.add_mutually_exclusive_group()
    lines.add_argument("--charges", action="store_true",
                       help="one JSON line per charge, oldest first, instead of the totals")
    lines.add_argument("--refunds", action="store_true",
                       help="one JSON line per refund, oldest first, instead of the totals")
    q.set_defaults(fn=cmd_report)

    g = sub.add_parser("config", help="send host-managed settings (limits, pins, tier_disc, "
                       "vip_tiers, bookings, status_interval_s) to terminals")
    g.add_argument("--db", required=True)
    where = g.add_mutually_exclusive_group()
    where.add_argument("--device", action="append", help="this terminal (repeat)")
    where.add_argument("--store", help="every terminal of this store (default: every one)")
    g.add_argument("settings", help='JSON, e.g. \'{"tier_disc": {"gold": 10}}\'')
    g.set_defaults(fn=cmd_config)

    c = sub.add_parser("certs", help="make the private CA, broker and client certificates")
    c.add_argument("--dir", help="certificate directory (default: certs/ in the repo root)")
    c.add_argument("--device", action="append", help="device id to certify (repeat)")
    c.add_argument("--server-host", action="append",
                   help="broker IP or DNS name (repeat; default 127.0.0.1 and localhost)")
    c.set_defaults(fn=cmd_certs)

    b = sub.add_parser("broker-config",
                       help="write mosquitto.conf, passwd and acl for the locked-down broker")
    b.add_argument("--db", required=True)
    b.add_argument("--certs", required=True, help="certificate directory")
    b.add_argument("--port", type=cli.port, required=True, help="TLS port on 127.0.0.1")
    b.add_argument("--out", required=True, help="directory for the three files")
    b.add_argument("--root", type=cli.topic_root, default=topics.DEFAULT_ROOT)
    b.add_argument("--log", help="broker log file (default OUT/mosquitto.log)")
    b.set_defaults(fn=cmd_broker_config)

    # Listed for --help only: main() hands `members ...` and `bookings ...` to their CLIs.
    sub.add_parser("members", add_help=False,
                   help="member accounts, cards and codes (members --help)")
    sub.add_parser("bookings", add_help=False,
                   help="the store's bookings: create, list, cancel, history (bookings --help)")
    sub.add_parser("refunds", add_help=False,
                   help="review refunds, refund rules (refunds --help)")
    vip.add_parser(sub)
    licences.add_parser(sub)
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["members"]:
        from host_sim import members_cli

        return members_cli.main(argv[1:])
    if argv[:1] == ["bookings"]:
        from host_sim import bookings_cli

        return bookings_cli.main(argv[1:])
    if argv[:1] == ["refunds"]:
        from host_sim import refunds_cli

        return refunds_cli.main(argv[1:])
    args = build_parser().parse_args(argv)
    if getattr(args, "decline_over", None) is not None and args.decline_over < 0:
        build_parser().error("--decline-over must be >= 0")
    try:
        return args.fn(args)
    except (CliError, StoreError) as e:
        sys.stderr.write("host_sim: %s\n" % e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
