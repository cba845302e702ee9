# What the pure verifiers (device/crypto/ed25519.py, device/crypto/p256.py) share: the decoded-key
# Point that
# carries its comb table, a modular inverse, and the signed comb digits of a scalar.
# TEETH * SPACING = 259 bits covers both curves' scalars (Ed25519 s + L < 2^254, P-256
# u + n < 2^257); a table holds 2^(TEETH-1) = 64 points.
TEETH = 7
SPACING = 37
HALF = 1 << (TEETH - 1)
_COL_MASK = (1 << SPACING) - 1
_ALL_ONES = (1 << (TEETH * SPACING)) - 1


def digits(k, stride):
    """Comb digits of an odd 0 < k < 2^(TEETH*SPACING), top column first: each is stride *
    index into the table (stride = coordinates per entry), negated minus one for a negative
    entry. With k = sum(c_i 2^i), c_i = +-1, bit i of (k + 2^n - 1) / 2 says c_i = +1.
    Written out for TEETH = 7."""
    k = (k + _ALL_ONES) >> 1
    m = _COL_MASK
    r0 = k & m
    r1 = (k >> SPACING) & m
    r2 = (k >> (2 * SPACING)) & m
    r3 = (k >> (3 * SPACING)) & m
    r4 = (k >> (4 * SPACING)) & m
    r5 = (k >> (5 * SPACING)) & m
    r6 = k >> (6 * SPACING)
    out = []
    for col in range(SPACING - 1, -1, -1):
        j = (((r0 >> col) & 1) | (((r1 >> col) & 1) << 1) | (((r2 >> col) & 1) << 2)
             | (((r3 >> col) & 1) << 3) | (((r4 >> col) & 1) << 4) | (((r5 >> col) & 1) << 5))
        if (r6 >> col) & 1:
            out.append(stride * j)
        else:
            out.append(-stride * (HALF - 1 - j) - 1)
    return out


class Point:
    """A decoded public key: affine (x, y); its comb table is built at the first verify."""

    def __init__(self, x, y):
        self.x = x
        self.y = y
        self.table = None


def inv(a, m):
    """a^-1 mod m for a != 0 mod m, m prime (extended Euclid: far faster than pow on
    MicroPython, whose pow(x, -1, m) also returns 0)."""
    x0, x1 = 1, 0
    r0, r1 = a % m, m
    while r1:
        q = r0 // r1
        r0, r1 = r1, r0 - q * r1
        x0, x1 = x1, x0 - q * x1
    return x0 % m


def inverses(zs, m):
    """[z^-1 mod m for z in zs] with a single inversion (Montgomery's trick); no z is 0."""
    n = len(zs)
    prefix = [1] * n
    acc = 1
    for j in range(n):
        prefix[j] = acc
        acc = acc * zs[j] % m
    rest = inv(acc, m)  # the inverse of the product of zs[0..j]
    out = [0] * n
    for j in range(n - 1, -1, -1):
        out[j] = rest * prefix[j] % m
        rest = rest * zs[j] % m
    return out
