# Command line of the member accounts (SPEC 8.1; host_sim/members.py), JSON lines out:
#   python -m host_sim members --db DB --keystore DIR add MID --name NAME --tier TIER
#       [--balance MINOR] [--iss MERCHANT] [--qr-png PATH] [--qr-svg PATH]
#   python -m host_sim members --db DB show MID
#   python -m host_sim members --db DB history MID          # one line per history row
#   python -m host_sim members --db DB --keystore DIR block MID [--rev-out FILE]
#   python -m host_sim members --db DB --keystore DIR reissue MID [--rev-out FILE]
#       [--qr-png PATH] [--qr-svg PATH]
#   python -m host_sim members --db DB --keystore DIR code MID [--valid-s 120]
#   python -m host_sim members --db DB topup MID AMOUNT
# DB is a SQLite path or a postgresql:// URL (host_sim/store.py). block and reissue change the
# member, sign the new revocation list and queue it in the host outbox in one database
# transaction (the serving host publishes it retained on fleet/down/revocations), then write
# its PR1: text to --rev-out (default DIR/revocations.txt).
# Exit codes: 0 done, 1 failure (message on stderr), 2 bad arguments.
import argparse
import os
import sys
import time

from host_sim import cli, issuance, members, qrsheet, service
from host_sim.issuance import IssuanceError, Keystore
from host_sim.members import MemberError

DEFAULT_CODE_VALID_S = 120
MAX_CODE_VALID_S = 86400


class CliError(Exception):
    pass


def _print(obj):
    sys.stdout.write(service.to_json(obj) + "\n")


def _member_out(tx, m):
    out = {k: m[k] for k in ("mid", "iss", "name", "tier", "bal", "pts", "ep", "st",
                             "created_at")}
    out["card_cti"] = m["card_cti"]
    out["vip_exp"] = members.vip_expiry(tx, m["mid"])
    return out


def _keystore(args):
    if not args.keystore:
        raise CliError("--keystore DIR is required for %s" % args.command)
    return Keystore(args.keystore)


def _issuer(ks, iss):
    """The merchant whose key signs: --iss, else the only merchant of the keystore."""
    if iss is not None:
        return iss
    names = sorted({k["iss"] for k in ks.issuer_keys()})
    if len(names) != 1:
        raise CliError("--iss is required: the keystore has issuers %s" % (names or "none"))
    return names[0]


def _write_qr(args, token, out):
    if args.qr_png:
        qrsheet.qr_code(token).save(args.qr_png, kind="png", scale=8, border=4)
        out["qr_png"] = args.qr_png
    if args.qr_svg:
        qrsheet.qr_code(token).save(args.qr_svg, kind="svg", scale=8, border=4)
        out["qr_svg"] = args.qr_svg


def _sign_card(tx, ks, m):
    token, cti = ks.sign_member_code(m["iss"], m["mid"], m["ep"], m["tier"], name=m["name"])
    members.set_card(tx, m, cti, token)
    return token


def _block_cards(tx, ks, m, now):
    """Adds [mid, ep] to the revocation list and queues it for the fleet; the list's bytes."""
    cose = ks.block_member(m["mid"], m["ep"])
    service.push(tx, service.FLEET, "revocations", cose, now)
    return cose


def _rev_out(args, ks, cose):
    path = args.rev_out or os.path.join(args.keystore, "revocations.txt")
    issuance.write_text(path, issuance.REVOCATION_PREFIX, cose)
    return {"revocations": path, "rev_ver": ks.rev_ver}


def cmd_add(args, store, now):
    with _keystore(args) as ks:
        iss = _issuer(ks, args.iss)
        with store.transaction() as tx:
            m = members.add(tx, args.mid, iss, args.name, args.tier, args.balance, now)
            token = _sign_card(tx, ks, m)
            out = {"member": _member_out(tx, m), "card": token}
    _write_qr(args, token, out)
    _print(out)


def cmd_show(args, store, now):
    with store.transaction() as tx:
        m = members.member(tx, args.mid)
        if m is None:
            raise MemberError(members.UNKNOWN_MEMBER, "no member %r" % args.mid)
        _print({"member": _member_out(tx, m), "card": m["card"]})


def cmd_history(args, store, now):
    with store.transaction() as tx:
        if members.member(tx, args.mid) is None:
            raise MemberError(members.UNKNOWN_MEMBER, "no member %r" % args.mid)
        for row in members.history(tx, args.mid):
            _print(row)


def cmd_block(args, store, now):
    with _keystore(args) as ks:
        with store.transaction() as tx:
            m = members.block(tx, args.mid, now)
            cose = _block_cards(tx, ks, m, now)
            out = {"member": _member_out(tx, m), "blocked": [m["mid"], m["ep"]]}
        out.update(_rev_out(args, ks, cose))
    _print(out)


def cmd_reissue(args, store, now):
    with _keystore(args) as ks:
        cose = None
        with store.transaction() as tx:
            m = members.locked(tx, args.mid)
            # The replaced card must not keep paying beside the new one.
            if ks.blocked_members().get(m["mid"], -1) < m["ep"]:
                cose = _block_cards(tx, ks, m, now)
            members.reissue(tx, args.mid, now)
            m = members.member(tx, args.mid)
            token = _sign_card(tx, ks, m)
            out = {"member": _member_out(tx, m), "card": token,
                   "blocked": [m["mid"], ks.blocked_members()[m["mid"]]]}
        if cose is not None:
            out.update(_rev_out(args, ks, cose))
    _write_qr(args, token, out)
    _print(out)


def cmd_code(args, store, now):
    with _keystore(args) as ks:
        with store.transaction() as tx:
            m = members.locked(tx, args.mid)
            if m["st"] != members.ACTIVE:
                raise MemberError(members.MEMBER_BLOCKED, "member %r is blocked: reissue "
                                  "the card first" % args.mid)
            token, cti = ks.sign_member_code(m["iss"], m["mid"], m["ep"], m["tier"],
                                             name=m["name"], valid_s=args.valid_s)
            claims = issuance.token_claims(token)
            exp = claims[4]
            members.add_code(tx, m, cti, claims[6], exp)
    _print({"mid": args.mid, "code": token, "cti": cti, "ep": m["ep"], "exp": exp})


def cmd_topup(args, store, now):
    with store.transaction() as tx:
        m = members.host_topup(tx, args.mid, args.amount, now)
        out = {"member": _member_out(tx, m),
               "bonus": members.topup_bonus(args.amount)}
    _print(out)


def _minor(text):
    v = int(text)
    if not 0 <= v <= members.MAX_AMOUNT:
        raise argparse.ArgumentTypeError("must be 0..%d minor units" % members.MAX_AMOUNT)
    return v


def _valid_s(text):
    v = int(text)
    if not 1 <= v <= MAX_CODE_VALID_S:
        raise argparse.ArgumentTypeError("must be 1..%d seconds" % MAX_CODE_VALID_S)
    return v


def build_parser():
    p = argparse.ArgumentParser(prog="python -m host_sim members",
                                description="Member accounts, cards and codes (SPEC 8.1).")
    p.add_argument("--keystore", help="issuer keystore directory (host_sim.issue --keys)")
    sub = p.add_subparsers(dest="command", required=True)

    def rev_out(s):
        s.add_argument("--rev-out", metavar="FILE",
                       help="PR1: text of the new list (default KEYSTORE/revocations.txt)")

    def qr(s):
        s.add_argument("--qr-png", metavar="PATH", help="write the card's QR code as PNG")
        s.add_argument("--qr-svg", metavar="PATH", help="write the card's QR code as SVG")

    s = sub.add_parser("add", help="a new member and its printed card")
    s.add_argument("mid")
    s.add_argument("--name", required=True)
    s.add_argument("--tier", required=True)
    s.add_argument("--balance", type=_minor, default=0, metavar="MINOR")
    s.add_argument("--iss", help="merchant (default: the keystore's only issuer)")
    qr(s)
    s.set_defaults(fn=cmd_add)

    s = sub.add_parser("show", help="the member, its balance and card")
    s.add_argument("mid")
    s.set_defaults(fn=cmd_show)

    s = sub.add_parser("history", help="the member's history, one line per change")
    s.add_argument("mid")
    s.set_defaults(fn=cmd_history)

    s = sub.add_parser("block", help="loss report: block the member's cards")
    s.add_argument("mid")
    rev_out(s)
    s.set_defaults(fn=cmd_block)

    s = sub.add_parser("reissue", help="a new card with the next epoch")
    s.add_argument("mid")
    rev_out(s)
    qr(s)
    s.set_defaults(fn=cmd_reissue)

    s = sub.add_parser("code", help="a dynamic code (the member's app): pays once")
    s.add_argument("mid")
    s.add_argument("--valid-s", type=_valid_s, default=DEFAULT_CODE_VALID_S)
    s.set_defaults(fn=cmd_code)

    s = sub.add_parser("topup", help="top up the balance on the host (with the bonus rule)")
    s.add_argument("mid")
    s.add_argument("amount", type=_minor, metavar="AMOUNT")
    s.set_defaults(fn=cmd_topup)
    cli.db_anywhere(p, sub, "host database: SQLite path or postgresql:// URL")
    return p


def main(argv=None, clock=time.time):
    args = build_parser().parse_args(argv)
    return cli.on_store("members", args, (members.SCHEMA, service.OUTBOX_SCHEMA),
                        (CliError, MemberError, IssuanceError, OSError), clock)


if __name__ == "__main__":
    sys.exit(main())
