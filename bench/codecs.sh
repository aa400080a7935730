#!/usr/bin/env bash
# bench/codecs.sh: texstream's codecs over emulated links, each beside iperf3 and raw
# frames on the same link in the same run. For each netsim profile, each content and
# each codec: `texstream bench` with the sender in one network namespace and the viewer
# in the other (throughput at --fps max, and latency at --fps 60), plus iperf3 (one
# stream) on that link. Prints one Markdown table per profile.
#
# Needs root (network namespaces), iperf3, python3, and ../shared/tools/netsim.sh (or
# NETSIM=path). Traffic stays on the namespaces' own addresses.
#
# Usage: bench/codecs.sh [PROFILE...]       (default: 1g wifi)
# Environment: CONTENTS (default "screen photo pattern"), CODECS (default "raw tiles
#   auto"), SECS (seconds per run, default 5), SIZE (default 1920x1080),
#   TEXSTREAM_BIN (default target/release/texstream, built if missing), EXTRA (more
#   bench flags, e.g. "--content-file x.gif").
set -euo pipefail

cd "$(dirname "$0")/.."
netsim="${NETSIM:-../shared/tools/netsim.sh}"
contents="${CONTENTS:-screen photo pattern}"
codecs="${CODECS:-raw tiles auto}"
secs="${SECS:-5}"
size="${SIZE:-1920x1080}"
width="${size%x*}"
height="${size#*x}"
profiles=("$@")
((${#profiles[@]})) || profiles=(1g wifi)
bin="${TEXSTREAM_BIN:-target/release/texstream}"
[[ -x "$bin" ]] || cargo build --release >&2
bin="$(realpath "$bin")"
command -v iperf3 >/dev/null || { echo "codecs.sh: iperf3 is not installed" >&2; exit 1; }

# One profile: runs inside netsim.sh exec, with NETSIM_* set.
if [[ "${1:-}" == "--inside" ]]; then
    shift
    a="ip netns exec $NETSIM_NS_A"
    b="ip netns exec $NETSIM_NS_B"
    $a iperf3 -s -1 -B "$NETSIM_ADDR_A" -p 5201 >/dev/null 2>&1 &
    sleep 0.5
    iperf="$($b iperf3 -c "$NETSIM_ADDR_A" -p 5201 -t "$secs" -J |
        python3 -c 'import json,sys; print("%.3f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))')"
    wait || true
    echo "| iperf3, one stream | - | - | $iperf Gb/s | - | - | - | - | - | - |"
    for content in $contents; do
        for codec in $codecs; do
            run() {
                "$bin" bench --width "$width" --height "$height" --seconds "$secs" \
                    --content "$content" --codec "$codec" --listen "$NETSIM_ADDR_A:0" \
                    --sender-via "$a" --viewer-via "$b" --json ${EXTRA:-} "$@" 2>/dev/null ||
                    echo '{}'
            }
            max="$(run --fps max)"
            at60="$(run --fps 60)"
            python3 - "$content" "$codec" "$max" "$at60" <<'EOF'
import json, sys
content, codec, m, s = sys.argv[1], sys.argv[2], json.loads(sys.argv[3] or "{}"), json.loads(sys.argv[4] or "{}")
def g(r, *keys, fmt="%.1f"):
    for k in keys:
        if not isinstance(r, dict) or k not in r:
            return "-"
        r = r[k]
    return fmt % r if isinstance(r, (int, float)) else str(r)
def cores(r, side):
    try:
        return "%.2f" % (r[side]["cpu_secs"] / r["elapsed_secs"])
    except (KeyError, ZeroDivisionError):
        return "-"
wire = m.get("coding", {}).get("wire_share")
wire_gbps = "-" if wire is None else "%.3f" % (m["gbps_per_viewer"] * wire)
print("| %s | %s (%s) | %s | %s Gb/s | %s %% | %s | %s | %s / %s | %s / %s | %s |" % (
    content, codec, ",".join(m.get("coding", {}).get("links", [])) or "-",
    g(m, "fps_per_viewer"), wire_gbps,
    g(m, "coding", "wire_share", fmt="%.3f") if wire is None else "%.1f" % (wire * 100),
    g(m, "latency_ms", "p50"), g(s, "fps_per_viewer"), g(s, "latency_ms", "p50"),
    g(s, "latency_ms", "p99"),
    cores(s, "sender"), cores(s, "viewer"),
    "%d/%d" % (m.get("checksum_failures", -1) + s.get("checksum_failures", -1), m.get("protocol_errors", -1) + s.get("protocol_errors", -1)),
))
EOF
        done
    done
    exit 0
fi

for profile in "${profiles[@]}"; do
    echo
    echo "### $profile ($size, ${secs} s a run)"
    echo
    echo "| content | codec (link chose) | fps at max | on the wire | of raw | p50 ms at max | fps at 60 | p50 / p99 ms at 60 | cores at 60: sender / viewer | checksum / protocol errors |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    CONTENTS="$contents" CODECS="$codecs" SECS="$secs" SIZE="$size" TEXSTREAM_BIN="$bin" \
        "$netsim" exec "$profile" -- "$(realpath "$0")" --inside
done
