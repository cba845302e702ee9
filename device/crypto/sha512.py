# SHA-512 (FIPS 180-4) in pure Python: MicroPython's hashlib has no sha512 and Ed25519 needs it.
# Two compression functions, one chosen at import. MicroPython on a 64-bit machine keeps small
# ints as tagged 62-bit values, so 64-bit words held as 32-bit halves never allocate: about 130 us
# a block on the unix port against 530 us for whole words. On 32-bit boards (31-bit small ints)
# the halves would be heap ints too and whole words, with fewer operations, should win; CPython
# allocates every int anyway and runs whole words 2.3x faster. Both engines are tested on both
# runtimes. The round code is unrolled and written out (generated once, kept as source).
import struct

from device.ports import runtime

_K = (
    0x428a2f98d728ae22, 0x7137449123ef65cd, 0xb5c0fbcfec4d3b2f, 0xe9b5dba58189dbbc,
    0x3956c25bf348b538, 0x59f111f1b605d019, 0x923f82a4af194f9b, 0xab1c5ed5da6d8118,
    0xd807aa98a3030242, 0x12835b0145706fbe, 0x243185be4ee4b28c, 0x550c7dc3d5ffb4e2,
    0x72be5d74f27b896f, 0x80deb1fe3b1696b1, 0x9bdc06a725c71235, 0xc19bf174cf692694,
    0xe49b69c19ef14ad2, 0xefbe4786384f25e3, 0x0fc19dc68b8cd5b5, 0x240ca1cc77ac9c65,
    0x2de92c6f592b0275, 0x4a7484aa6ea6e483, 0x5cb0a9dcbd41fbd4, 0x76f988da831153b5,
    0x983e5152ee66dfab, 0xa831c66d2db43210, 0xb00327c898fb213f, 0xbf597fc7beef0ee4,
    0xc6e00bf33da88fc2, 0xd5a79147930aa725, 0x06ca6351e003826f, 0x142929670a0e6e70,
    0x27b70a8546d22ffc, 0x2e1b21385c26c926, 0x4d2c6dfc5ac42aed, 0x53380d139d95b3df,
    0x650a73548baf63de, 0x766a0abb3c77b2a8, 0x81c2c92e47edaee6, 0x92722c851482353b,
    0xa2bfe8a14cf10364, 0xa81a664bbc423001, 0xc24b8b70d0f89791, 0xc76c51a30654be30,
    0xd192e819d6ef5218, 0xd69906245565a910, 0xf40e35855771202a, 0x106aa07032bbd1b8,
    0x19a4c116b8d2d0c8, 0x1e376c085141ab53, 0x2748774cdf8eeb99, 0x34b0bcb5e19b48a8,
    0x391c0cb3c5c95a63, 0x4ed8aa4ae3418acb, 0x5b9cca4f7763e373, 0x682e6ff3d6b2b8a3,
    0x748f82ee5defb2fc, 0x78a5636f43172f60, 0x84c87814a1f0ab72, 0x8cc702081a6439ec,
    0x90befffa23631e28, 0xa4506cebde82bde9, 0xbef9a3f7b2c67915, 0xc67178f2e372532b,
    0xca273eceea26619c, 0xd186b8c721c0c207, 0xeada7dd6cde0eb1e, 0xf57d4f7fee6ed178,
    0x06f067aa72176fba, 0x0a637dc5a2c898a6, 0x113f9804bef90dae, 0x1b710b35131c471b,
    0x28db77f523047d84, 0x32caab7b40c72493, 0x3c9ebe0a15c9bebc, 0x431d67c49c100d4c,
    0x4cc5d4becb3e42b6, 0x597f299cfc657e2a, 0x5fcb6fab3ad6faec, 0x6c44198c4a475817,
)

_IV = (
    0x6a09e667f3bcc908, 0xbb67ae8584caa73b, 0x3c6ef372fe94f82b, 0xa54ff53a5f1d36f1,
    0x510e527fade682d1, 0x9b05688c2b3e6c1f, 0x1f83d9abfb41bd6b, 0x5be0cd19137e2179,
)

_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF
_KH = tuple(k >> 32 for k in _K)
_KL = tuple(k & _M32 for k in _K)


def compress_halves(st, buf, off):
    """One 128-byte block at buf[off:]; st holds 16 32-bit halves (hi, lo per word). The
    message schedule runs in a circular window of 16 words (x0..x15) fused with the rounds,
    16 rounds per pass with the variables renamed instead of shifted."""
    M = _M32
    kh = _KH
    kl = _KL
    w = struct.unpack_from(">32I", buf, off)
    (x0h, x0l, x1h, x1l, x2h, x2l, x3h, x3l, x4h, x4l, x5h, x5l, x6h, x6l, x7h, x7l,
     x8h, x8l, x9h, x9l, x10h, x10l, x11h, x11l, x12h, x12l, x13h, x13l, x14h, x14l,
     x15h, x15l) = w
    ah, al, bh, bl, ch, cl, dh, dl, eh, el, fh, fl, gh, gl, hh, hl = st
    for i in range(0, 80, 16):
        if i:  # W[t] = W[t-16] + s0(W[t-15]) + W[t-7] + s1(W[t-2]), in place
            lo = (x0l + x9l + ((x1l >> 1) ^ (x1l >> 8) ^ (x1l >> 7)
                  ^ ((((x1h & 1) << 31) ^ (x1h << 24) ^ (x1h << 25)) & M))
                  + ((x14l >> 19) ^ (x14h >> 29) ^ (x14l >> 6)
                     ^ (((x14h << 13) ^ (x14l << 3) ^ (x14h << 26)) & M)))
            x0h = (x0h + x9h + (lo >> 32) + ((x1h >> 1) ^ (x1h >> 8) ^ (x1h >> 7)
                  ^ ((((x1l & 1) << 31) ^ (x1l << 24)) & M))
                  + ((x14h >> 19) ^ (x14l >> 29) ^ (x14h >> 6)
                     ^ (((x14l << 13) ^ (x14h << 3)) & M))) & M
            x0l = lo & M
        tl = hl + x0l + kl[i + 0] + (gl ^ (el & (fl ^ gl)))
        th = hh + x0h + kh[i + 0] + (gh ^ (eh & (fh ^ gh)))
        tl += (el >> 14) ^ (el >> 18) ^ (eh >> 9) ^ (((eh << 18) ^ (eh << 14) ^ (el << 23)) & M)
        th += (eh >> 14) ^ (eh >> 18) ^ (el >> 9) ^ (((el << 18) ^ (el << 14) ^ (eh << 23)) & M)
        dl += tl
        dh = (dh + th + (dl >> 32)) & M
        dl &= M
        tl += (al & bl) | (cl & (al | bl))
        th += (ah & bh) | (ch & (ah | bh))
        tl += (al >> 28) ^ (ah >> 2) ^ (ah >> 7) ^ (((ah << 4) ^ (al << 30) ^ (al << 25)) & M)
        th += (ah >> 28) ^ (al >> 2) ^ (al >> 7) ^ (((al << 4) ^ (ah << 30) ^ (ah << 25)) & M)
        hh = (th + (tl >> 32)) & M
        hl = tl & M
        if i:  # W[t] = W[t-16] + s0(W[t-15]) + W[t-7] + s1(W[t-2]), in place
            lo = (x1l + x10l + ((x2l >> 1) ^ (x2l >> 8) ^ (x2l >> 7)
                  ^ ((((x2h & 1) << 31) ^ (x2h << 24) ^ (x2h << 25)) & M))
                  + ((x15l >> 19) ^ (x15h >> 29) ^ (x15l >> 6)
                     ^ (((x15h << 13) ^ (x15l << 3) ^ (x15h << 26)) & M)))
            x1h = (x1h + x10h + (lo >> 32) + ((x2h >> 1) ^ (x2h >> 8) ^ (x2h >> 7)
                  ^ ((((x2l & 1) << 31) ^ (x2l << 24)) & M))
                  + ((x15h >> 19) ^ (x15l >> 29) ^ (x15h >> 6)
                     ^ (((x15l << 13) ^ (x15h << 3)) & M))) & M
            x1l = lo & M
        tl = gl + x1l + kl[i + 1] + (fl ^ (dl & (el ^ fl)))
        th = gh + x1h + kh[i + 1] + (fh ^ (dh & (eh ^ fh)))
        tl += (dl >> 14) ^ (dl >> 18) ^ (dh >> 9) ^ (((dh << 18) ^ (dh << 14) ^ (dl << 23)) & M)
        th += (dh >> 14) ^ (dh >> 18) ^ (dl >> 9) ^ (((dl << 18) ^ (dl << 14) ^ (dh << 23)) & M)
        cl += tl
        ch = (ch + th + (cl >> 32)) & M
        cl &= M
        tl += (hl & al) | (bl & (hl | al))
        th += (hh & ah) | (bh & (hh | ah))
        tl += (hl >> 28) ^ (hh >> 2) ^ (hh >> 7) ^ (((hh << 4) ^ (hl << 30) ^ (hl << 25)) & M)
        th += (hh >> 28) ^ (hl >> 2) ^ (hl >> 7) ^ (((hl << 4) ^ (hh << 30) ^ (hh << 25)) & M)
        gh = (th + (tl >> 32)) & M
        gl = tl & M
        if i:  # W[t] = W[t-16] + s0(W[t-15]) + W[t-7] + s1(W[t-2]), in place
            lo = (x2l + x11l + ((x3l >> 1) ^ (x3l >> 8) ^ (x3l >> 7)
                  ^ ((((x3h & 1) << 31) ^ (x3h << 24) ^ (x3h << 25)) & M))
                  + ((x0l >> 19) ^ (x0h >> 29) ^ (x0l >> 6)
                     ^ (((x0h << 13) ^ (x0l << 3) ^ (x0h << 26)) & M)))
            x2h = (x2h + x11h + (lo >> 32) + ((x3h >> 1) ^ (x3h >> 8) ^ (x3h >> 7)
                  ^ ((((x3l & 1) << 31) ^ (x3l << 24)) & M))
                  + ((x0h >> 19) ^ (x0l >> 29) ^ (x0h >> 6)
                     ^ (((x0l << 13) ^ (x0h << 3)) & M))) & M
            x2l = lo & M
        tl = fl + x2l + kl[i + 2] + (el ^ (cl & (dl ^ el)))
        th = fh + x2h + kh[i + 2] + (eh ^ (ch & (dh ^ eh)))
        tl += (cl >> 14) ^ (cl >> 18) ^ (ch >> 9) ^ (((ch << 18) ^ (ch << 14) ^ (cl << 23)) & M)
        th += (ch >> 14) ^ (ch >> 18) ^ (cl >> 9) ^ (((cl << 18) ^ (cl << 14) ^ (ch << 23)) & M)
        bl += tl
        bh = (bh + th + (bl >> 32)) & M
        bl &= M
        tl += (gl & hl) | (al & (gl | hl))
        th += (gh & hh) | (ah & (gh | hh))
        tl += (gl >> 28) ^ (gh >> 2) ^ (gh >> 7) ^ (((gh << 4) ^ (gl << 30) ^ (gl << 25)) & M)
        th += (gh >> 28) ^ (gl >> 2) ^ (gl >> 7) ^ (((gl << 4) ^ (gh << 30) ^ (gh << 25)) & M)
        fh = (th + (tl >> 32)) & M
        fl = tl & M
        if i:  # W[t] = W[t-16] + s0(W[t-15]) + W[t-7] + s1(W[t-2]), in place
            lo = (x3l + x12l + ((x4l >> 1) ^ (x4l >> 8) ^ (x4l >> 7)
                  ^ ((((x4h & 1) << 31) ^ (x4h << 24) ^ (x4h << 25)) & M))
                  + ((x1l >> 19) ^ (x1h >> 29) ^ (x1l >> 6)
                     ^ (((x1h << 13) ^ (x1l << 3) ^ (x1h << 26)) & M)))
            x3h = (x3h + x12h + (lo >> 32) + ((x4h >> 1) ^ (x4h >> 8) ^ (x4h >> 7)
                  ^ ((((x4l & 1) << 31) ^ (x4l << 24)) & M))
                  + ((x1h >> 19) ^ (x1l >> 29) ^ (x1h >> 6)
                     ^ (((x1l << 13) ^ (x1h << 3)) & M))) & M
            x3l = lo & M
        tl = el + x3l + kl[i + 3] + (dl ^ (bl & (cl ^ dl)))
        th = eh + x3h + kh[i + 3] + (dh ^ (bh & (ch ^ dh)))
        tl += (bl >> 14) ^ (bl >> 18) ^ (bh >> 9) ^ (((bh << 18) ^ (bh << 14) ^ (bl << 23)) & M)
        th += (bh >> 14) ^ (bh >> 18) ^ (bl >> 9) ^ (((bl << 18) ^ (bl << 14) ^ (bh << 23)) & M)
        al += tl
        ah = (ah + th + (al >> 32)) & M
        al &= M
        tl += (fl & gl) | (hl & (fl | gl))
        th += (fh & gh) | (hh & (fh | gh))
        tl += (fl >> 28) ^ (fh >> 2) ^ (fh >> 7) ^ (((fh << 4) ^ (fl << 30) ^ (fl << 25)) & M)
        th += (fh >> 28) ^ (fl >> 2) ^ (fl >> 7) ^ (((fl << 4) ^ (fh << 30) ^ (fh << 25)) & M)
        eh = (th + (tl >> 32)) & M
        el = tl & M
        if i:  # W[t] = W[t-16] + s0(W[t-15]) + W[t-7] + s1(W[t-2]), in place
            lo = (x4l + x13l + ((x5l >> 1) ^ (x5l >> 8) ^ (x5l >> 7)
                  ^ ((((x5h & 1) << 31) ^ (x5h << 24) ^ (x5h << 25)) & M))
                  + ((x2l >> 19) ^ (x2h >> 29) ^ (x2l >> 6)
                     ^ (((x2h << 13) ^ (x2l << 3) ^ (x2h << 26)) & M)))
            x4h = (x4h + x13h + (lo >> 32) + ((x5h >> 1) ^ (x5h >> 8) ^ (x5h >> 7)
                  ^ ((((x5l & 1) << 31) ^ (x5l << 24)) & M))
                  + ((x2h >> 19) ^ (x2l >> 29) ^ (x2h >> 6)
                     ^ (((x2l << 13) ^ (x2h << 3)) & M))) & M
            x4l = lo & M
        tl = dl + x4l + kl[i + 4] + (cl ^ (al & (bl ^ cl)))
        th = dh + x4h + kh[i + 4] + (ch ^ (ah & (bh ^ ch)))
        tl += (al >> 14) ^ (al >> 18) ^ (ah >> 9) ^ (((ah << 18) ^ (ah << 14) ^ (al << 23)) & M)
        th += (ah >> 14) ^ (ah >> 18) ^ (al >> 9) ^ (((al << 18) ^ (al << 14) ^ (ah << 23)) & M)
        hl += tl
        hh = (hh + th + (hl >> 32)) & M
        hl &= M
        tl += (el & fl) | (gl & (el | fl))
        th += (eh & fh) | (gh & (eh | fh))
        tl += (el >> 28) ^ (eh >> 2) ^ (eh >> 7) ^ (((eh << 4) ^ (el << 30) ^ (el << 25)) & M)
        th += (eh >> 28) ^ (el >> 2) ^ (el >> 7) ^ (((el << 4) ^ (eh << 30) ^ (eh << 25)) & M)
        dh = (th + (tl >> 32)) & M
        dl = tl & M
        if i:  # W[t] = W[t-16] + s0(W[t-15]) + W[t-7] + s1(W[t-2]), in place
            lo = (x5l + x14l + ((x6l >> 1) ^ (x6l >> 8) ^ (x6l >> 7)
                  ^ ((((x6h & 1) << 31) ^ (x6h << 24) ^ (x6h << 25)) & M))
                  + ((x3l >> 19) ^ (x3h >> 29) ^ (x3l >> 6)
                     ^ (((x3h << 13) ^ (x3l << 3) ^ (x3h << 26)) & M)))
            x5h = (x5h + x14h + (lo >> 32) + ((x6h >> 1) ^ (x6h >> 8) ^ (x6h >> 7)
                  ^ ((((x6l & 1) << 31) ^ (x6l << 24)) & M))
                  + ((x3h >> 19) ^ (x3l >> 29) ^ (x3h >> 6)
                     ^ (((x3l << 13) ^ (x3h << 3)) & M))) & M
            x5l = lo & M
        tl = cl + x5l + kl[i + 5] + (bl ^ (hl & (al ^ bl)))
        th = ch + x5h + kh[i + 5] + (bh ^ (hh & (ah ^ bh)))
        tl += (hl >> 14) ^ (hl >> 18) ^ (hh >> 9) ^ (((hh << 18) ^ (hh << 14) ^ (hl << 23)) & M)
        th += (hh >> 14) ^ (hh >> 18) ^ (hl >> 9) ^ (((hl << 18) ^ (hl << 14) ^ (hh << 23)) & M)
        gl += tl
        gh = (gh + th + (gl >> 32)) & M
        gl &= M
        tl += (dl & el) | (fl & (dl | el))
        th += (dh & eh) | (fh & (dh | eh))
        tl += (dl >> 28) ^ (dh >> 2) ^ (dh >> 7) ^ (((dh << 4) ^ (dl << 30) ^ (dl << 25)) & M)
        th += (dh >> 28) ^ (dl >> 2) ^ (dl >> 7) ^ (((dl << 4) ^ (dh << 30) ^ (dh << 25)) & M)
        ch = (th + (tl >> 32)) & M
        cl = tl & M
        if i:  # W[t] = W[t-16] + s0(W[t-15]) + W[t-7] + s1(W[t-2]), in place
            lo = (x6l + x15l + ((x7l >> 1) ^ (x7l >> 8) ^ (x7l >> 7)
                  ^ ((((x7h & 1) << 31) ^ (x7h << 24) ^ (x7h << 25)) & M))
                  + ((x4l >> 19) ^ (x4h >> 29) ^ (x4l >> 6)
                     ^ (((x4h << 13) ^ (x4l << 3) ^ (x4h << 26)) & M)))
            x6h = (x6h + x15h + (lo >> 32) + ((x7h >> 1) ^ (x7h >> 8) ^ (x7h >> 7)
                  ^ ((((x7l & 1) << 31) ^ (x7l << 24)) & M))
                  + ((x4h >> 19) ^ (x4l >> 29) ^ (x4h >> 6)
                     ^ (((x4l << 13) ^ (x4h << 3)) & M))) & M
            x6l = lo & M
        tl = bl + x6l + kl[i + 6] + (al ^ (gl & (hl ^ al)))
        th = bh + x6h + kh[i + 6] + (ah ^ (gh & (hh ^ ah)))
        tl += (gl >> 14) ^ (gl >> 18) ^ (gh >> 9) ^ (((gh << 18) ^ (gh << 14) ^ (gl << 23)) & M)
        th += (gh >> 14) ^ (gh >> 18) ^ (gl >> 9) ^ (((gl << 18) ^ (gl << 14) ^ (gh << 23)) & M)
        fl += tl
        fh = (fh + th + (fl >> 32)) & M
        fl &= M
        tl += (cl & dl) | (el & (cl | dl))
        th += (ch & dh) | (eh & (ch | dh))
        tl += (cl >> 28) ^ (ch >> 2) ^ (ch >> 7) ^ (((ch << 4) ^ (cl << 30) ^ (cl << 25)) & M)
        th += (ch >> 28) ^ (cl >> 2) ^ (cl >> 7) ^ (((cl << 4) ^ (ch << 30) ^ (ch << 25)) & M)
        bh = (th + (tl >> 32)) & M
        bl = tl & M
        if i:  # W[t] = W[t-16] + s0(W[t-15]) + W[t-7] + s1(W[t-2]), in place
            lo = (x7l + x0l + ((x8l >> 1) ^ (x8l >> 8) ^ (x8l >> 7)
                  ^ ((((x8h & 1) << 31) ^ (x8h << 24) ^ (x8h << 25)) & M))
                  + ((x5l >> 19) ^ (x5h >> 29) ^ (x5l >> 6)
                     ^ (((x5h << 13) ^ (x5l << 3) ^ (x5h << 26)) & M)))
            x7h = (x7h + x0h + (lo >> 32) + ((x8h >> 1) ^ (x8h >> 8) ^ (x8h >> 7)
                  ^ ((((x8l & 1) << 31) ^ (x8l << 24)) & M))
                  + ((x5h >> 19) ^ (x5l >> 29) ^ (x5h >> 6)
                     ^ (((x5l << 13) ^ (x5h << 3)) & M))) & M
            x7l = lo & M
        tl = al + x7l + kl[i + 7] + (hl ^ (fl & (gl ^ hl)))
        th = ah + x7h + kh[i + 7] + (hh ^ (fh & (gh ^ hh)))
        tl += (fl >> 14) ^ (fl >> 18) ^ (fh >> 9) ^ (((fh << 18) ^ (fh << 14) ^ (fl << 23)) & M)
        th += (fh >> 14) ^ (fh >> 18) ^ (fl >> 9) ^ (((fl << 18) ^ (fl << 14) ^ (fh << 23)) & M)
        el += tl
        eh = (eh + th + (el >> 32)) & M
        el &= M
        tl += (bl & cl) | (dl & (bl | cl))
        th += (bh & ch) | (dh & (bh | ch))
        tl += (bl >> 28) ^ (bh >> 2) ^ (bh >> 7) ^ (((bh << 4) ^ (bl << 30) ^ (bl << 25)) & M)
        th += (bh >> 28) ^ (bl >> 2) ^ (bl >> 7) ^ (((bl << 4) ^ (bh << 30) ^ (bh << 25)) & M)
        ah = (th + (tl >> 32)) & M
        al = tl & M
        if i:  # W[t] = W[t-16] + s0(W[t-15]) + W[t-7] + s1(W[t-2]), in place
            lo = (x8l + x1l + ((x9l >> 1) ^ (x9l >> 8) ^ (x9l >> 7)
                  ^ ((((x9h & 1) << 31) ^ (x9h << 24) ^ (x9h << 25)) & M))
                  + ((x6l >> 19) ^ (x6h >> 29) ^ (x6l >> 6)
                     ^ (((x6h << 13) ^ (x6l << 3) ^ (x6h << 26)) & M)))
            x8h = (x8h + x1h + (lo >> 32) + ((x9h >> 1) ^ (x9h >> 8) ^ (x9h >> 7)
                  ^ ((((x9l & 1) << 31) ^ (x9l << 24)) & M))
                  + ((x6h >> 19) ^ (x6l >> 29) ^ (x6h >> 6)
                     ^ (((x6l << 13) ^ (x6h << 3)) & M))) & M
            x8l = lo & M
        tl = hl + x8l + kl[i + 8] + (gl ^ (el & (fl ^ gl)))
        th = hh + x8h + kh[i + 8] + (gh ^ (eh & (fh ^ gh)))
        tl += (el >> 14) ^ (el >> 18) ^ (eh >> 9) ^ (((eh << 18) ^ (eh << 14) ^ (el << 23)) & M)
        th += (eh >> 14) ^ (eh >> 18) ^ (el >> 9) ^ (((el << 18) ^ (el << 14) ^ (eh << 23)) & M)
        dl += tl
        dh = (dh + th + (dl >> 32)) & M
        dl &= M
        tl += (al & bl) | (cl & (al | bl))
        th += (ah & bh) | (ch & (ah | bh))
        tl += (al >> 28) ^ (ah >> 2) ^ (ah >> 7) ^ (((ah << 4) ^ (al << 30) ^ (al << 25)) & M)
        th += (ah >> 28) ^ (al >> 2) ^ (al >> 7) ^ (((al << 4) ^ (ah << 30) ^ (ah << 25)) & M)
        hh = (th + (tl >> 32)) & M
        hl = tl & M
        if i:  # W[t] = W[t-16] + s0(W[t-15]) + W[t-7] + s1(W[t-2]), in place
            lo = (x9l + x2l + ((x10l >> 1) ^ (x10l >> 8) ^ (x10l >> 7)
                  ^ ((((x10h & 1) << 31) ^ (x10h << 24) ^ (x10h << 25)) & M))
                  + ((x7l >> 19) ^ (x7h >> 29) ^ (x7l >> 6)
                     ^ (((x7h << 13) ^ (x7l << 3) ^ (x7h << 26)) & M)))
            x9h = (x9h + x2h + (lo >> 32) + ((x10h >> 1) ^ (x10h >> 8) ^ (x10h >> 7)
                  ^ ((((x10l & 1) << 31) ^ (x10l << 24)) & M))
                  + ((x7h >> 19) ^ (x7l >> 29) ^ (x7h >> 6)
                     ^ (((x7l << 13) ^ (x7h << 3)) & M))) & M
            x9l = lo & M
        tl = gl + x9l + kl[i + 9] + (fl ^ (dl & (el ^ fl)))
        th = gh + x9h + kh[i + 9] + (fh ^ (dh & (eh ^ fh)))
        tl += (dl >> 14) ^ (dl >> 18) ^ (dh >> 9) ^ (((dh << 18) ^ (dh << 14) ^ (dl << 23)) & M)
        th += (dh >> 14) ^ (dh >> 18) ^ (dl >> 9) ^ (((dl << 18) ^ (dl << 14) ^ (dh << 23)) & M)
        cl += tl
        ch = (ch + th + (cl >> 32)) & M
        cl &= M
        tl += (hl & al) | (bl & (hl | al))
        th += (hh & ah) | (bh & (hh | ah))
        tl += (hl >> 28) ^ (hh >> 2) ^ (hh >> 7) ^ (((hh << 4) ^ (hl << 30) ^ (hl << 25)) & M)
        th += (hh >> 28) ^ (hl >> 2) ^ (hl >> 7) ^ (((hl << 4) ^ (hh << 30) ^ (hh << 25)) & M)
        gh = (th + (tl >> 32)) & M
        gl = tl & M
        if i:  # W[t] = W[t-16] + s0(W[t-15]) + W[t-7] + s1(W[t-2]), in place
            lo = (x10l + x3l + ((x11l >> 1) ^ (x11l >> 8) ^ (x11l >> 7)
                  ^ ((((x11h & 1) << 31) ^ (x11h << 24) ^ (x11h << 25)) & M))
                  + ((x8l >> 19) ^ (x8h >> 29) ^ (x8l >> 6)
                     ^ (((x8h << 13) ^ (x8l << 3) ^ (x8h << 26)) & M)))
            x10h = (x10h + x3h + (lo >> 32) + ((x11h >> 1) ^ (x11h >> 8) ^ (x11h >> 7)
                  ^ ((((x11l & 1) << 31) ^ (x11l << 24)) & M))
                  + ((x8h >> 19) ^ (x8l >> 29) ^ (x8h >> 6)
                     ^ (((x8l << 13) ^ (x8h << 3)) & M))) & M
            x10l = lo & M
        tl = fl + x10l + kl[i + 10] + (el ^ (cl & (dl ^ el)))
        th = fh + x10h + kh[i + 10] + (eh ^ (ch & (dh ^ eh)))
        tl += (cl >> 14) ^ (cl >> 18) ^ (ch >> 9) ^ (((ch << 18) ^ (ch << 14) ^ (cl << 23)) & M)
        th += (ch >> 14) ^ (ch >> 18) ^ (cl >> 9) ^ (((cl << 18) ^ (cl << 14) ^ (ch << 23)) & M)
        bl += tl
        bh = (bh + th + (bl >> 32)) & M
        bl &= M
        tl += (gl & hl) | (al & (gl | hl))
        th += (gh & hh) | (ah & (gh | hh))
        tl += (gl >> 28) ^ (gh >> 2) ^ (gh >> 7) ^ (((gh << 4) ^ (gl << 30) ^ (gl << 25)) & M)
        th += (gh >> 28) ^ (gl >> 2) ^ (gl >> 7) ^ (((gl << 4) ^ (gh << 30) ^ (gh << 25)) & M)
        fh = (th + (tl >> 32)) & M
        fl = tl & M
        if i:  # W[t] = W[t-16] + s0(W[t-15]) + W[t-7] + s1(W[t-2]), in place
            lo = (x11l + x4l + ((x12l >> 1) ^ (x12l >> 8) ^ (x12l >> 7)
                  ^ ((((x12h & 1) << 31) ^ (x12h << 24) ^ (x12h << 25)) & M))
                  + ((x9l >> 19) ^ (x9h >> 29) ^ (x9l >> 6)
                     ^ (((x9h << 13) ^ (x9l << 3) ^ (x9h << 26)) & M)))
            x11h = (x11h + x4h + (lo >> 32) + ((x12h >> 1) ^ (x12h >> 8) ^ (x12h >> 7)
                  ^ ((((x12l & 1) << 31) ^ (x12l << 24)) & M))
                  + ((x9h >> 19) ^ (x9l >> 29) ^ (x9h >> 6)
                     ^ (((x9l << 13) ^ (x9h << 3)) & M))) & M
            x11l = lo & M
        tl = el + x11l + kl[i + 11] + (dl ^ (bl & (cl ^ dl)))
        th = eh + x11h + kh[i + 11] + (dh ^ (bh & (ch ^ dh)))
        tl += (bl >> 14) ^ (bl >> 18) ^ (bh >> 9) ^ (((bh << 18) ^ (bh << 14) ^ (bl << 23)) & M)
        th += (bh >> 14) ^ (bh >> 18) ^ (bl >> 9) ^ (((bl << 18) ^ (bl << 14) ^ (bh << 23)) & M)
        al += tl
        ah = (ah + th + (al >> 32)) & M
        al &= M
        tl += (fl & gl) | (hl & (fl | gl))
        th += (fh & gh) | (hh & (fh | gh))
        tl += (fl >> 28) ^ (fh >> 2) ^ (fh >> 7) ^ (((fh << 4) ^ (fl << 30) ^ (fl << 25)) & M)
        th += (fh >> 28) ^ (fl >> 2) ^ (fl >> 7) ^ (((fl << 4) ^ (fh << 30) ^ (fh << 25)) & M)
        eh = (th + (tl >> 32)) & M
        el = tl & M
        if i:  # W[t] = W[t-16] + s0(W[t-15]) + W[t-7] + s1(W[t-2]), in place
            lo = (x12l + x5l + ((x13l >> 1) ^ (x13l >> 8) ^ (x13l >> 7)
                  ^ ((((x13h & 1) << 31) ^ (x13h << 24) ^ (x13h << 25)) & M))
                  + ((x10l >> 19) ^ (x10h >> 29) ^ (x10l >> 6)
                     ^ (((x10h << 13) ^ (x10l << 3) ^ (x10h << 26)) & M)))
            x12h = (x12h + x5h + (lo >> 32) + ((x13h >> 1) ^ (x13h >> 8) ^ (x13h >> 7)
                  ^ ((((x13l & 1) << 31) ^ (x13l << 24)) & M))
                  + ((x10h >> 19) ^ (x10l >> 29) ^ (x10h >> 6)
                     ^ (((x10l << 13) ^ (x10h << 3)) & M))) & M
            x12l = lo & M
        tl = dl + x12l + kl[i + 12] + (cl ^ (al & (bl ^ cl)))
        th = dh + x12h + kh[i + 12] + (ch ^ (ah & (bh ^ ch)))
        tl += (al >> 14) ^ (al >> 18) ^ (ah >> 9) ^ (((ah << 18) ^ (ah << 14) ^ (al << 23)) & M)
        th += (ah >> 14) ^ (ah >> 18) ^ (al >> 9) ^ (((al << 18) ^ (al << 14) ^ (ah << 23)) & M)
        hl += tl
        hh = (hh + th + (hl >> 32)) & M
        hl &= M
        tl += (el & fl) | (gl & (el | fl))
        th += (eh & fh) | (gh & (eh | fh))
        tl += (el >> 28) ^ (eh >> 2) ^ (eh >> 7) ^ (((eh << 4) ^ (el << 30) ^ (el << 25)) & M)
        th += (eh >> 28) ^ (el >> 2) ^ (el >> 7) ^ (((el << 4) ^ (eh << 30) ^ (eh << 25)) & M)
        dh = (th + (tl >> 32)) & M
        dl = tl & M
        if i:  # W[t] = W[t-16] + s0(W[t-15]) + W[t-7] + s1(W[t-2]), in place
            lo = (x13l + x6l + ((x14l >> 1) ^ (x14l >> 8) ^ (x14l >> 7)
                  ^ ((((x14h & 1) << 31) ^ (x14h << 24) ^ (x14h << 25)) & M))
                  + ((x11l >> 19) ^ (x11h >> 29) ^ (x11l >> 6)
                     ^ (((x11h << 13) ^ (x11l << 3) ^ (x11h << 26)) & M)))
            x13h = (x13h + x6h + (lo >> 32) + ((x14h >> 1) ^ (x14h >> 8) ^ (x14h >> 7)
                  ^ ((((x14l & 1) << 31) ^ (x14l << 24)) & M))
                  + ((x11h >> 19) ^ (x11l >> 29) ^ (x11h >> 6)
                     ^ (((x11l << 13) ^ (x11h << 3)) & M))) & M
            x13l = lo & M
        tl = cl + x13l + kl[i + 13] + (bl ^ (hl & (al ^ bl)))
        th = ch + x13h + kh[i + 13] + (bh ^ (hh & (ah ^ bh)))
        tl += (hl >> 14) ^ (hl >> 18) ^ (hh >> 9) ^ (((hh << 18) ^ (hh << 14) ^ (hl << 23)) & M)
        th += (hh >> 14) ^ (hh >> 18) ^ (hl >> 9) ^ (((hl << 18) ^ (hl << 14) ^ (hh << 23)) & M)
        gl += tl
        gh = (gh + th + (gl >> 32)) & M
        gl &= M
        tl += (dl & el) | (fl & (dl | el))
        th += (dh & eh) | (fh & (dh | eh))
        tl += (dl >> 28) ^ (dh >> 2) ^ (dh >> 7) ^ (((dh << 4) ^ (dl << 30) ^ (dl << 25)) & M)
        th += (dh >> 28) ^ (dl >> 2) ^ (dl >> 7) ^ (((dl << 4) ^ (dh << 30) ^ (dh << 25)) & M)
        ch = (th + (tl >> 32)) & M
        cl = tl & M
        if i:  # W[t] = W[t-16] + s0(W[t-15]) + W[t-7] + s1(W[t-2]), in place
            lo = (x14l + x7l + ((x15l >> 1) ^ (x15l >> 8) ^ (x15l >> 7)
                  ^ ((((x15h & 1) << 31) ^ (x15h << 24) ^ (x15h << 25)) & M))
                  + ((x12l >> 19) ^ (x12h >> 29) ^ (x12l >> 6)
                     ^ (((x12h << 13) ^ (x12l << 3) ^ (x12h << 26)) & M)))
            x14h = (x14h + x7h + (lo >> 32) + ((x15h >> 1) ^ (x15h >> 8) ^ (x15h >> 7)
                  ^ ((((x15l & 1) << 31) ^ (x15l << 24)) & M))
                  + ((x12h >> 19) ^ (x12l >> 29) ^ (x12h >> 6)
                     ^ (((x12l << 13) ^ (x12h << 3)) & M))) & M
            x14l = lo & M
        tl = bl + x14l + kl[i + 14] + (al ^ (gl & (hl ^ al)))
        th = bh + x14h + kh[i + 14] + (ah ^ (gh & (hh ^ ah)))
        tl += (gl >> 14) ^ (gl >> 18) ^ (gh >> 9) ^ (((gh << 18) ^ (gh << 14) ^ (gl << 23)) & M)
        th += (gh >> 14) ^ (gh >> 18) ^ (gl >> 9) ^ (((gl << 18) ^ (gl << 14) ^ (gh << 23)) & M)
        fl += tl
        fh = (fh + th + (fl >> 32)) & M
        fl &= M
        tl += (cl & dl) | (el & (cl | dl))
        th += (ch & dh) | (eh & (ch | dh))
        tl += (cl >> 28) ^ (ch >> 2) ^ (ch >> 7) ^ (((ch << 4) ^ (cl << 30) ^ (cl << 25)) & M)
        th += (ch >> 28) ^ (cl >> 2) ^ (cl >> 7) ^ (((cl << 4) ^ (ch << 30) ^ (ch << 25)) & M)
        bh = (th + (tl >> 32)) & M
        bl = tl & M
        if i:  # W[t] = W[t-16] + s0(W[t-15]) + W[t-7] + s1(W[t-2]), in place
            lo = (x15l + x8l + ((x0l >> 1) ^ (x0l >> 8) ^ (x0l >> 7)
                  ^ ((((x0h & 1) << 31) ^ (x0h << 24) ^ (x0h << 25)) & M))
                  + ((x13l >> 19) ^ (x13h >> 29) ^ (x13l >> 6)
                     ^ (((x13h << 13) ^ (x13l << 3) ^ (x13h << 26)) & M)))
            x15h = (x15h + x8h + (lo >> 32) + ((x0h >> 1) ^ (x0h >> 8) ^ (x0h >> 7)
                  ^ ((((x0l & 1) << 31) ^ (x0l << 24)) & M))
                  + ((x13h >> 19) ^ (x13l >> 29) ^ (x13h >> 6)
                     ^ (((x13l << 13) ^ (x13h << 3)) & M))) & M
            x15l = lo & M
        tl = al + x15l + kl[i + 15] + (hl ^ (fl & (gl ^ hl)))
        th = ah + x15h + kh[i + 15] + (hh ^ (fh & (gh ^ hh)))
        tl += (fl >> 14) ^ (fl >> 18) ^ (fh >> 9) ^ (((fh << 18) ^ (fh << 14) ^ (fl << 23)) & M)
        th += (fh >> 14) ^ (fh >> 18) ^ (fl >> 9) ^ (((fl << 18) ^ (fl << 14) ^ (fh << 23)) & M)
        el += tl
        eh = (eh + th + (el >> 32)) & M
        el &= M
        tl += (bl & cl) | (dl & (bl | cl))
        th += (bh & ch) | (dh & (bh | ch))
        tl += (bl >> 28) ^ (bh >> 2) ^ (bh >> 7) ^ (((bh << 4) ^ (bl << 30) ^ (bl << 25)) & M)
        th += (bh >> 28) ^ (bl >> 2) ^ (bl >> 7) ^ (((bl << 4) ^ (bh << 30) ^ (bh << 25)) & M)
        ah = (th + (tl >> 32)) & M
        al = tl & M
    for j, x in enumerate((ah, al, bh, bl, ch, cl, dh, dl, eh, el, fh, fl, gh, gl, hh, hl)):
        st[j] += x
    for j in range(0, 16, 2):
        st[j] = (st[j] + (st[j + 1] >> 32)) & M
        st[j + 1] &= M



def compress_words(st, buf, off):
    """One 128-byte block at buf[off:]; st holds 8 64-bit words."""
    M = _M64
    w = list(struct.unpack_from(">16Q", buf, off))
    for t in range(16, 80):
        x = w[t - 15]
        y = w[t - 2]
        w.append((w[t - 16] + w[t - 7]
                  + ((x >> 1) ^ (x >> 8) ^ (x >> 7) ^ (((x << 63) ^ (x << 56)) & M))
                  + ((y >> 19) ^ (y >> 61) ^ (y >> 6) ^ (((y << 45) ^ (y << 3)) & M))) & M)
    kw = [_K[j] + w[j] for j in range(80)]
    a, b, c, d, e, f, g, h = st
    for i in range(0, 80, 8):
        t = h + kw[i + 0] + (g ^ (e & (f ^ g)))
        t += (e >> 14) ^ (e >> 18) ^ (e >> 41) ^ (((e << 50) ^ (e << 46) ^ (e << 23)) & M)
        d = (d + t) & M
        t += (a & b) | (c & (a | b))
        t += (a >> 28) ^ (a >> 34) ^ (a >> 39) ^ (((a << 36) ^ (a << 30) ^ (a << 25)) & M)
        h = t & M
        t = g + kw[i + 1] + (f ^ (d & (e ^ f)))
        t += (d >> 14) ^ (d >> 18) ^ (d >> 41) ^ (((d << 50) ^ (d << 46) ^ (d << 23)) & M)
        c = (c + t) & M
        t += (h & a) | (b & (h | a))
        t += (h >> 28) ^ (h >> 34) ^ (h >> 39) ^ (((h << 36) ^ (h << 30) ^ (h << 25)) & M)
        g = t & M
        t = f + kw[i + 2] + (e ^ (c & (d ^ e)))
        t += (c >> 14) ^ (c >> 18) ^ (c >> 41) ^ (((c << 50) ^ (c << 46) ^ (c << 23)) & M)
        b = (b + t) & M
        t += (g & h) | (a & (g | h))
        t += (g >> 28) ^ (g >> 34) ^ (g >> 39) ^ (((g << 36) ^ (g << 30) ^ (g << 25)) & M)
        f = t & M
        t = e + kw[i + 3] + (d ^ (b & (c ^ d)))
        t += (b >> 14) ^ (b >> 18) ^ (b >> 41) ^ (((b << 50) ^ (b << 46) ^ (b << 23)) & M)
        a = (a + t) & M
        t += (f & g) | (h & (f | g))
        t += (f >> 28) ^ (f >> 34) ^ (f >> 39) ^ (((f << 36) ^ (f << 30) ^ (f << 25)) & M)
        e = t & M
        t = d + kw[i + 4] + (c ^ (a & (b ^ c)))
        t += (a >> 14) ^ (a >> 18) ^ (a >> 41) ^ (((a << 50) ^ (a << 46) ^ (a << 23)) & M)
        h = (h + t) & M
        t += (e & f) | (g & (e | f))
        t += (e >> 28) ^ (e >> 34) ^ (e >> 39) ^ (((e << 36) ^ (e << 30) ^ (e << 25)) & M)
        d = t & M
        t = c + kw[i + 5] + (b ^ (h & (a ^ b)))
        t += (h >> 14) ^ (h >> 18) ^ (h >> 41) ^ (((h << 50) ^ (h << 46) ^ (h << 23)) & M)
        g = (g + t) & M
        t += (d & e) | (f & (d | e))
        t += (d >> 28) ^ (d >> 34) ^ (d >> 39) ^ (((d << 36) ^ (d << 30) ^ (d << 25)) & M)
        c = t & M
        t = b + kw[i + 6] + (a ^ (g & (h ^ a)))
        t += (g >> 14) ^ (g >> 18) ^ (g >> 41) ^ (((g << 50) ^ (g << 46) ^ (g << 23)) & M)
        f = (f + t) & M
        t += (c & d) | (e & (c | d))
        t += (c >> 28) ^ (c >> 34) ^ (c >> 39) ^ (((c << 36) ^ (c << 30) ^ (c << 25)) & M)
        b = t & M
        t = a + kw[i + 7] + (h ^ (f & (g ^ h)))
        t += (f >> 14) ^ (f >> 18) ^ (f >> 41) ^ (((f << 50) ^ (f << 46) ^ (f << 23)) & M)
        e = (e + t) & M
        t += (b & c) | (d & (b | c))
        t += (b >> 28) ^ (b >> 34) ^ (b >> 39) ^ (((b << 36) ^ (b << 30) ^ (b << 25)) & M)
        a = t & M
    for j, x in enumerate((a, b, c, d, e, f, g, h)):
        st[j] = (st[j] + x) & M


def _state_halves():
    st = []
    for x in _IV:
        st.append(x >> 32)
        st.append(x & _M32)
    return st


def _state_words():
    return list(_IV)


# halves pay off only where small ints are tagged values wider than 32 bits (MicroPython on a
# 64-bit machine); CPython allocates every int anyway and runs whole words 2.3x faster
if runtime.WIDE_SMALL_INTS:
    _compress, _initial, _FMT = compress_halves, _state_halves, ">16I"
else:
    _compress, _initial, _FMT = compress_words, _state_words, ">8Q"


class sha512:
    """hashlib-like: sha512(data=b"") with update(), digest(), hexdigest()."""

    digest_size = 64
    block_size = 128

    def __init__(self, data=b"", _engine=None):
        self._compress, initial, self._fmt = _engine or (_compress, _initial, _FMT)
        self._st = initial()
        self._buf = b""
        self._n = 0
        if data:
            self.update(data)

    def update(self, data):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("sha512 wants bytes")
        n = len(data)
        self._n += n
        buf = self._buf
        if buf:
            take = 128 - len(buf)
            buf += bytes(data[:take])
            if len(buf) < 128:
                self._buf = buf
                return
            self._compress(self._st, buf, 0)
            data = memoryview(data)[take:]
            n -= take
        end = n - n % 128
        for off in range(0, end, 128):
            self._compress(self._st, data, off)
        self._buf = bytes(data[end:])

    def digest(self):
        n = self._n
        bits = struct.pack(">QQ", n >> 61, (n << 3) & _M64)
        tail = self._buf + b"\x80" + bytes((111 - n) % 128) + bits
        st = list(self._st)
        for off in range(0, len(tail), 128):
            self._compress(st, tail, off)
        return struct.pack(self._fmt, *st)

    def hexdigest(self):
        return "".join("%02x" % b for b in self.digest())


def engines():
    """Both compression engines, for tests that must cover the one not chosen here."""
    return ((compress_halves, _state_halves, ">16I"), (compress_words, _state_words, ">8Q"))
