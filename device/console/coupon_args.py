# A coupon as typed at the console for `coupon check`: the token text, optionally followed by
# the cart total it is checked against.


def split_total(arg):
    """`TOKEN [TOTAL]` -> (token, total). A space is a base45 digit, so TOTAL is the last word
    only when it is all digits and the text before it is a well-formed COSE token; otherwise
    the whole argument is the token. Without a total (None) the check is the clerk's idle-screen
    check: there is no cart, so the minimum spend is not applied and there is no discount."""
    i = arg.rfind(" ")
    if i > 0:
        tail = arg[i + 1:]
        if tail.isdigit() and len(tail) <= 12 and _well_formed(arg[:i]):
            return arg[:i], int(tail)
    return arg, None


def _well_formed(token):
    from device.trust.lists import decode_sign1
    from protocol import base45
    if not token.startswith("PC1:"):
        return False
    try:
        decode_sign1(base45.decode(token[4:]))
    except ValueError:
        return False
    return True
