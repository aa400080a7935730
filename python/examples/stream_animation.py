"""Streams a numpy animation (moving colour bands and a bouncing square) to a viewer.

    python python/examples/stream_animation.py            # then: texstream view --connect 7878
    python python/examples/stream_animation.py --connect 127.0.0.1:7879   # to `texstream view --listen 7879`
"""

import argparse
import time

import numpy as np

import texstream


def frame_at(t, height, width):
    """An RGBA8 frame: colour bands drifting sideways, a white square bouncing."""
    x = np.arange(width, dtype=np.float32)[None, :]
    y = np.arange(height, dtype=np.float32)[:, None]
    frame = np.empty((height, width, 4), np.uint8)
    frame[..., 0] = (127.5 + 127.5 * np.sin(x / 40 + t * 2)).astype(np.uint8)
    frame[..., 1] = (127.5 + 127.5 * np.sin(y / 30 - t * 3)).astype(np.uint8)
    frame[..., 2] = (127.5 + 127.5 * np.sin((x + y) / 50 + t)).astype(np.uint8)
    frame[..., 3] = 255
    side = min(height, width) // 6
    cx = int((width - side) * (0.5 + 0.5 * np.sin(t * 1.3)))
    cy = int((height - side) * abs(np.sin(t * 2.1)))
    frame[cy : cy + side, cx : cx + side, :3] = 255
    return frame


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", help="accept viewers here (default 127.0.0.1:7878)")
    p.add_argument("--connect", help="dial a viewer that listens here instead")
    p.add_argument("--size", default="640x360", help="WIDTHxHEIGHT")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--seconds", type=float, default=None, help="stop after this long")
    args = p.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    with texstream.Sender(listen=args.listen, connect=args.connect, name="numpy animation") as sender:
        print(f"streaming {width}x{height} at {args.fps} fps", f"on {sender.address}" if sender.address else "")
        start = time.monotonic()
        while args.seconds is None or time.monotonic() - start < args.seconds:
            t = time.monotonic() - start
            sender.send(frame_at(t, height, width), wait=False)
            time.sleep(max(0.0, 1 / args.fps - (time.monotonic() - start - t)))


if __name__ == "__main__":
    main()
