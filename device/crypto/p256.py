# ECDSA P-256 / SHA-256 verification in pure Python, for MicroPython where no library provides
# it. Signatures are raw r || s (COSE ES256); high s is accepted (no low-s rule, SPEC 2.1).
#
# Speed: as in device/crypto/ed25519.py, the cost is big-int multiplies, so both scalars run
# through
# signed combs (7 teeth, 37 columns) in Jacobian coordinates: 36 doublings and 74 mixed
# additions. G's table is built once at first use, a key's at its first verify (kept with the
# decoded key). r is compared with X / Z^2 as r * Z^2 == X (mod p): no field inversion; the one
# inversion (s mod n) uses the extended Euclidean algorithm.
from hashlib import sha256

from device.crypto import curve as comb

P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
_GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
_GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5

# Comb geometry: TEETH * SPACING >= 257 bits (scalars go up to u + n < 2^257); the table holds
# 2^(TEETH-1) affine points: 64 points, packed as two columns (x, y) of two 1 KiB byte strings
# each: 4 KiB per table (as a list of ints it took 9.2 KB on the unix port).
TEETH = comb.TEETH
SPACING = comb.SPACING
_HALF = comb.HALF

_base_table = None


def drop_tables():
    """Frees the base point's comb table (rebuilt at the next verify)."""
    global _base_table
    _base_table = None


def _on_curve(x, y):
    return (y * y - (x * x * x - 3 * x + _B)) % P == 0


def decode_point(pub):
    """The point of a SEC1 key (65 bytes 04||x||y or 33 bytes 02/03||x), or None when the
    encoding is invalid or the point is not on the curve."""
    if not isinstance(pub, (bytes, bytearray)):
        return None
    if len(pub) == 65 and pub[0] == 4:
        x = int.from_bytes(pub[1:33], "big")
        y = int.from_bytes(pub[33:], "big")
        if x >= P or y >= P or not _on_curve(x, y):
            return None
        return comb.Point(x, y)
    if len(pub) == 33 and pub[0] in (2, 3):
        x = int.from_bytes(pub[1:], "big")
        if x >= P:
            return None
        rhs = (x * x * x - 3 * x + _B) % P
        y = pow(rhs, (P + 1) >> 2, P)  # p = 3 mod 4
        if y * y % P != rhs:
            return None
        if y & 1 != pub[0] & 1:
            y = P - y
        return comb.Point(x, y)
    return None


def uncompressed(Q):
    """The 65-byte SEC1 uncompressed encoding of a decoded point."""
    return b"\x04" + Q.x.to_bytes(32, "big") + Q.y.to_bytes(32, "big")


def _double(X, Y, Z):
    # dbl-2001-b, a = -3; the point at infinity (Z = 0) stays there
    p = P
    delta = Z * Z % p
    gamma = Y * Y % p
    beta = X * gamma % p
    alpha = 3 * (X - delta) * (X + delta) % p
    X3 = (alpha * alpha - 8 * beta) % p
    Z3 = 2 * Y * Z % p
    Y3 = (alpha * (4 * beta - X3) - 8 * gamma * gamma) % p
    return X3, Y3, Z3


def _madd(X1, Y1, Z1, x2, y2):
    """Jacobian + affine (madd-2004-hmv), exceptional cases handled."""
    p = P
    if Z1 == 0:
        return x2, y2, 1
    zz = Z1 * Z1 % p
    h = x2 * zz % p - X1
    r = y2 * zz % p * Z1 % p - Y1
    if h == 0:
        if r == 0:
            return _double(X1, Y1, Z1)
        return (1, 1, 0)
    hh = h * h % p
    hhh = h * hh % p
    v = X1 * hh % p
    X3 = (r * r - hhh - v - v) % p
    return X3, (r * (v - X3) - Y1 * hhh) % p, Z1 * h % p


def _affine(pts):
    """Affine (x, y) of the Jacobian points packed in pts (comb.Packed, none at infinity), one
    after the other, with one inversion (Montgomery)."""
    p = P
    zis = comb.inverses(pts, 2, p)
    for j in range(pts.n):
        zi = zis.get(j, 0)
        zi2 = zi * zi % p
        yield pts.get(j, 0) * zi2 % p, pts.get(j, 1) * zi2 % p * zi % p


def _packed(points):
    pts = comb.Packed(len(points), 3)
    for pt in points:
        pts.append(pt)
    return pts


def _comb_table(x, y):
    """Signed-comb table for the affine point (x, y): entry j is
    Q[TEETH-1] + sum(+-Q[i] for i < TEETH-1), Q[i] = 2^(SPACING*i) (x, y), the sign of Q[i]
    being bit i of j; stored flat as affine (x, y) per entry. No point met here is at infinity
    or a doubling in disguise: each is c (x, y) with 0 < |c| < 2^(SPACING*TEETH) < n."""
    p = P
    teeth = []
    X, Y, Z = x, y, 1
    for _ in range(TEETH - 1):
        for _i in range(SPACING):
            delta = Z * Z % p
            gamma = Y * Y % p
            beta = X * gamma % p
            alpha = 3 * (X - delta) * (X + delta) % p
            X = (alpha * alpha - 8 * beta) % p
            Z = 2 * Y * Z % p
            Y = (alpha * (4 * beta - X) - 8 * gamma * gamma) % p
        teeth.append((X, Y, Z))
    # affine teeth Q[1..] and doubled teeth 2 Q[i], so the entries come from mixed additions
    aff = list(_affine(_packed(teeth + [_double(*q) for q in [(x, y, 1)] + teeth[:-1]])))
    top = TEETH - 1
    teeth = [(x, y)] + aff[:top]
    twice = aff[top:]
    # entry 0 = Q[top] - Q[0] - ... ; then entry j + 2^i = entry j + 2 Q[i]
    acc = (teeth[top][0], teeth[top][1], 1)
    for i in range(top):
        acc = _madd(acc[0], acc[1], acc[2], teeth[i][0], p - teeth[i][1])
    pts = comb.Packed(_HALF, 3)
    pts.append(acc)
    for i in range(top):
        x2, y2 = twice[i]
        for j in range(1 << i):
            X, Y, Z = pts.point(j)
            pts.append(_madd(X, Y, Z, x2, y2))
    # packed: a 2 KiB column per coordinate, 32 bytes an entry, in 1 KiB pieces (a fragmented
    # heap, and MicroPython never compacts it, has room for those)
    xs = (bytearray(1024), bytearray(1024))
    ys = (bytearray(1024), bytearray(1024))
    for j, (ax, ay) in enumerate(_affine(pts)):
        o = (32 * j) & 1023
        xs[j >> 5][o:o + 32] = ax.to_bytes(32, "big")
        ys[j >> 5][o:o + 32] = ay.to_bytes(32, "big")
    return (xs, ys)


def _digits(k):
    return comb.digits(k, 32)  # byte offsets into the packed columns


def _double_comb(ta, ka, tb, kb):
    """Jacobian (X, Y, Z) of ka*QA + kb*QB for comb tables ta, tb; ka, kb odd. Z = 0 is the
    point at infinity, which crafted signatures can reach mid-way: every addition checks."""
    p = P
    steps = ((ta, _digits(ka)), (tb, _digits(kb)))
    X, Y, Z = 1, 1, 0
    for col in range(SPACING):
        if Z:
            # double (dbl-2001-b, a = -3); shifts are cheaper than small multiples
            delta = Z * Z % p
            gamma = Y * Y % p
            beta = X * gamma % p
            alpha = 3 * (X - delta) * (X + delta) % p
            X = (alpha * alpha - (beta << 3)) % p
            Z = (Y * Z << 1) % p
            Y = (alpha * ((beta << 2) - X) - (gamma * gamma << 3)) % p
        for t, digits in steps:
            j = digits[col]
            neg = j < 0
            if neg:
                j = -j - 1
            k = j & 1023
            j >>= 10
            x2 = int.from_bytes(t[0][j][k:k + 32], "big")
            y2 = int.from_bytes(t[1][j][k:k + 32], "big")
            if neg:
                y2 = p - y2
            if not Z:
                X, Y, Z = x2, y2, 1
                continue
            # mixed add, Jacobian + affine (madd-2004-hmv)
            zz = Z * Z % p
            h = x2 * zz % p - X
            r = y2 * zz % p * Z % p - Y
            if h:
                hh = h * h % p
                hhh = h * hh % p
                v = X * hh % p
                X3 = (r * r - hhh - v - v) % p
                Y = (r * (v - X3) - Y * hhh) % p
                Z = Z * h % p
                X = X3
            elif r:
                Z = 0  # P + (-P)
            else:
                X, Y, Z = _double(X, Y, Z)
    return X, Y, Z


def verify_point(Q, msg, sig):
    """True when sig (64 bytes r || s) is a valid ES256 signature of msg, Q = decode_point(pub).
    msg may be a tuple of buffers: the message in pieces, hashed in order, never joined."""
    global _base_table
    parts = msg if type(msg) is tuple else (msg,)
    if (Q is None or not isinstance(sig, (bytes, bytearray)) or len(sig) != 64
            or not all(isinstance(p, (bytes, bytearray, memoryview)) for p in parts)):
        return False
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    if not (0 < r < N and 0 < s < N):
        return False
    h = sha256()
    for p in parts:
        h.update(p)
    e = int.from_bytes(h.digest(), "big")
    w = comb.inv(s, N)
    u1 = e * w % N
    u2 = r * w % N
    if _base_table is None:
        _base_table = _comb_table(_GX, _GY)
    if Q.table is None:
        Q.table = _comb_table(Q.x, Q.y)
    # the combs want odd scalars; G and Q have odd order n, so u + n serves for an even u
    if not u1 & 1:
        u1 += N
    if not u2 & 1:
        u2 += N
    X, Y, Z = _double_comb(Q.table, u2, _base_table, u1)
    if Z == 0:
        return False
    # x(R) mod n == r, with x(R) = X / Z^2 in [0, p) and p < 2n: x(R) is r or r + n
    zz = Z * Z % P
    if (r * zz - X) % P == 0:
        return True
    return r + N < P and ((r + N) * zz - X) % P == 0


def verify(pub, msg, sig):
    """One-shot verify: decodes pub each time (callers verifying often should cache the point)."""
    return verify_point(decode_point(pub), msg, sig)
