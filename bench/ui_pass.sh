#!/usr/bin/env bash
# The viewer window's UI time per pass while it shows a stream: `serve IMAGE` on
# loopback (from SERVE_BIN), a viewer window (from VIEW_BIN) under Xvfb with every pass
# logged at trace ("UI pass": the window's own work and eframe's whole pass), and
# p50/p99 of both over the run, the first WARMUP_SECS left out, with the frames shown
# per second. Two binaries, so that a viewer of one build can be fed by the serve of
# another (the serve's own CPU use then weighs the same on both).
#
#   bench/ui_pass.sh SERVE_BIN VIEW_BIN IMAGE [SECS]
#   FPS=30 WARMUP_SECS=5 SCREEN=2560x1440x24
set -euo pipefail
serve_bin=$1 view_bin=$2 image=$3 secs=${4:-30}
fps=${FPS:-30} warmup=${WARMUP_SECS:-5} screen=${SCREEN:-2560x1440x24}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log=$(mktemp)
no_announce=()
if "$serve_bin" serve --help | grep -q -- --no-announce; then no_announce=(--no-announce); fi
"$serve_bin" serve "$image" --fps "$fps" --listen "127.0.0.1:$port" "${no_announce[@]}" \
    --seconds $((secs + 15)) >/dev/null 2>&1 &
serve_pid=$!
trap 'kill $serve_pid 2>/dev/null || true; rm -f "$log"' EXIT
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
RUST_LOG=texstream=info,texstream::app=trace xvfb-run -a -s "-screen 0 $screen" \
    timeout -s INT "$secs" "$view_bin" view --connect "127.0.0.1:$port" 2>"$log" >/dev/null || true
python3 - "$log" "$warmup" <<'PY'
import math, re, sys
from datetime import datetime
path, warmup = sys.argv[1], float(sys.argv[2])
stamp = re.compile(r"^(\S+Z)")
app, whole, shown, t0, t_last = [], [], 0, None, None
for line in open(path, errors="replace"):
    m = stamp.match(re.sub(r"\x1b\[[0-9;]*m", "", line))
    if not m:
        continue
    t = datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()
    t0 = t if t0 is None else t0
    if t - t0 < warmup:
        continue
    t_last = t
    if "UI pass" in line:
        a = re.search(r"app_ms=Some\(([\d.]+)\)", line)
        w = re.search(r"whole_ms=Some\(([\d.]+)\)", line)
        if a: app.append(float(a.group(1)))
        if w: whole.append(float(w.group(1)))
    elif "frame shown" in line:
        shown += 1
def q(v, p):  # nearest rank
    v = sorted(v)
    return v[max(1, math.ceil(p * len(v))) - 1] if v else float("nan")
span = (t_last - t0 - warmup) if t_last else 0
print(f"passes {len(app)}, update p50 {q(app,.5):.2f} ms p99 {q(app,.99):.2f} ms, "
      f"whole pass p50 {q(whole,.5):.2f} ms p99 {q(whole,.99):.2f} ms, "
      f"frames shown {shown / span if span > 0 else 0:.1f}/s over {span:.0f} s")
PY
