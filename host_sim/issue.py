# Command line of the coupon issuer (host_sim/issuance.py; QR sheets: host_sim/qrsheet.py).
# Each command prints one JSON line.
#   python -m host_sim.issue --keys DIR init-root [--alg eddsa|es256] [--add]
#   python -m host_sim.issue --keys DIR issuer ISS [--alg eddsa|es256] [--nbf UNIX] [--exp UNIX]
#   python -m host_sim.issue --keys DIR rotate ISS [--alg ...] [--retire-old-at UNIX]
#   python -m host_sim.issue --keys DIR trustlist --out FILE
#   python -m host_sim.issue --keys DIR revoke [--cti HEX ...] [--cmp ID ...] --out FILE
#   python -m host_sim.issue --keys DIR campaign CMP --name TEXT --kind pct|amt|item --value N
#       [--cur CUR] [--sku SKU] [--min N] [--stores S-001,S-002] [--max-uses N] [--nbf UNIX]
#       [--exp UNIX] --quantity N --iss ISS [--kid HEX] --csv FILE [--png FILE] [--svg FILE]
#   python -m host_sim.issue [--keys DIR] publish [--db HOSTDB] [--broker-host H] --broker-port P
#       [--root R] [--trustlist FILE] [--revocations FILE]
# publish sends the lists retained (QoS 1, raw COSE bytes) on {root}/fleet/down/...; without
# files it sends the keystore's current lists. A list over the maximum a terminal takes
# (64 KiB, protocol/limits.py) is refused, by revoke and publish alike, with what to do
# instead. --db copies every issued coupon's max uses into the host database, where the charge
# processor looks them up.
# Exit codes: 0 done, 1 failure (message on stderr), 2 bad arguments.
import argparse
import json
import os
import sys

from host_sim import cli, issuance, qrsheet
from host_sim.issuance import IssuanceError, Keystore
from protocol import topics


def _print(obj):
    print(json.dumps(obj, sort_keys=True))


def _open(args, create=False):
    if not args.keys:
        raise IssuanceError("keys", "--keys DIR is required for %s" % args.command)
    return Keystore(args.keys, create=create)


def cmd_init_root(args):
    with _open(args, create=True) as ks:
        pub = ks.create_root(args.alg, add=args.add)
    _print({"root_key": pub, "alg": args.alg, "keys": args.keys})


def cmd_issuer(args):
    with _open(args) as ks:
        had = len(ks.issuer_keys(args.iss))
        kid = ks.create_issuer(args.iss, args.alg, args.nbf, args.exp)
        key = ks.issuer_keys(args.iss)[-1]
        out = {"iss": args.iss, "kid": kid, "nbf": key["nbf"], "exp": key["exp"],
               "trust_ver": ks.trust_ver}
        if had:
            # Two keys valid at once for one merchant: usually a rotation was meant.
            out["warning"] = ("%s already had %d key(s); both now sign. To replace a key, use "
                              "`rotate %s [--retire-old-at UNIX]`" % (args.iss, had, args.iss))
            sys.stderr.write("warning: %s\n" % out["warning"])
        _print(out)


def cmd_rotate(args):
    with _open(args) as ks:
        kid = ks.rotate(args.iss, args.alg, args.retire_old_at)
        _print({"iss": args.iss, "kid": kid, "trust_ver": ks.trust_ver,
                "retired_at": args.retire_old_at})


def cmd_trustlist(args):
    with _open(args) as ks:
        cose = ks.trustlist()
        issuance.write_text(args.out, issuance.TRUST_PREFIX, cose)
        _print({"trustlist": args.out, "ver": ks.trust_ver, "keys": len(ks.issuer_keys()),
                "bytes": len(cose)})


def cmd_revoke(args):
    with _open(args) as ks:
        cose = ks.revoke(args.cti or (), args.cmp or ())
        issuance.write_text(args.out, issuance.REVOCATION_PREFIX, cose)
        ctis, cmps = ks.revoked()
        _print({"revocations": args.out, "ver": ks.rev_ver, "cti": len(ctis), "cmp": len(cmps)})


def cmd_campaign(args):
    stores = None
    if args.stores is not None:
        stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    with _open(args) as ks:
        tokens = ks.create_campaign(
            args.cmp, args.name, args.kind, args.value, nbf=args.nbf, exp=args.exp,
            stores=stores, min_spend=args.min, cur=args.cur, sku=args.sku,
            max_uses=args.max_uses, quantity=args.quantity, iss=args.iss, kid=args.kid)
    out = {"campaign": args.cmp, "quantity": len(tokens), "csv": args.csv,
           "qr_version": qrsheet.qr_code(tokens[0]).version}
    issuance.write_csv(args.csv, tokens)
    if args.png:
        out["png"] = qrsheet.write_png_sheets(args.png, tokens)
    if args.svg:
        out["svg"] = qrsheet.write_svg_sheets(args.svg, tokens)
    _print(out)


def _publish(args, lists):
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="issue-%d" % os.getpid(),
                         clean_session=True, protocol=mqtt.MQTTv311)
    try:
        client.connect(args.broker_host, args.broker_port, 30)
    except OSError as e:
        raise IssuanceError("broker", "cannot connect to %s:%d: %s"
                            % (args.broker_host, args.broker_port, e))
    client.loop_start()
    try:
        for what, data in lists:
            info = client.publish(topics.fleet(args.root, what), data, qos=1, retain=True)
            info.wait_for_publish(args.timeout)
            if not info.is_published():
                raise IssuanceError("broker", "%s not acknowledged within %.1f s"
                                    % (what, args.timeout))
    finally:
        client.disconnect()
        client.loop_stop()


def _sync_max_uses(db, ks):
    from host_sim.charges import Charges
    from host_sim.registry import Registry

    if cli.db_missing(db):
        raise IssuanceError("db", "no host database at %s" % db)
    reg = Registry(db)
    try:
        charges = Charges(reg)
        rows = ks.issued()
        for row in rows:
            charges.set_coupon_max_uses(bytes.fromhex(row["cti"]), row["max_uses"])
    finally:
        reg.close()
    return len(rows)


def cmd_publish(args):
    lists = []
    if args.trustlist:
        lists.append(("trustlist", issuance.read_text(args.trustlist, issuance.TRUST_PREFIX)))
    if args.revocations:
        lists.append(("revocations", issuance.read_text(args.revocations,
                                                        issuance.REVOCATION_PREFIX)))
    for what, data in lists:  # a list from a file may come from elsewhere: same limit
        issuance.check_list_size(what, data)
    ks = _open(args) if args.keys or not lists else None
    try:
        if not lists:
            lists.append(("trustlist", ks.trustlist()))
            if ks.rev_ver:
                lists.append(("revocations", ks.revocations()))
        synced = None
        if args.db:
            if ks is None:
                raise IssuanceError("keys", "--db needs --keys (the issued coupons)")
            synced = _sync_max_uses(args.db, ks)
        _publish(args, lists)
    finally:
        if ks is not None:
            ks.close()
    _print({"published": [w for w, _ in lists], "bytes": [len(d) for _, d in lists],
            "root": args.root, "coupons_synced": synced})


def _alg(text):
    try:
        issuance.parse_alg(text)
    except IssuanceError as e:
        raise argparse.ArgumentTypeError(e.message)
    return text.lower()


def _hex(text):
    try:
        bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not hex: %r" % text)
    return text.lower()




def build_parser():
    p = argparse.ArgumentParser(prog="python -m host_sim.issue",
                                description="Coupon issuer: keys, lists, campaigns, QR sheets.")
    p.add_argument("--keys", help="keystore directory")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("init-root", help="create the root key (prints its hex for root_keys)")
    s.add_argument("--alg", type=_alg, default="eddsa")
    s.add_argument("--add", action="store_true", help="add a new root beside the existing one")
    s.set_defaults(fn=cmd_init_root)

    s = sub.add_parser("issuer", help="create a signing key for a merchant")
    s.add_argument("iss")
    s.add_argument("--alg", type=_alg, default="eddsa")
    s.add_argument("--nbf", type=int)
    s.add_argument("--exp", type=int)
    s.set_defaults(fn=cmd_issuer)

    s = sub.add_parser("rotate", help="new key for a merchant, old one kept in the trust list")
    s.add_argument("iss")
    s.add_argument("--alg", type=_alg)
    s.add_argument("--retire-old-at", type=int, metavar="UNIX",
                   help="end of the old key's signing window")
    s.set_defaults(fn=cmd_rotate)

    s = sub.add_parser("trustlist", help="write the current trust list (PT1: text)")
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_trustlist)

    s = sub.add_parser("revoke", help="add to the revocation list and write it (PR1: text)")
    s.add_argument("--cti", type=_hex, action="append", metavar="HEX")
    s.add_argument("--cmp", action="append", metavar="ID")
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_revoke)

    s = sub.add_parser("campaign", help="issue coupons of a campaign")
    s.add_argument("cmp")
    s.add_argument("--name")
    s.add_argument("--kind", required=True, choices=issuance.KINDS)
    s.add_argument("--value", type=int, required=True)
    s.add_argument("--cur")
    s.add_argument("--sku")
    s.add_argument("--min", type=int)
    s.add_argument("--stores", help="comma-separated store ids (default: every store)")
    s.add_argument("--max-uses", type=int, default=1)
    s.add_argument("--nbf", type=int)
    s.add_argument("--exp", type=int)
    s.add_argument("--quantity", type=int, required=True)
    s.add_argument("--iss", required=True)
    s.add_argument("--kid", type=_hex)
    s.add_argument("--csv", required=True)
    s.add_argument("--png")
    s.add_argument("--svg")
    s.set_defaults(fn=cmd_campaign)

    s = sub.add_parser("publish", help="publish the lists retained on the broker")
    s.add_argument("--db", help="host database: receives the coupons' max uses")
    s.add_argument("--broker-host", default="127.0.0.1")
    s.add_argument("--broker-port", type=cli.port, default=1883)
    s.add_argument("--root", type=cli.topic_root, default=topics.DEFAULT_ROOT)
    s.add_argument("--trustlist", metavar="FILE")
    s.add_argument("--revocations", metavar="FILE")
    s.add_argument("--timeout", type=float, default=5.0)
    s.set_defaults(fn=cmd_publish)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except IssuanceError as e:
        sys.stderr.write("issue: %s\n" % e)
        return 1
    except OSError as e:
        sys.stderr.write("issue: %s\n" % e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
