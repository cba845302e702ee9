# Ed25519 signature verification (RFC 8032) in pure Python, for MicroPython where no library
# provides it. Acceptance matches OpenSSL (what `cryptography` uses on CPython): cofactorless
# check [s]B - [k]A == R by encoding the result and comparing bytes, s < L required, public keys
# decoded leniently (y >= p is reduced, x = 0 with the sign bit set is taken as x = 0).
#
# Speed: on MicroPython every big-int operation allocates, and a field multiply with % p costs
# about ten additions, so the work is in cutting multiplies. Both scalars run through signed
# combs (7 teeth, 37 columns): 36 doublings and 74 mixed additions instead of ~250 doublings.
# B's comb table is built once at first use; a key's table is built at its first verify and
# kept with the decoded key (callers cache decoded keys). Field inverses use the extended
# Euclidean algorithm, about 6x faster than pow(x, p - 2, p) on MicroPython.
from device.crypto import curve as comb
from device.crypto.sha512 import sha512

P = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFED
L = 0x1000000000000000000000000000000014DEF9DEA2F79CD65812631A5CF5D3ED
_D = 37095705934669439343138083508754565189542113879843219016388785533085940283555
_D2 = 16295367250680780974490674513165176452449235426866156013048779062215315747161
_SQRT_M1 = 19681161376707505956807079304988542015446066515923890162744021073123829784752
_BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202
_BY = 46316835694926478169428394003475163141307993866256225615783033603165251855960
_Y_MASK = (1 << 255) - 1

# Comb geometry: TEETH * SPACING >= 254 bits (scalars go up to s + L < 2^254); the table holds
# 2^(TEETH-1) points. 7 teeth: 64 points, packed as three columns (y+x, y-x, 2dxy) of two
# 1 KiB byte strings each, 6 KiB per table (as a list of ints it took 13.9 KB on the unix
# port); 8 teeth would save ~10% of a verify for twice the memory.
TEETH = comb.TEETH
SPACING = comb.SPACING
_HALF = comb.HALF

_base_table = None


def drop_tables():
    """Frees the base point's comb table (rebuilt at the next verify)."""
    global _base_table
    _base_table = None


def decode_point(pub):
    """The point a 32-byte public key encodes, or None when it is not on the curve."""
    if not isinstance(pub, (bytes, bytearray)) or len(pub) != 32:
        return None
    y = int.from_bytes(pub, "little")
    sign = y >> 255
    y &= _Y_MASK
    if y >= P:
        y -= P
    # x = sqrt(u / v), u = y^2 - 1, v = d y^2 + 1 (RFC 8032 5.1.3)
    yy = y * y % P
    u = (yy - 1) % P
    v = (_D * yy + 1) % P
    v3 = v * v * v % P
    x = u * v3 * pow(u * v3 * v3 * v % P, (P - 5) >> 3, P) % P
    vxx = v * x * x % P
    if vxx != u:
        if vxx != P - u:
            return None
        x = x * _SQRT_M1 % P
    if x & 1 != sign:
        x = (P - x) % P
    return comb.Point(x, y)


def _comb_table(x, y):
    """Signed-comb table for the affine point (x, y): entry j is
    Q[TEETH-1] + sum(+-Q[i] for i < TEETH-1), Q[i] = 2^(SPACING*i) (x, y), the sign of Q[i]
    being bit i of j; stored flat as (y + x, y - x, 2d x y) per entry."""
    p = P
    # teeth Q[i] in extended coordinates (X, Y, Z, T)
    teeth = [(x, y, 1, x * y % p)]
    X, Y, Z = x, y, 1
    for _ in range(TEETH - 1):
        for _i in range(SPACING):
            a = X * X % p
            b = Y * Y % p
            c = Z * Z % p
            h = a + b
            s = X + Y
            e = h - s * s % p
            g = a - b
            f = c + c + g
            X = e * f % p
            Y = g * h % p
            Z = f * g % p
        teeth.append((X, Y, Z, e * h % p))
    # entry 0 = Q[top] - Q[0] - ... ; then entry j + 2^i = entry j + 2 Q[i]
    acc = teeth[TEETH - 1]
    for i in range(TEETH - 1):
        X, Y, Z, T = teeth[i]
        acc = _add(acc, (p - X, Y, Z, p - T))
    pts = comb.Packed(_HALF, 4)
    pts.append(acc)
    for i in range(TEETH - 1):
        twice = _add(teeth[i], teeth[i])
        for j in range(1 << i):
            pts.append(_add(pts.point(j), twice))
    # to affine with one inversion; packed: a 2 KiB column per coordinate, 32 bytes an entry
    # (1 KiB pieces: a fragmented heap, and MicroPython never compacts it, has room for those)
    zis = comb.inverses(pts, 2, p)
    cols = [(bytearray(1024), bytearray(1024)) for _ in range(3)]
    for j in range(pts.n):
        zi = zis.get(j, 0)
        ax = pts.get(j, 0) * zi % p
        ay = pts.get(j, 1) * zi % p
        o = (32 * j) & 1023
        h = j >> 5
        cols[0][h][o:o + 32] = ((ay + ax) % p).to_bytes(32, "little")
        cols[1][h][o:o + 32] = ((ay - ax) % p).to_bytes(32, "little")
        cols[2][h][o:o + 32] = (_D2 * ax % p * ay % p).to_bytes(32, "little")
    return tuple(cols)


def _c(col, o):
    i = o & 1023
    return int.from_bytes(col[o >> 10][i:i + 32], "little")


def _add(p1, p2):
    # add-2008-hwcd-3 (a = -1), extended + extended; complete on this curve
    p = P
    X1, Y1, Z1, T1 = p1
    X2, Y2, Z2, T2 = p2
    a = (Y1 - X1) * (Y2 - X2) % p
    b = (Y1 + X1) * (Y2 + X2) % p
    c = T1 * _D2 % p * T2 % p
    d = 2 * Z1 * Z2 % p
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return e * f % p, g * h % p, f * g % p, e * h % p


def _digits(k):
    return comb.digits(k, 32)  # byte offsets into the packed columns


def _double_comb(ta, ka, tb, kb):
    """Extended (X, Y, Z, T) of ka*QA + kb*QB for comb tables ta, tb of QA, QB; ka, kb odd.
    Field values stay reduced only where a product needs them; sums are left unreduced."""
    p = P
    da = _digits(ka)
    db = _digits(kb)
    # first column: the entry from ta as (2(y+x - (y-x)), 2(y+x + y-x), 4, ...) = 4 (x, y, 1, xy)
    ta0, ta1, ta2 = ta
    tb0, tb1, tb2 = tb
    j = da[0]
    if j >= 0:
        e = _c(ta0, j) - _c(ta1, j)
        h = _c(ta0, j) + _c(ta1, j)
    else:
        j = -j - 1
        e = _c(ta1, j) - _c(ta0, j)
        h = _c(ta1, j) + _c(ta0, j)
    X = e + e
    Y = h + h
    Z = 4
    T = e * h % p
    col = 0
    while True:
        # mixed add of the entry from tb: (y+x, y-x, 2dxy), a negative entry swaps y+x and y-x
        # and negates 2dxy (so f and g trade places)
        j = db[col]
        if j >= 0:
            a = (Y - X) * _c(tb1, j) % p
            b = (Y + X) * _c(tb0, j) % p
            c = T * _c(tb2, j) % p
            d = Z + Z
            f = d - c
            g = d + c
        else:
            j = -j - 1
            a = (Y - X) * _c(tb0, j) % p
            b = (Y + X) * _c(tb1, j) % p
            c = T * _c(tb2, j) % p
            d = Z + Z
            f = d + c
            g = d - c
        e = b - a
        h = b + a
        X = e * f % p
        Y = g * h % p
        Z = f * g % p
        col += 1
        if col == SPACING:
            return X, Y, Z, e * h % p
        # double (dbl-2008-hwcd, a = -1, signs folded: e, f, g, h are the negated E, F, G, H)
        a = X * X % p
        b = Y * Y % p
        c = Z * Z % p
        h = a + b
        s = X + Y
        e = h - s * s % p
        g = a - b
        f = c + c + g
        X = e * f % p
        Y = g * h % p
        Z = f * g % p
        T = e * h % p
        # mixed add of the entry from ta
        j = da[col]
        if j >= 0:
            a = (Y - X) * _c(ta1, j) % p
            b = (Y + X) * _c(ta0, j) % p
            c = T * _c(ta2, j) % p
            d = Z + Z
            f = d - c
            g = d + c
        else:
            j = -j - 1
            a = (Y - X) * _c(ta0, j) % p
            b = (Y + X) * _c(ta1, j) % p
            c = T * _c(ta2, j) % p
            d = Z + Z
            f = d + c
            g = d - c
        e = b - a
        h = b + a
        X = e * f % p
        Y = g * h % p
        Z = f * g % p
        T = e * h % p


def _scalar(data):
    return int.from_bytes(data, "little")


def verify_point(A, pub, msg, sig):
    """True when sig (64 bytes) is a valid signature of msg under pub, A = decode_point(pub).
    msg may be a tuple of buffers: the message in pieces, hashed in order, never joined."""
    global _base_table
    parts = msg if type(msg) is tuple else (msg,)
    if (not isinstance(sig, (bytes, bytearray)) or len(sig) != 64
            or not all(isinstance(p, (bytes, bytearray, memoryview)) for p in parts)
            or not isinstance(pub, (bytes, bytearray)) or len(pub) != 32 or A is None):
        return False
    s = _scalar(sig[32:])
    if s >= L:
        return False
    h = sha512(bytes(sig[:32]))
    h.update(pub)
    for p in parts:
        h.update(p)
    k = _scalar(h.digest()) % L
    if _base_table is None:
        _base_table = _comb_table(_BX, _BY)
    if A.table is None:
        # the table holds -A, so one comb gives [s]B + [k](-A)
        A.table = _comb_table((P - A.x) % P, A.y)
    # the combs want odd scalars: B has order L, so s + L serves; A may carry a small-order
    # part, so an even k becomes k + 1 and A is added back afterwards
    if not s & 1:
        s += L
    fix = not k & 1
    X, Y, Z, T = _double_comb(A.table, k + fix, _base_table, s)
    if fix:
        X, Y, Z, T = _add((X, Y, Z, T), (A.x, A.y, 1, A.x * A.y % P))
    zi = comb.inv(Z, P)
    x = X * zi % P
    y = Y * zi % P
    return (y | ((x & 1) << 255)) == _scalar(sig[:32])


def verify(pub, msg, sig):
    """One-shot verify: decodes pub each time (callers verifying often should cache the point)."""
    return verify_point(decode_point(pub), pub, msg, sig)
