#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ (cargo-fuzz + libFuzzer) for SECONDS each.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      SECONDS defaults to 10; all targets by default
#
# Installs cargo-fuzz when it is missing, builds all targets once, then runs each for
# SECONDS (-max_total_time) on its seeds (fuzz/corpus/<target>, from the spec vectors; see
# fuzz/make_seeds.py) plus the corpus grown by earlier runs (fuzz/work/corpus/<target>,
# not committed). Prints one line per target with libFuzzer's execution count, then
# "N passed, M failed"; exits 1 if any target crashed, timed out or ran out of memory.
# A crashing input is kept as fuzz/artifacts/<target>/crash-<sha1> (and printed in hex).
#
# Toolchain: the stable one. With the default FUZZ_SANITIZER=none cargo-fuzz passes only
# stable -C flags; RUSTC_BOOTSTRAP=1 is set so that FUZZ_SANITIZER=address (-Zsanitizer)
# works on stable too. Temp files of the targets that need the file system (secret_file,
# cli_argv) go to fuzz/work/tmp (TMPDIR), nowhere else.
#
# Env: FUZZ_SANITIZER (none|address, default none), FUZZ_TARGET_DIR (default fuzz/target),
#      FUZZ_ARGS (extra libFuzzer flags for every target, e.g. "-jobs=2 -workers=2").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
FUZZ=$ROOT/fuzz

usage() {
  echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2
  exit 2
}
SECS=10
if [ $# -gt 0 ]; then
  if ! [[ "$1" =~ ^[0-9]+$ ]] || [ "$1" -eq 0 ]; then usage; fi
  SECS=$1
  shift
fi

SAN=${FUZZ_SANITIZER:-none}
TARGET_DIR=${FUZZ_TARGET_DIR:-$FUZZ/target}
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
BIN=$TARGET_DIR/$TRIPLE/release
WORK=$FUZZ/work
export RUSTC_BOOTSTRAP=1
export TMPDIR=$WORK/tmp
mkdir -p "$WORK/tmp" "$WORK/logs"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install --locked cargo-fuzz --version 0.13.2
fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cd "$FUZZ" && cargo fuzz list)
fi
[ ${#targets[@]} -gt 0 ] || { echo "no fuzz targets found in $FUZZ" >&2; exit 1; }

t0=$(date +%s)
echo "== building ${#targets[@]} fuzz targets (sanitizer: $SAN, $TRIPLE)"
build() {
  (cd "$FUZZ" && cargo fuzz build --sanitizer "$SAN" --target "$TRIPLE" --target-dir "$TARGET_DIR" "$@")
}
if [ $# -gt 0 ]; then
  for t in "${targets[@]}"; do build "$t"; done
else
  build
fi
echo "== built in $(($(date +%s) - t0)) s; running each for $SECS s"

# Per-target libFuzzer flags.
extra_args() {
  case "$1" in
    tls_client_hello) echo "-max_len=8192" ;;
    tls_record | config_multi) echo "-max_len=8192" ;;
  esac
  if [ -f "$FUZZ/dict/$1.dict" ]; then echo "-dict=$FUZZ/dict/$1.dict"; fi
  return 0
}

passed=0
failed=0
for t in "${targets[@]}"; do
  if [ ! -x "$BIN/$t" ]; then
    echo "$t: FAILED: no binary $BIN/$t (not a target?)"
    failed=$((failed + 1))
    continue
  fi
  corpus=$WORK/corpus/$t
  seeds=$FUZZ/corpus/$t
  artifacts=$FUZZ/artifacts/$t
  log=$WORK/logs/$t.log
  mkdir -p "$corpus" "$seeds" "$artifacts"
  set +e
  # shellcheck disable=SC2046,SC2086
  "$BIN/$t" -artifact_prefix="$artifacts/" -max_total_time="$SECS" -print_final_stats=1 \
    -timeout=10 -rss_limit_mb=2048 $(extra_args "$t") ${FUZZ_ARGS:-} \
    "$corpus" "$seeds" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  if [ -z "$execs" ]; then
    execs=$({ grep -oE '^#[0-9]+' "$log" || true; } | tail -1 | tr -d '#')
  fi
  cov=$({ grep -oE '^#[0-9]+[[:space:]]+DONE .*cov: [0-9]+' "$log" || true; } | { grep -oE 'cov: [0-9]+' || true; } | tail -1)
  corp=$(find "$corpus" -type f | wc -l)
  if [ $rc -eq 0 ] && grep -qE '^#[0-9]+[[:space:]]+DONE' "$log"; then
    echo "$t: ok, ${execs:-?} executions in $SECS s (${cov:-cov: ?}, corpus $corp)"
    passed=$((passed + 1))
  else
    echo "$t: FAILED (exit $rc) after ${execs:-?} executions; log: $log"
    { grep -A2 'panicked at' "$log" | head -3
      grep -E '^==[0-9]+== ERROR|^SUMMARY|Test unit written to|out-of-memory' "$log"; } |
      sed 's/^/    /' || true
    unit=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    if [ -n "$unit" ] && [ -f "$unit" ]; then
      echo "    input ($(wc -c <"$unit") bytes, hex): $(head -c 2048 "$unit" | od -An -tx1 -v | tr -d ' \n')"
      echo "    reproduce: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer $SAN $t ${unit#"$FUZZ"/})"
      echo "    minimize:  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz tmin --sanitizer $SAN $t ${unit#"$FUZZ"/})"
    fi
    failed=$((failed + 1))
  fi
done

echo "fuzzing took $(($(date +%s) - t0)) s in total, build included"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
