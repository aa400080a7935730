#!/usr/bin/env python3
"""Writes a photo-like RGBA PNG for bench/ui_pass.sh: smooth shading in each channel
under luminance noise, the same pixels as `bench --content photo` (content.rs).

    python3 bench/photo_png.py WIDTH HEIGHT OUT.png
"""
import math, struct, sys, zlib

w, h, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
mask = (1 << 64) - 1
state = 0x2545_F491_4F6C_DD1D
rows = []
for y in range(h):
    fy = y / h
    row = bytearray(b"\0")  # filter: none
    for x in range(w):
        state ^= (state << 13) & mask
        state ^= state >> 7
        state ^= (state << 17) & mask
        noise = state % 13 - 6
        fx = x / w
        for b in (120.0 + 90.0 * math.sin(fx * 6.0 + fy * 2.0),
                  110.0 + 80.0 * math.cos(fy * 5.0 - fx * 3.0),
                  100.0 + 70.0 * math.sin(fx * 4.0 * fy + 1.0)):
            row.append(min(255, max(0, int(b) + noise)))
        row.append(255)
    rows.append(bytes(row))

def chunk(kind, data):
    c = struct.pack(">I", len(data)) + kind + data
    return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

with open(out, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n")
    f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)))
    f.write(chunk(b"IDAT", zlib.compress(b"".join(rows), 6)))
    f.write(chunk(b"IEND", b""))
