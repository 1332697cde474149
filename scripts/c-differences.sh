#!/usr/bin/env bash
# The command lines where C and ours may differ, run side by side: for each, the exit code
# (or "runs" when the process is still up after 1.5 s; it is then stopped with SIGTERM) and
# the last line on stderr, C's line first. The evidence behind README's "Differences from C"
# (the /stats side is checked by crates/proxy/tests/fidelity.rs).
#
#   MTPROXY_REFERENCE_BIN=/path/to/c/mtproto-proxy scripts/c-differences.sh
#
# Run it as root inside a network namespace with only lo (`unshare -n`), as the test suite
# does: the proxies bind loopback ports 9101-9103 and a middle-end address that is never
# there (127.0.0.1:1).
set -uo pipefail
C="${MTPROXY_REFERENCE_BIN:?set MTPROXY_REFERENCE_BIN to the C mtproto-proxy}"
R="${MTPROXY_CANDIDATE_BIN:-${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target}/release/mtproto-proxy}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/c-differences.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
S=0123456789abcdef0123456789abcdef
head -c 128 /dev/urandom > secret
printf 'proxy_for 2 127.0.0.1:1;\ndefault 2;\n' > ok.conf
printf 'proxy_for 2 127.0.0.1:1\ndefault 2;\n' > bad.conf
B="-u root -c 1000 --aes-pwd secret"
run() {
  local name="$1"; shift
  for bin in $C $R; do
    rm -f out err
    timeout -s KILL 5 $bin "$@" >out 2>err & pid=$!
    local waited=0 rc=
    while [ $waited -lt 15 ]; do
      if ! kill -0 $pid 2>/dev/null; then wait $pid; rc=$?; break; fi
      sleep 0.1; waited=$((waited+1))
    done
    # Still up: stop it (the pid is the timeout wrapper's; it passes SIGTERM on).
    if [ -z "$rc" ]; then kill $pid; wait $pid 2>/dev/null; rc=runs; fi
    last=$(grep -v "^\s*$" err | grep -v "^	" | tail -1 | sed 's/^\[[0-9]*\]\[[^]]*\] //' | cut -c1-110)
    printf '%-34s %-4s %-5s %s\n' "$name" "$( [ $bin = $C ] && echo C || echo ours)" "$rc" "$last"
  done
}
S17=""; for i in $(seq 1 17); do S17="$S17 -S $S"; done
run "no arguments"
run "-h" -h
run "config only (no -S)" $B -H 9101 ok.conf
run "no config file (direct in ours)" -u root -c 1000 -S $S -H 9102
run "-S bad hex" $B -S zz23456789abcdef0123456789abcdef ok.conf
run "17 x -S" $B $S17 -H 9103 ok.conf
run "-H 70000" $B -S $S -H 70000 ok.conf
run "-M 300" $B -S $S -M 300 ok.conf
run "-p 70000 --http-stats" $B -S $S -p 70000 --http-stats ok.conf
run "-p 65536 --http-stats" $B -S $S -p 65536 --http-stats ok.conf
run "--http-stats without -p" $B -S $S --http-stats ok.conf
run "config file missing" $B -S $S nothere.conf
run "config syntax error" $B -S $S bad.conf
run "--aes-pwd missing" -u root -c 1000 --aes-pwd nothere -S $S ok.conf
run "-u nosuchuser" -u nosuchuser -c 1000 --aes-pwd secret -S $S ok.conf
run "-u twice" -u root -u root -c 1000 --aes-pwd secret -S $S ok.conf
run "root, no -u, no mtproxy user" -c 1000 --aes-pwd secret -S $S ok.conf
run "--address not an IPv4" $B -S $S --address x.y ok.conf
run "-D without -S" $B -D example.com ok.conf
run "-v3" $B -S $S -v3 ok.conf
run "unknown option" $B -S $S --frobnicate ok.conf
run "-c 100000 (root, hard limit lower)" -u root -c 100000 --aes-pwd secret -S $S ok.conf
run "--nat-info bad" $B -S $S --nat-info 1.2.3.4 ok.conf
run "-P without config" -u root -c 1000 -S $S -P $S
run "--cpu-threads 4" $B -S $S --cpu-threads 4 ok.conf
run "-l unwritable" $B -S $S -l /nonexistent/x.log ok.conf
