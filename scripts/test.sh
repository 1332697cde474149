#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this) and as a developer runs it:
#   formatting and lint gates, the Python venv for the real-client tests (Telethon),
#   then every Rust test -- unit, end-to-end and real-client -- inside a fresh network
#   namespace that has only `lo`, so no test can reach anything but loopback.
# Every step runs even when an earlier one failed (a build failure stops it); the last line
# is the overall count over all steps: `total: N passed, M failed`, and the exit status is
# non-zero when anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

SHARED="${MTPROXY_SHARED:-$PWD/../shared}"
if [ -f "$SHARED/interop/run_e2e.py" ]; then
  echo "external cross-check: $SHARED/interop (runs last)"
else
  echo "external cross-check: SKIPPED, no $SHARED/interop/run_e2e.py (set MTPROXY_SHARED)"
fi

PASSED=0 FAILED=0
LOG="$(mktemp -d /tmp/mtproxy-test-log.XXXXXX)"
trap 'rm -rf "$LOG"' EXIT
# `tally NAME CMD…`: runs CMD with its output shown and kept, then adds its counts to the
# totals: the sum of cargo's `test result:` lines, else the last `N passed, M failed` line,
# else 1 passed or failed by exit status. A command that failed with nothing counted as
# failed adds one failure.
tally() {
  local name=$1 out="$LOG/$1.txt" rc=0 p=0 f=0
  shift
  "$@" 2>&1 | tee "$out" || rc=$?
  if grep -qE '^test result: ' "$out"; then
    p=$(sed -nE 's/^test result: .* ([0-9]+) passed; ([0-9]+) failed.*/\1/p' "$out" | awk '{s+=$1} END {print s+0}')
    f=$(sed -nE 's/^test result: .* ([0-9]+) passed; ([0-9]+) failed.*/\2/p' "$out" | awk '{s+=$1} END {print s+0}')
  elif line=$(grep -E '(^|: )[0-9]+ passed, [0-9]+ failed' "$out" | tail -1); [ -n "$line" ]; then
    p=$(sed -E 's/.*(^|: )([0-9]+) passed, ([0-9]+) failed.*/\2/' <<<"$line")
    f=$(sed -E 's/.*(^|: )([0-9]+) passed, ([0-9]+) failed.*/\3/' <<<"$line")
  elif [ "$rc" = 0 ]; then
    p=1
  fi
  if [ "$rc" != 0 ] && [ "$f" = 0 ]; then
    f=1
  fi
  echo "-- $name: $p passed, $f failed"
  PASSED=$((PASSED + p)) FAILED=$((FAILED + f))
}

step "format and lint"
tally fmt cargo fmt --all -- --check
tally clippy cargo clippy --workspace --all-targets -- -D warnings

step "python venv for real-client tests (Telethon, pinned)"
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
VENV="$TARGET/test-venv"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/telethon/requirements.txt

step "openssl (s_server is the real site of the fake-TLS mirror tests)"
if ! command -v openssl >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq openssl
  else
    echo "the openssl command is missing: install the openssl package" >&2
    exit 1
  fi
fi

step "build"
cargo build --workspace --release --bins
cargo test --workspace --no-run --quiet

# Run a command in a fresh network namespace with only loopback up. Root (CI) gets the
# isolation; elsewhere the tests still only use loopback, and we say so.
isolated() {
  if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && unshare -n true 2>/dev/null; then
    unshare -n -- bash -c '
      set -e
      ip link set lo up
      links=$(ip -o link show | awk -F": " "{print \$2}" | tr "\n" " ")
      [ "$links" = "lo " ] || { echo "network namespace has more than lo: $links" >&2; exit 1; }
      echo "(isolated network namespace: only lo)"
      exec "$@"' bash "$@"
  else
    echo "(not root or no unshare: running without network isolation; tests use loopback only)"
    "$@"
  fi
}

step "fuzz: every parser, 5 s per target (scripts/fuzz.sh SECONDS for longer runs)"
tally fuzz scripts/fuzz.sh 5

step "docker/run.sh (container entry point)"
tally docker-run-sh bash tests/docker/test_run_sh.sh
tally docker-run-sh-real isolated bash tests/docker/test_run_sh_real.sh "$TARGET/release/mtproto-proxy"

BIN_SOAK="$TARGET/release/mtproto-proxy"

step "tests (unit, end-to-end, real client)"
export MTPROXY_TEST_PYTHON="$VENV/bin/python"
tally cargo-test isolated cargo test --workspace --offline -- --include-ignored

step "drill repeated: the same verdict every run (ours -> ours, 3 short runs; 20 against C with MTPROXY_REFERENCE_BIN)"
tally drill-repeat isolated scripts/drill-repeat.sh

step "soak (short): sessions with mixed traffic and churn, fds and RSS flat"
tally soak isolated "$TARGET/release/mtproxy-soak" --proxy-bin "$BIN_SOAK" --sessions 2000 --duration 30 --sample 3

# The shared interop harness: a Python fake ME verified against the C proxy.
if [ -f "$SHARED/interop/run_e2e.py" ]; then
  step "interop with the fake ME verified against C ($SHARED/interop)"
  BIN="$TARGET/release/mtproto-proxy"
  tally interop isolated "$VENV/bin/python" "$SHARED/interop/run_e2e.py" --proxy-bin "$BIN"
  tally interop-secret-file isolated "$VENV/bin/python" "$SHARED/interop/run_e2e.py" --proxy-bin "$BIN" --secret-file-mode
  tally interop-tls isolated "$VENV/bin/python" "$SHARED/interop/run_e2e.py" --proxy-bin "$BIN" --tls
else
  step "interop: SKIPPED (no $SHARED/interop/run_e2e.py)"
fi

echo
echo "total: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
