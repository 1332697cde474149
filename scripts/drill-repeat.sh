#!/usr/bin/env bash
# Runs `mtproxy-ctl drill` N times in a row and checks that the verdict is the same every
# time: every run passes, every step saw client sessions, and the outage figures are stable.
#
#   scripts/drill-repeat.sh [N]
#
# With MTPROXY_REFERENCE_BIN (the C mtproto-proxy): C -> ours -> ours -> C, 20 runs by
# default. Without it (CI): ours -> ours, 3 short runs (--steady 1). Binaries come from
# ${CARGO_TARGET_DIR:-target}/release; MTPROXY_CANDIDATE_BIN overrides ours. The reports
# (JSON and text) go to ${DRILL_OUT:-a temp dir}; the summary (one line per run, then the
# min / median / max outage of each step) goes to stdout. Exit 0 when every run passed and
# every step of every run had sessions > 0, else 1.
#
# Everything the drill starts is on 127.0.0.1; run it inside a network namespace with only
# lo (scripts/test.sh does) or on a machine where that is fine.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
CTL="$TARGET/release/mtproxy-ctl"
OURS="${MTPROXY_CANDIDATE_BIN:-$TARGET/release/mtproto-proxy}"
if [ -n "${MTPROXY_REFERENCE_BIN:-}" ]; then
  REF="$MTPROXY_REFERENCE_BIN"
  N="${1:-20}"
  EXTRA=()
else
  REF="$OURS"
  N="${1:-3}"
  EXTRA=(--steady 1)
fi
for f in "$CTL" "$OURS" "$REF"; do
  [ -x "$f" ] || { echo "drill-repeat: $f is not an executable (cargo build --release --bins)" >&2; exit 1; }
done
OUT="${DRILL_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/drill-repeat.XXXXXX")}"
mkdir -p "$OUT"

echo "drill x $N: reference $REF, candidate $OURS (reports in $OUT)"
failed=0
for i in $(seq 1 "$N"); do
  rc=0
  "$CTL" drill --reference "$REF" --candidate "$OURS" "${EXTRA[@]}" \
    --report "$OUT/drill-$i.json" >"$OUT/drill-$i.txt" 2>&1 || rc=$?
  if [ ! -s "$OUT/drill-$i.json" ]; then
    echo "run $i: exit $rc, no report"; tail -5 "$OUT/drill-$i.txt"; failed=1; continue
  fi
  line=$(jq -r --arg rc "$rc" '
    "exit \($rc) ok=\(.ok) " + ([.steps[] | "\(.name) \(.traffic.sessions)/\(.traffic.outage_ms)ms"] | join(", "))
  ' "$OUT/drill-$i.json")
  echo "run $i: $line"
  if [ "$rc" != 0 ] || ! jq -e '.ok and ([.steps[] | .traffic.sessions > 0] | all) and (.steps | length == 5)' \
      "$OUT/drill-$i.json" >/dev/null; then
    failed=1
    sed -n '/outages:/,/verdict/p' "$OUT/drill-$i.txt"
  fi
done

echo "outage ms per step over $N runs (min / median / max), sessions (min):"
jq -s -r '
  [.[].steps[]] as $all | ["start", "baseline", "cutover", "upgrade", "rollback"][] as $n |
  [$all[] | select(.name == $n)] | select(length > 0) |
  (map(.traffic.outage_ms) | sort) as $o | (map(.traffic.sessions) | min) as $s |
  "  \($n): \($o[0]) / \($o[($o | length) / 2 | floor]) / \($o[-1])   sessions >= \($s)"
' "$OUT"/drill-*.json
if [ "$failed" = 0 ]; then
  echo "drill-repeat: $N of $N passed, every step with sessions"
else
  echo "drill-repeat: FAILED (reports in $OUT)"
fi
exit "$failed"
