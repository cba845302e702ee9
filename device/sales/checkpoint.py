# The queue's checkpoint (docs/formats.md, "Checkpoint"): the queue's state in RAM as it was
# after the first `size` bytes of the journal, so a boot reads it and replays only the journal's
# tail instead of decoding every record. It is a cache: it counts only when the journal's first
# `size` bytes still have the CRC it names (any rewrite, damage or loss sends the boot back to
# a full replay of the journal), and it is written whole and atomically (temp file + rename).
#
#   file = "QCK1" | meta length u32 | meta (CBOR map) | entries | ledger rows | notices | crc32
#   meta = {"v": 1, "size", "crc", "kinds": [record names], "n", "m", "k", "next_n", "hs",
#           "since", "rids": bytes, "waiting": [[rec_off, ans_off]],
#           "hist": [[rec_off, ans_off, id, bad]]}
# entries are the n live pending-index entries (device/sales/pending.py) by pages of 50, each
# page's 16-byte entries followed by their 4-byte id prefixes; rows are m ledger rows
# (device/coupons/ledger.py); notices k x (id 16 | rec_off u32 | ans_off u32); crc32 covers
# every byte before it.
import binascii
import struct

from protocol import cbor

MAGIC = b"QCK1"
VERSION = 1


class CheckpointError(ValueError):
    pass


def chunks(meta, sections):
    """The file as chunks: sections are iterables of bytes, in the order of the format."""
    crc = binascii.crc32(MAGIC)
    yield MAGIC
    m = cbor.dumps(meta)
    head = struct.pack("<I", len(m)) + m
    crc = binascii.crc32(head, crc)
    yield head
    for section in sections:
        for c in section:
            crc = binascii.crc32(c, crc)
            yield c
    yield struct.pack("<I", crc)


class Reader:
    """Reads a checkpoint in order, keeping the running CRC; CheckpointError when short."""

    def __init__(self, f):
        self.f = f
        self.crc = 0

    def take(self, n):
        data = self.f.read(n)
        if data is None or len(data) != n:
            raise CheckpointError("checkpoint cut short")
        self.crc = binascii.crc32(data, self.crc)
        return data

    def take_into(self, buf, n):
        mv = memoryview(buf)[:n]
        got = self.f.readinto(mv)
        while got < n:  # a short read: rare, the rest in another piece
            k = self.f.readinto(mv[got:])
            if not k:
                raise CheckpointError("checkpoint cut short")
            got += k
        self.crc = binascii.crc32(mv, self.crc)

    def meta(self):
        if self.take(4) != MAGIC:
            raise CheckpointError("not a checkpoint")
        n = struct.unpack("<I", self.take(4))[0]
        if n > 1 << 20:
            raise CheckpointError("checkpoint meta too long")
        meta = cbor.loads(self.take(n))
        if type(meta) is not dict or meta.get("v") != VERSION:
            raise CheckpointError("unknown checkpoint version")
        return meta

    def finish(self):
        crc = self.crc & 0xFFFFFFFF
        tail = self.f.read(4)
        if tail is None or len(tail) != 4 or struct.unpack("<I", tail)[0] != crc:
            raise CheckpointError("checkpoint CRC mismatch")
        if self.f.read(1):
            raise CheckpointError("bytes after the checkpoint")
