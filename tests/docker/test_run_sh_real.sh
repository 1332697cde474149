#!/usr/bin/env bash
# docker/run.sh with the real proxy binary: the exact command line the image runs
# (-p 2398 --http-stats -H 443 -M 2 ... -u root ... --mtproto-secret-file ... -P <tag>)
# is accepted, the proxy serves /stats on 127.0.0.1:2398 and clients on 443, and SIGTERM to
# the container's first process stops it with status 0.
#
# curl, ip and sleep are stand-ins (canned config pointing at a closed loopback port, a
# random proxy secret, a documentation-range external IP). It runs in a network namespace of
# its own with only loopback (`unshare -n` as root, `unshare -rn` otherwise), so it binds
# nothing on the host and reaches nothing but loopback. Skipped when neither is possible.
#
# Usage: bash tests/docker/test_run_sh_real.sh [path/to/mtproto-proxy]
#   (default: $CARGO_TARGET_DIR or target, then /release/mtproto-proxy; build it first)
# Prints one line per check and `N passed, M failed`; exits 0 only if all passed.

set -u
cd "$(dirname "$0")/../.." || exit 2
BIN_REAL="${1:-${CARGO_TARGET_DIR:-$PWD/target}/release/mtproto-proxy}"
BIN_REAL="$(realpath -m "$BIN_REAL")"

if [ -z "${MTPROXY_RUN_SH_NETNS:-}" ]; then
	[ -x "$BIN_REAL" ] || { echo "no proxy binary at $BIN_REAL (cargo build --release --bin mtproto-proxy)" >&2; exit 2; }
	export MTPROXY_RUN_SH_NETNS=1
	if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
		exec unshare -n -- bash "$0" "$BIN_REAL"
	elif unshare -rn true 2>/dev/null; then
		exec unshare -rn -- bash "$0" "$BIN_REAL"
	fi
	echo "cannot create a network namespace (unshare -n / -rn): skipped"
	echo "0 passed, 0 failed, 1 skipped"
	exit 0
fi
ip link set lo up 2>/dev/null || { echo "cannot bring lo up in the namespace" >&2; exit 2; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/test_run_sh_real.XXXXXX")"
PID=
cleanup() {
	[ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null
	rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/bin" "$WORK/data" "$WORK/etc"

cat >"$WORK/bin/curl" <<'EOF'
#!/usr/bin/env bash
out= url=
while [ $# -gt 0 ]; do
	case $1 in -o) out=$2; shift 2 ;; -*) shift ;; *) url=$1; shift ;; esac
done
case $url in
https://core.telegram.org/getProxyConfig) printf 'default 2;\nproxy_for 2 127.0.0.1:9;\n' >"$out" ;;
https://core.telegram.org/getProxySecret) head -c 128 /dev/urandom >"$out" ;;
https://digitalresistance.dog/myIp) echo 203.0.113.7 ;;
*) echo "stub curl: refusing unknown URL '$url'" >&2; exit 6 ;;
esac
EOF
printf '#!/bin/sh\necho "8.8.8.8 via 10.0.0.1 dev eth0 src 10.0.0.5 uid 0"\n' >"$WORK/bin/ip"
printf '#!/bin/sh\n' >"$WORK/bin/sleep"
chmod +x "$WORK/bin"/*

PASSED=0
FAILED=0
check() {
	local name=$1
	shift
	if "$@"; then
		PASSED=$((PASSED + 1))
		echo "ok   - $name"
	else
		FAILED=$((FAILED + 1))
		echo "FAIL - $name"
		sed 's/^/       | /' "$WORK/log" | tail -15
	fi
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
alive() { kill -0 "$PID" 2>/dev/null; }

SECRET=0123456789abcdef0123456789abcdef
TAG=AAAABBBBCCCCDDDD0000111122223333
env -i PATH="$WORK/bin:/usr/bin:/bin" HOME="$WORK" MTPROXY_BIN="$BIN_REAL" \
	DATA_DIR="$WORK/data" ETC_DIR="$WORK/etc" SECRET="$SECRET" TAG="$TAG" \
	bash docker/run.sh >"$WORK/log" 2>&1 &
PID=$!

for _ in $(seq 100); do
	port_open 2398 && port_open 443 && break
	alive || break
	/bin/sleep 0.1
done
check "the proxy accepts run.sh's command line and keeps running" alive
check "the shell was replaced by the proxy (exec)" \
	[ "$(readlink "/proc/$PID/exe" 2>/dev/null)" = "$BIN_REAL" ]
check "client port 443 listening" port_open 443
stats=
if { exec 4<>/dev/tcp/127.0.0.1/2398; } 2>/dev/null; then
	printf 'GET /stats HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&4
	stats="$(timeout 5 cat <&4)"
	exec 4<&-
fi
check "/stats on 127.0.0.1:2398 answers 200" grep -q '^HTTP/1.[01] 200' <<<"$stats"
check "/stats: config_filename is the downloaded backend.conf" \
	grep -qP "^config_filename\t\Q$WORK/etc/backend.conf\E\r?$" <<<"$stats"
check "/stats: proxy_tag_set 1 (the -P tag was accepted)" grep -qP '^proxy_tag_set\t1\r?$' <<<"$stats"
kill -TERM "$PID" 2>/dev/null
wait "$PID"
RC=$?
PID=
check "SIGTERM: exit status 0" [ "$RC" = 0 ]

echo
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
