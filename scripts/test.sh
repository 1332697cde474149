#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this) and as a developer runs it:
#   formatting and lint gates, the Python venv for the real-client tests (Telethon),
#   then every Rust test -- unit, end-to-end and real-client -- inside a fresh network
#   namespace that has only `lo`, so no test can reach anything but loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "format and lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

step "python venv for real-client tests (Telethon, pinned)"
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
VENV="$TARGET/test-venv"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/telethon/requirements.txt

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
scripts/fuzz.sh 5

step "docker/run.sh (container entry point)"
bash tests/docker/test_run_sh.sh
isolated bash tests/docker/test_run_sh_real.sh "$TARGET/release/mtproto-proxy"

BIN_SOAK="$TARGET/release/mtproto-proxy"

step "tests (unit, end-to-end, real client)"
export MTPROXY_TEST_PYTHON="$VENV/bin/python"
isolated cargo test --workspace --offline -- --include-ignored

step "soak (short): sessions with mixed traffic and churn, fds and RSS flat"
isolated "$TARGET/release/mtproxy-soak" --proxy-bin "$BIN_SOAK" --sessions 2000 --duration 30 --sample 3

# The shared interop harness: a Python fake ME verified against the C proxy.
SHARED="${MTPROXY_SHARED:-$PWD/../shared}"
step "interop with the fake ME verified against C ($SHARED/interop)"
BIN="$TARGET/release/mtproto-proxy"
isolated "$VENV/bin/python" "$SHARED/interop/run_e2e.py" --proxy-bin "$BIN"
isolated "$VENV/bin/python" "$SHARED/interop/run_e2e.py" --proxy-bin "$BIN" --secret-file-mode
isolated "$VENV/bin/python" "$SHARED/interop/run_e2e.py" --proxy-bin "$BIN" --tls
