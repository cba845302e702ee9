# Signed comb digits for the pure verifiers' fixed-key scalar multiplication (device/ed25519.py,
# device/p256.py). TEETH * SPACING = 259 bits covers both curves' scalars (Ed25519 s + L < 2^254,
# P-256 u + n < 2^257); a table holds 2^(TEETH-1) = 64 points.
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
