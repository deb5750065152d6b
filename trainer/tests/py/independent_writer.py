#!/usr/bin/env python3
"""An independent writer of insightface RecordIO packs and verification .bin files.

Standard library only (struct, zlib, pickle), written from the format description, not from the
Rust code, so the Rust readers are checked against a second implementation.

usage: independent_writer.py OUT_DIR        writes meta.rec/.idx, shuffled.rec/.idx, pairs_p2.bin,
                                            pairs_p4.bin, shared_p2/4.bin, py2.bin and expected.txt
       independent_writer.py --read BIN     loads a .bin with pickle and prints "pairs same images"
"""
import os
import pickle
import struct
import sys
import zlib

MAGIC = 0xCED7230A


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def face_png(label, index, extra=b""):
    """A 112x112 RGB PNG whose pixels encode (x, y, label, index); `extra` goes into a private
    ancillary chunk placed right after IHDR (decoders skip it)."""
    rows = []
    for y in range(112):
        row = bytearray([0])
        for x in range(112):
            row += bytes([(x * 2) % 256, (y * 2) % 256, (label * 40 + index * 7) % 256])
        rows.append(bytes(row))
    ihdr = struct.pack(">IIBBBBB", 112, 112, 8, 2, 0, 0, 0)
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
    if extra:
        out += png_chunk(b"maGc", extra)
    return out + png_chunk(b"IDAT", zlib.compress(b"".join(rows))) + png_chunk(b"IEND", b"")


def with_magic_inside(label, index, header_len):
    """A PNG holding the RecordIO magic at a 4-byte-aligned offset of the logical record."""
    probe = face_png(label, index, b"x")
    chunk_data_at = header_len + 8 + 25 + 8  # signature, IHDR chunk, maGc length+type
    pad = (-chunk_data_at) % 4
    extra = b"p" * pad + struct.pack("<I", MAGIC) * 2 + b"tail"
    assert probe
    return face_png(label, index, extra)


def header(labels, ident):
    if len(labels) == 1:
        return struct.pack("<IfQQ", 0, float(labels[0]), ident, 0)
    return struct.pack("<IfQQ", len(labels), 0.0, ident, 0) + struct.pack("<%df" % len(labels), *labels)


def physical(record):
    """dmlc-core RecordIO: split at every 4-byte-aligned magic, dropping it."""
    magic = struct.pack("<I", MAGIC)
    parts, start = [], 0
    for i in range(0, len(record) - 3, 4):
        if record[i:i + 4] == magic:
            parts.append(record[start:i])
            start = i + 4
    parts.append(record[start:])
    out = b""
    for k, part in enumerate(parts):
        if len(parts) == 1:
            cflag = 0
        elif k == 0:
            cflag = 1
        elif k == len(parts) - 1:
            cflag = 3
        else:
            cflag = 2
        out += magic + struct.pack("<I", (cflag << 29) | len(part)) + part + b"\0" * ((-len(part)) % 4)
    return out


def write_pack(path, records):
    """records: list of (key, logical record bytes), written in the given order."""
    data, idx = b"", ""
    for key, rec in records:
        idx += "%d\t%d\n" % (key, len(data))
        data += physical(rec)
    with open(path + ".rec", "wb") as f:
        f.write(data)
    with open(path + ".idx", "w") as f:
        f.write(idx)
    return data


def main(out):
    os.makedirs(out, exist_ok=True)
    expected = []
    # Meta convention: 3 identities with 2, 1, 3 images; image 1 of identity 0 holds the magic.
    layout = [(0, 0), (0, 1), (1, 0), (2, 0), (2, 1), (2, 2)]
    records, key, ranges = [], 1, {}
    for label, index in layout:
        labels = [float(label), 1.0]
        hdr = header(labels, key)
        img = with_magic_inside(label, index, len(hdr)) if (label, index) == (0, 1) else face_png(label, index)
        records.append((key, hdr + img))
        ranges.setdefault(label, [key, key + 1])[1] = key + 1
        expected.append("meta %d %d %d" % (key - 1, label, index))
        key += 1
    a = key
    for label in sorted(ranges):
        records.append((key, header([float(ranges[label][0]), float(ranges[label][1])], key)))
        key += 1
    meta = (0, header([float(a), float(key)], 0))
    data = write_pack(os.path.join(out, "meta"), [meta] + records)
    assert data.count(struct.pack("<II", MAGIC, 1 << 29)[:4]) > len(records) + 1, "split happened"
    # Shuffled convention: key 0 is an ordinary image, scalar labels, keys out of order.
    shuffled = [(5, 1, 0), (0, 0, 3), (9, 2, 4), (2, 0, 5)]
    records = []
    for pos, (k, label, index) in enumerate(shuffled):
        records.append((k, header([float(label)], k) + face_png(label, index)))
        expected.append("shuffled %d %d %d" % (pos, label, index))
    write_pack(os.path.join(out, "shuffled"), records)
    # Verification pairs: (bins, issame) as Python 3 bytes under protocols 2 and 4.
    bins = [face_png(k // 2, k) for k in range(6)]
    issame = [True, False, True]
    for proto in (2, 4):
        with open(os.path.join(out, "pairs_p%d.bin" % proto), "wb") as f:
            pickle.dump((bins, issame), f, protocol=proto)
    # The same bytes object twice: pickle refers back to it through the memo (BINGET).
    same = face_png(0, 0)
    for proto in (2, 4):
        with open(os.path.join(out, "shared_p%d.bin" % proto), "wb") as f:
            pickle.dump(([same, face_png(1, 1), same, face_png(2, 2)], [False, False]), f, protocol=proto)
    # Python 2 style: str payloads as (SHORT_)BINSTRING, written opcode by opcode.
    p = b"\x80\x02]q\x00(" + b"".join(b"T" + struct.pack("<i", len(b)) + b for b in bins) + b"e]q\x01("
    p += b"".join(b"\x88" if s else b"\x89" for s in issame) + b"e\x86q\x02."
    with open(os.path.join(out, "py2.bin"), "wb") as f:
        f.write(p)
    expected += ["pair %d %d %d" % (k, k // 2, k) for k in range(6)]
    with open(os.path.join(out, "expected.txt"), "w") as f:
        f.write("\n".join(expected) + "\n")


if __name__ == "__main__":
    if sys.argv[1] == "--read":
        with open(sys.argv[2], "rb") as f:
            bins, issame = pickle.load(f)
        assert all(isinstance(b, bytes) for b in bins), "images must load as bytes"
        print(len(issame), sum(1 for s in issame if s), len(bins))
    else:
        main(sys.argv[1])
