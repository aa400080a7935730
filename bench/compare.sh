#!/usr/bin/env bash
# bench/compare.sh: texstream next to the loopback TCP ceiling (iperf3, one stream),
# the same frames over a bare TCP connection (`texstream bench --raw-tcp`: no protocol,
# no copy, no checksum) and GStreamer raw video, on this machine, in one go; prints two
# Markdown tables: throughput, and latency at 60 fps (1080p) against the bare floor.
#
# Install the tools first (Debian/Ubuntu):
#   apt-get install iperf3 python3 gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
# GStreamer is optional (skipped with a note when gst-launch-1.0 is missing); iperf3,
# python3 and cargo are required. Everything runs on loopback (127.0.0.1) only.
#
# Usage: bench/compare.sh            (from anywhere inside the repository)
# Environment: BENCH_SECS (seconds per texstream and iperf3 run, default 5),
#              BENCH_LATENCY_SECS (seconds of each 60 fps latency run, default 10),
#              BENCH_PORT (first loopback port to use, default 5201),
#              TEXSTREAM_BIN (a texstream binary to use instead of building one).
set -euo pipefail

cd "$(dirname "$0")/.."
secs="${BENCH_SECS:-5}"
latency_secs="${BENCH_LATENCY_SECS:-10}"
port="${BENCH_PORT:-5201}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

need() {
    command -v "$1" >/dev/null 2>&1 || {
        echo "compare.sh: $1 is not installed (see the install line at the top of this script)" >&2
        exit 1
    }
}
need iperf3
need python3

if [[ -n "${TEXSTREAM_BIN:-}" ]]; then
    bin="$TEXSTREAM_BIN"
else
    echo "compare.sh: cargo build --release" >&2
    cargo build --release >&2
    bin="target/release/texstream"
fi

rows="$tmp/rows"
: >"$rows"
row() { # program, size, Gb/s, fps
    echo "$1|$2|$3|$4" >>"$rows"
}

# 1. iperf3: one stream, 1 MiB writes, the ceiling for one TCP stream.
echo "compare.sh: iperf3, one stream, 1 MiB writes, ${secs} s" >&2
iperf3 -s -1 -B 127.0.0.1 -p "$port" >/dev/null 2>&1 &
iperf_pid=$!
sleep 0.5
iperf3 -c 127.0.0.1 -p "$port" -l 1M -t "$secs" -J >"$tmp/iperf.json"
wait "$iperf_pid" || true
iperf_gbps="$(python3 -c 'import json,sys
print("%.2f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 1e9))' "$tmp/iperf.json")"
row "iperf3, one stream, 1 MiB writes" "-" "$iperf_gbps" "-"

# 2. GStreamer raw video: videotestsrc ! tcpclientsink -> tcpserversrc ! rawvideoparse ! fakesink.
gst_note=""
if command -v gst-launch-1.0 >/dev/null 2>&1; then
    for size in 1920x1080 3840x2160; do
        w="${size%x*}"
        h="${size#*x}"
        frames=$((w == 1920 ? 600 : 150))
        gport=$((port + 1))
        echo "compare.sh: GStreamer raw video ${size} RGBA, ${frames} frames" >&2
        gst-launch-1.0 -q tcpserversrc host=127.0.0.1 port="$gport" \
            ! rawvideoparse width="$w" height="$h" format=rgba framerate=0/1 \
            ! fakesink sync=false >/dev/null 2>&1 &
        recv_pid=$!
        sleep 1
        start="$(date +%s.%N)"
        gst-launch-1.0 -q videotestsrc num-buffers="$frames" pattern=solid-color \
            ! "video/x-raw,format=RGBA,width=$w,height=$h,framerate=0/1" \
            ! tcpclientsink host=127.0.0.1 port="$gport" sync=false >/dev/null 2>&1
        wait "$recv_pid" || true
        end="$(date +%s.%N)"
        read -r gbps fps < <(python3 -c 'import sys
w,h,n,t0,t1=int(sys.argv[1]),int(sys.argv[2]),int(sys.argv[3]),float(sys.argv[4]),float(sys.argv[5])
t=t1-t0
print("%.2f %.1f" % (w*h*4*n*8/t/1e9, n/t))' "$w" "$h" "$frames" "$start" "$end")
        row "GStreamer raw video (tcpclientsink -> tcpserversrc ! rawvideoparse)" "$size" "$gbps" "$fps"
    done
else
    gst_note="GStreamer: skipped, gst-launch-1.0 is not installed."
fi

json_field() { # file, python expression over the object `r`
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

# 3. The same frames over one bare TCP connection, back to back: the floor without any
#    protocol, copy or checksum.
for size in 1920x1080 3840x2160; do
    w="${size%x*}"
    h="${size#*x}"
    echo "compare.sh: texstream bench --raw-tcp ${size} RGBA, ${secs} s" >&2
    "$bin" bench --raw-tcp --width "$w" --height "$h" --seconds "$secs" --json >"$tmp/raw.json"
    row "bare TCP, same frames (bench --raw-tcp: no protocol, copy or checksum)" "$size" \
        "$(json_field "$tmp/raw.json" '"%.2f" % r["gbps_per_viewer"]')" \
        "$(json_field "$tmp/raw.json" '"%.1f" % r["fps_per_viewer"]')"
done

# 4. texstream bench: the real sender and one viewer, separate processes, checksums on.
for size in 1920x1080 3840x2160; do
    w="${size%x*}"
    h="${size#*x}"
    echo "compare.sh: texstream bench ${size} RGBA, ${secs} s" >&2
    "$bin" bench --width "$w" --height "$h" --seconds "$secs" --json >"$tmp/ts.json"
    row "texstream bench (one viewer, checksums on)" "$size" \
        "$(json_field "$tmp/ts.json" '"%.2f" % r["gbps_per_viewer"]')" \
        "$(json_field "$tmp/ts.json" '"%.1f" % r["fps_per_viewer"]')"
done

# 5. Latency at 60 fps, 1080p: the bare connection, then texstream.
echo "compare.sh: latency at 60 fps, 1080p, ${latency_secs} s each" >&2
"$bin" bench --raw-tcp --fps 60 --seconds "$latency_secs" --json >"$tmp/raw60.json"
"$bin" bench --fps 60 --seconds "$latency_secs" --json >"$tmp/ts60.json"
latency_row() { # what, file, key
    json_field "$2" '"| '"$1"' | %.2f | %.2f | %.2f | %.2f |" % tuple(r["'"$3"'"][k] for k in ("p50", "p90", "p99", "max"))'
}

echo
echo "| program | frame (RGBA) | Gb/s | fps | ratio to iperf3 |"
echo "|---|---|---|---|---|"
while IFS='|' read -r program size gbps fps; do
    ratio="$(python3 -c 'import sys; print("%.2f" % (float(sys.argv[1]) / float(sys.argv[2])))' "$gbps" "$iperf_gbps")"
    echo "| $program | $size | $gbps | $fps | ${ratio}x |"
done <"$rows"
echo
echo "Latency at 60 fps, 1920x1080 RGBA, ${latency_secs} s, in ms:"
echo
echo "| path | p50 | p90 | p99 | max |"
echo "|---|---|---|---|---|"
latency_row "bare TCP (bench --raw-tcp): write starts → last byte read" "$tmp/raw60.json" latency_ms
latency_row "texstream: publish → whole frame verified at the viewer" "$tmp/ts60.json" latency_from_publish_ms
latency_row "texstream: capture (the sender's copy and hash start) → verified" "$tmp/ts60.json" latency_ms
if [[ -n "$gst_note" ]]; then
    echo
    echo "$gst_note"
fi
echo
echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
