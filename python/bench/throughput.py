"""Throughput from Python: frames from a texstream.Sender to a texstream.Receiver in
another process over loopback TCP, beside `texstream bench` (the Rust sender and viewer)
run in the same invocation with the same frame size and duration.

    python python/bench/throughput.py --texstream target/release/texstream   # 1080p, 5 s each

Then the seed example's arrays: 1000x1000x3 float32 (RGB32F on the wire, 12 MB a frame),
Python to Python for as long.

Each frame is a `send(array)` of one pre-generated array (copied into a frame and hashed,
as `texstream bench` copies each frame from one source buffer), paced as `bench --fps
max` paces: a frame is published once the receiver's link took the previous one
(`send(wait=True)`). The receiver takes each frame as a new numpy array (`recv` takes the
newest; one it passes over is counted as skipped by the receiver). Gb/s is payload bits
(10^9) from the first frame's capture to the last frame's arrival.
"""

import argparse
import json
import multiprocessing
import subprocess
import time

import numpy as np

import texstream


def receive(addr, results):
    with texstream.Receiver(connect=addr) as receiver:
        receiver.wait_for_peers(timeout=20)
        results.put("ready")
        frames = nbytes = 0
        first_capture = last_arrival = None
        latencies = []
        while True:
            try:
                frame = receiver.recv(timeout=2)
            except texstream.Timeout:
                break
            last_arrival = time.time()
            if first_capture is None:
                first_capture = frame.capture_time
            frames += 1
            nbytes += frame.array.nbytes
            latencies.append(frame.latency)
        stats = receiver.stats()
    secs = (last_arrival - first_capture) if frames else float("nan")
    results.put(
        {
            "frames": frames,
            "gbps": nbytes * 8 / secs / 1e9 if frames else 0.0,
            "fps": frames / secs if frames else 0.0,
            "latency_p50_ms": float(np.median(latencies)) * 1e3 if frames else None,
            "frames_dropped": stats["frames_dropped"],
            "recv_skipped": stats["frames_skipped"],
            "checksum_failures": stats["checksum_failures"],
        }
    )


def python_run(array, seconds):
    results = multiprocessing.get_context("spawn").Queue()
    with texstream.Sender(listen="127.0.0.1:0") as sender:
        worker = multiprocessing.get_context("spawn").Process(
            target=receive, args=(sender.address, results)
        )
        worker.start()
        assert results.get(timeout=60) == "ready"
        sender.wait_for_peers(timeout=20)
        sent, until = 0, time.monotonic() + seconds
        while time.monotonic() < until:
            sender.send(array)
            sent += 1
        skipped = sum(p["frames_skipped"] for p in sender.peers())
        report = results.get(timeout=60)
        worker.join(30)
    report.update(sent=sent, frames_skipped=skipped)
    return report


def rust_run(binary, width, height, seconds):
    out = subprocess.run(
        [binary, "bench", "--width", str(width), "--height", str(height),
         "--seconds", str(seconds), "--json"],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--texstream", help="the texstream binary, for the Rust figure beside")
    p.add_argument("--width", type=int, default=1920)
    p.add_argument("--height", type=int, default=1080)
    p.add_argument("--seconds", type=float, default=5.0)
    args = p.parse_args()

    rgba = np.random.default_rng(1).integers(0, 256, (args.height, args.width, 4), dtype=np.uint8)
    py = python_run(rgba, args.seconds)
    print(f"python -> python {args.width}x{args.height} RGBA8: {summary(py)}")
    if args.texstream:
        rust = rust_run(args.texstream, args.width, args.height, args.seconds)
        print(f"texstream bench (Rust) {args.width}x{args.height} RGBA8: "
              f"{rust['gbps_per_viewer']:.2f} Gb/s, {rust['fps_per_viewer']:.1f} fps, "
              f"latency p50 {rust['latency_ms']['p50']:.2f} ms, {rust['frames_skipped']} skipped, "
              f"{rust['frames_dropped']} dropped, {rust['checksum_failures']} checksum failures")
        print(f"python / rust: {py['gbps'] / rust['gbps_per_viewer']:.2f}x")
    seed = np.random.default_rng(2).random((1000, 1000, 3), dtype=np.float32)
    print(f"python -> python 1000x1000x3 float32: {summary(python_run(seed, args.seconds))}")


def summary(py):
    return (f"{py['gbps']:.2f} Gb/s, {py['fps']:.1f} fps, latency p50 "
            f"{py['latency_p50_ms']:.2f} ms, {py['frames']} of {py['sent']} frames, "
            f"{py['frames_skipped']} skipped, {py['frames_dropped']} dropped, "
            f"{py['recv_skipped']} passed over by recv, "
            f"{py['checksum_failures']} checksum failures")


if __name__ == "__main__":
    main()
