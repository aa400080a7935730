#!/usr/bin/env bash
# bench/linkcut.sh: a link cut for a few seconds under a coded stream. `serve pattern`
# (--codec, default auto) in one network namespace, `record` in the other, over a netsim
# profile (default wifi: loss and jitter); after CUT_AT seconds the link is blackholed
# both ways for CUT_SECS, then restored. Prints record's summary (checksum failures,
# protocol errors, reconnects) and the gap in saved frames around the cut: how long after
# the link came back the first frame arrived.
#
# Needs root, python3 and ../shared/tools/netsim.sh (or NETSIM=path).
# Usage: bench/linkcut.sh [PROFILE]
# Environment: CODEC (default auto), SIZE (default 1280x720), FPS (default 30),
#   CUT_AT (default 4), CUT_SECS (default 3), SECS (whole run, default 14),
#   TEXSTREAM_BIN (default target/release/texstream).
set -euo pipefail

cd "$(dirname "$0")/.."
netsim="${NETSIM:-../shared/tools/netsim.sh}"
profile="${1:-wifi}"
bin="$(realpath "${TEXSTREAM_BIN:-target/release/texstream}")"

if [[ "${1:-}" == "--inside" ]]; then
    out="$(mktemp -d)"
    ip netns exec "$NETSIM_NS_A" "$bin" serve pattern --size "${SIZE:-1280x720}" \
        --fps "${FPS:-30}" --codec "${CODEC:-auto}" --listen "$NETSIM_ADDR_A:7878" \
        --no-announce >/dev/null 2>&1 &
    sleep 1
    ip netns exec "$NETSIM_NS_B" "$bin" record --connect "$NETSIM_ADDR_A:7878" \
        --seconds "${SECS:-14}" --out "$out" >"$out/summary.json" 2>/dev/null &
    rec=$!
    sleep "${CUT_AT:-4}"
    cut_begin="$(date +%s.%N)"
    "$netsim" cut begin
    sleep "${CUT_SECS:-3}"
    "$netsim" cut end
    cut_end="$(date +%s.%N)"
    wait "$rec"
    python3 - "$out" "$cut_begin" "$cut_end" <<'EOF'
import json, os, sys
out, begin, end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
summary = json.loads(open(os.path.join(out, "summary.json")).read().strip().splitlines()[-1])
frames = sorted(os.path.getmtime(os.path.join(out, f)) for f in os.listdir(out) if f.endswith(".png"))
before = [t for t in frames if t < begin]
after = [t for t in frames if t >= end]
print("record:", json.dumps({k: summary.get(k) for k in
      ("frames_saved", "frames_received", "checksum_failures", "protocol_errors", "reconnects")}))
print("cut: %.2f s; saved frames during it: %d" % (end - begin, len([t for t in frames if begin <= t < end])))
if after:
    print("first frame saved %.2f s after the link came back" % (after[0] - end))
else:
    print("no frame saved after the link came back")
if before and after:
    print("gap in saved frames: %.2f s" % (after[0] - before[-1]))
EOF
    exit 0
fi

CODEC="${CODEC:-auto}" TEXSTREAM_BIN="$bin" "$netsim" exec "$profile" -- "$(realpath "$0")" --inside
