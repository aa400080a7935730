"""Receives a texstream stream into numpy and shows it with OpenCV, or matplotlib.

    texstream serve pattern &                          # a sender on 127.0.0.1:7878
    python python/examples/show_stream.py              # or --connect HOST:PORT, --source NAME

Needs OpenCV (`pip install opencv-python`) or matplotlib (`pip install matplotlib`);
`--print` shows only figures, with neither.
"""

import argparse
import sys

import texstream


def viewer(print_only):
    """A function that shows one (h, w, 4) RGBA frame and returns False once closed."""
    if print_only:
        return lambda frame: print(frame) is None
    try:
        import cv2

        def show(frame):
            bgr = cv2.cvtColor(frame.array, cv2.COLOR_RGBA2BGR)
            cv2.imshow("texstream", bgr)
            return cv2.waitKey(1) != 27 and cv2.getWindowProperty("texstream", 0) >= 0

        return show
    except ImportError:
        pass
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit(
            "show_stream.py needs OpenCV or matplotlib to show frames:\n"
            "  pip install opencv-python   # or: pip install matplotlib\n"
            "(or run it with --print to print the frames' figures only)"
        )
    plt.ion()
    image = None

    def show(frame):
        nonlocal image
        if image is None or image.get_array().shape != frame.array.shape:
            plt.clf()
            image = plt.imshow(frame.array)
            plt.axis("off")
        else:
            image.set_data(frame.array)
        plt.title(f"frame {frame.seq}, {frame.latency * 1e3:.1f} ms")
        plt.pause(0.001)
        return bool(plt.get_fignums())

    return show


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connect", help="the sender's HOST:PORT (default 127.0.0.1:7878)")
    p.add_argument("--listen", help="accept a sender that dials here instead")
    p.add_argument("--source", help="a sender announced on the LAN under this name")
    p.add_argument("--print", action="store_true", help="print each frame's figures instead")
    args = p.parse_args()
    show = viewer(args.print)
    with texstream.Receiver(connect=args.connect, listen=args.listen, source=args.source) as receiver:
        for frame in receiver:
            if not show(frame):
                break


if __name__ == "__main__":
    main()
