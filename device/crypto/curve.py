# What the pure verifiers (device/crypto/ed25519.py, device/crypto/p256.py) share: the decoded-key
# Point that carries its comb table, a modular inverse, the packed points a table is built from,
# and the signed comb digits of a scalar.
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


class Packed:
    """Room for n points of `width` field elements (each in [0, 2^256)), 32 bytes an element
    in 1 KiB pieces: where a comb table's 64 points wait for their one inversion. As ints on
    MicroPython an element takes about 140 B (a product reduced mod p keeps the product's
    digits) in blocks of mixed sizes: building a table took about 100 KiB free; packed, the
    points take 8 KiB (docs/decisions.md, 2026-12-05 "Comb tables built from packed points")."""

    def __init__(self, n, width):
        self.width = width
        self.n = 0  # points appended so far
        self.pieces = [bytearray(1024) for _ in range((n * width * 32 + 1023) >> 10)]

    def append(self, elements):
        self.n += 1
        self.put(self.n - 1, elements)

    def put(self, j, elements):
        """Writes point j (appended already) over."""
        o = j * self.width * 32  # 1024 is a multiple of 32: no element straddles two pieces
        for e in elements:
            i = o & 1023
            self.pieces[o >> 10][i:i + 32] = e.to_bytes(32, "little")
            o += 32

    def get(self, j, k):
        """Element k of point j."""
        o = (j * self.width + k) * 32
        i = o & 1023
        return int.from_bytes(self.pieces[o >> 10][i:i + 32], "little")

    def point(self, j):
        return tuple(self.get(j, k) for k in range(self.width))


def inverses(pts, k, m):
    """Packed (width 1) inverses mod m of element k of each point in pts, none of them 0, with
    one inversion (Montgomery's trick); the prefix products wait in the output, packed too."""
    n = pts.n
    out = Packed(n, 1)
    acc = 1
    for j in range(n):
        out.append((acc,))
        acc = acc * pts.get(j, k) % m
    rest = inv(acc, m)  # the inverse of the product of elements 0..j
    for j in range(n - 1, -1, -1):
        out.put(j, (rest * out.get(j, 0) % m,))
        rest = rest * pts.get(j, k) % m
    return out
