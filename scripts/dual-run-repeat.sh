#!/usr/bin/env bash
# Runs `mtproxy-ctl dual-run` with its default guards N times in a row against a reference
# binary and prints one line per run (verdict, throughput and peak RSS of each mode) and a
# closing "N passed, M failed" line. Loopback only: as root, each run is inside its own
# network namespace with only `lo`.
#
#   MTPROXY_REFERENCE_BIN=/opt/c/mtproto-proxy scripts/dual-run-repeat.sh [N] [extra dual-run args]
#
# Without MTPROXY_REFERENCE_BIN the reference is our own binary (a check of the tool's
# repeatability, not of C compatibility).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-10}"
shift || true
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
CTL="$TARGET/release/mtproxy-ctl"
CAND="$TARGET/release/mtproto-proxy"
REF="${MTPROXY_REFERENCE_BIN:-$CAND}"
[ -x "$CTL" ] && [ -x "$CAND" ] || { echo "build first: cargo build --release --bins" >&2; exit 2; }
OUT="$(mktemp -d /tmp/mtproxy-dual-run-repeat.XXXXXX)"
trap 'rm -rf "$OUT"' EXIT

run() {
  if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
    unshare -n -- bash -c 'ip link set lo up; exec "$@"' bash "$@"
  else
    "$@"
  fi
}

echo "reference: $REF"
echo "candidate: $CAND"
pass=0 fail=0
for i in $(seq 1 "$N"); do
  rc=0
  run "$CTL" dual-run --reference "$REF" --candidate "$CAND" --report "$OUT/$i.json" "$@" \
    >"$OUT/$i.txt" 2>&1 || rc=$?
  line=$(python3 - "$OUT/$i.json" <<'PY' 2>/dev/null || echo "no report"
import json, sys
r = json.load(open(sys.argv[1]))
parts = []
for m in r.get("modes", []):
    if m.get("skipped"):
        continue
    ref, cand = m["reference"], m["candidate"]
    parts.append("%s %.0f/%.0f MB/s, %.2f/%.2f CPU s/GB, peak %.1f/%.1f MiB" % (
        m["mode"], ref["throughput_mb_s"], cand["throughput_mb_s"],
        ref["cpu_seconds_per_gb"], cand["cpu_seconds_per_gb"],
        ref["peak_rss_kb"] / 1024, cand["peak_rss_kb"] / 1024))
print("; ".join(parts) + "  (reference/candidate)")
PY
)
  verdict=$(grep -m1 '^verdict:' "$OUT/$i.txt" || echo "verdict: none (exit $rc)")
  printf 'run %2d: %s | %s\n' "$i" "$verdict" "$line"
  if [ "$rc" = 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); sed -n '/FAIL/p' "$OUT/$i.txt"; fi
done
echo "dual-run: $pass passed, $fail failed"
[ "$fail" = 0 ]
