#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets into corpus/<target>/seed-*.

Every seed is a valid encoding from docs/PROTOCOL.md (the byte strings of
tests/protocol_golden.rs), so the fuzzers start from messages the decoder accepts.
Run from fuzz/: python3 seeds.py
"""
import os
import struct

PREAMBLE = b"TXSTRM" + struct.pack("<H", 1)


def msg(kind, body):
    return bytes([kind]) + struct.pack("<I", len(body)) + body


def str8(s):
    return bytes([len(s)]) + s


def str16(s):
    return struct.pack("<H", len(s)) + s


def hello(auth=b"", name=b"cam"):
    return msg(0x01, b"\x02" + struct.pack("<I", 6) + str8(name) + str16(auth)
               + struct.pack("<Q", 0x0102030405060708))


BODIES = {
    "hello": hello(auth=b"\xaa\xbb"),
    "goodbye": msg(0x02, b"\x02" + str16(b"bye")),
    "auth": msg(0x03, bytes(range(32))),
    "ping": msg(0x10, struct.pack("<QQ", 0x0102030405060708, 0x1122334455667788)),
    "pong": msg(0x11, struct.pack("<QQQ", 0x0102030405060708, 0x1122334455667788, 1234567890)),
    "frame-start": msg(0x20, struct.pack("<QIIBIQQQ", 7, 2, 3, 2, 12, 1000000, 36,
                                         0xdeadbeefcafef00d)),
    "frame-chunk": msg(0x21, struct.pack("<QQ", 7, 12) + b"\x01\x02\x03\x04"),
    "frame-abort": msg(0x22, struct.pack("<Q", 7)),
    "text": msg(0x30, struct.pack("<Q", 1234567890) + str8(b"ann") + "hé".encode()),
    "file-offer": msg(0x40, struct.pack("<QQ", 5, 70000) + str16(b"a.txt")),
    "file-accept": msg(0x41, struct.pack("<QQ", 5, 65536)),
    "file-chunk": msg(0x42, struct.pack("<QQ", 5, 65536) + b"\xff\x00\x7f"),
    "file-end": msg(0x43, struct.pack("<QQ", 5, 0x0123456789abcdef)),
    "file-result": msg(0x44, struct.pack("<QB", 5, 1) + str16(b"ok")),
    "file-cancel": msg(0x45, struct.pack("<Q", 5) + str16(b"stop")),
}


def write(target, name, data):
    os.makedirs(f"corpus/{target}", exist_ok=True)
    with open(f"corpus/{target}/seed-{name}", "wb") as f:
        f.write(data)


for name, wire in BODIES.items():
    write("decode", name, wire)
    write("decode_body", name, wire[:1] + wire[5:])  # kind code, then the body
write("decode", "all-kinds", b"".join(BODIES.values()))

write("handshake", "hello", PREAMBLE + hello())
write("handshake", "hello-nonce-proof", PREAMBLE + hello(auth=bytes(32)) + BODIES["auth"])
write("handshake", "goodbye", PREAMBLE + BODIES["goodbye"])
write("handshake", "ping", PREAMBLE + BODIES["ping"])
