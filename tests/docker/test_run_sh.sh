#!/usr/bin/env bash
# Tests of docker/run.sh, the container entry point (contract: shared spec backend-ops §6).
#
# run.sh runs for real, with stand-ins for everything it calls outside bash:
#   - the proxy: a script that records its argv (one argument a line) and its pid, then exits;
#   - curl: serves canned files by URL from the case's directory, or fails on demand; it
#     refuses (and logs) any URL it was not given, and never touches the network;
#   - ip: prints `8.8.8.8 via 10.0.0.1 dev eth0 src 10.0.0.5 uid 0`, or fails on demand;
#   - sleep: records its argument and returns at once.
# DATA_DIR and ETC_DIR point into a temporary directory. No root, no network.
#
# Usage (from anywhere): bash tests/docker/test_run_sh.sh
# Prints one line per check and `N passed, M failed`; exits 0 only if all passed.

# shellcheck disable=SC2016 # single-quoted $ on purpose: eval'd checks, literal source lines
set -u
cd "$(dirname "$0")/../.." || exit 2
# RUN_SH_UNDER_TEST: another copy of the script to test (used to check that the checks bite).
RUN_SH="${RUN_SH_UNDER_TEST:-$PWD/docker/run.sh}"
[ -f "$RUN_SH" ] || { echo "missing $RUN_SH" >&2; exit 2; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/test_run_sh.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
BIN="$WORK/bin"
mkdir -p "$BIN"

CONFIG_URL_REAL="https://core.telegram.org/getProxyConfig"
SECRET_URL_REAL="https://core.telegram.org/getProxySecret"
IP_URL_REAL="https://digitalresistance.dog/myIp"
EXT_IP="203.0.113.7"
INT_IP="10.0.0.5"
NAT="$INT_IP:$EXT_IP"

# ---- stand-ins -------------------------------------------------------------------------

cat >"$BIN/curl" <<'EOF'
#!/usr/bin/env bash
# Stand-in for curl. Knows only the URLs listed in $STUB_CASE/urls ("URL NAME" lines).
# For NAME it serves $STUB_CASE/serve/NAME; with $STUB_CASE/serve/NAME.status (an HTTP
# status >= 400) it fails with 22 under -f and serves the body otherwise, like curl; with no
# body file it fails like an unreachable host (exit 7, no output).
printf '%s\n' "$*" >>"$STUB_CASE/curl.log"
out= url= fail_on_http=0
while [ $# -gt 0 ]; do
	case $1 in
	-o) out=$2; shift 2 ;;
	-f) fail_on_http=1; shift ;;
	-s | -4) shift ;;
	-*) echo "stub curl: unexpected option $1" >&2; echo "option $1" >>"$STUB_CASE/curl.refused"; exit 2 ;;
	*) url=$1; shift ;;
	esac
done
name=
while read -r u n; do
	[ "$u" = "$url" ] && name=$n
done <"$STUB_CASE/urls"
if [ -z "$name" ]; then
	echo "stub curl: refusing unknown URL '$url'" >&2
	echo "$url" >>"$STUB_CASE/curl.refused"
	exit 6
fi
body="$STUB_CASE/serve/$name"
[ -f "$body" ] || exit 7
status=200
[ -f "$body.status" ] && status=$(cat "$body.status")
if [ "$status" -ge 400 ] && [ "$fail_on_http" = 1 ]; then
	exit 22
fi
if [ -n "$out" ]; then
	cat "$body" >"$out" || exit 23
else
	cat "$body"
fi
EOF

cat >"$BIN/ip" <<'EOF'
#!/usr/bin/env bash
# Stand-in for iproute2's ip. Mode from $STUB_CASE/ip.mode: ok (default), fail, nosrc.
printf '%s\n' "$*" >>"$STUB_CASE/ip.log"
if [ "$*" != "-4 route get 8.8.8.8" ]; then
	echo "stub ip: unexpected arguments: $*" >&2
	exit 1
fi
mode=ok
[ -f "$STUB_CASE/ip.mode" ] && mode=$(cat "$STUB_CASE/ip.mode")
case $mode in
ok) printf '8.8.8.8 via 10.0.0.1 dev eth0 src 10.0.0.5 uid 0 \n    cache \n' ;;
nosrc) printf '8.8.8.8 via 10.0.0.1 dev eth0 uid 0 \n    cache \n' ;;
*) echo "RTNETLINK answers: Network is unreachable" >&2; exit 2 ;;
esac
EOF

cat >"$BIN/sleep" <<'EOF'
#!/usr/bin/env bash
printf '%s\n' "$*" >>"$STUB_CASE/sleep.log"
EOF

cat >"$BIN/fake-proxy" <<'EOF'
#!/usr/bin/env bash
# Stand-in for /usr/local/bin/mtproto-proxy: records argv and pid, exits $FAKE_PROXY_EXIT.
printf '%s\n' "$@" >"$STUB_CASE/argv"
echo "$$" >"$STUB_CASE/proxy.pid"
exit "${FAKE_PROXY_EXIT:-0}"
EOF
chmod +x "$BIN"/*

# ---- helpers ---------------------------------------------------------------------------

PASSED=0
FAILED=0
C= # the current case's directory
RC=

hex32() { # hex32 N: a distinct 32-hex-digit secret
	printf '%032x' "$((0x1000 + $1))"
}
S1=0123456789abcdef0123456789abcdef
S2=fedcba9876543210fedcba9876543210
S3=00112233445566778899aabbccddeeff
S1U=0123456789ABCDEF0123456789ABCDEF
TAGL=aaaabbbbccccdddd0000111122223333
TAGU=AAAABBBBCCCCDDDD0000111122223333

# A fresh case: empty data dir, the proxy secret present, the three URLs served.
new_case() {
	C="$(mktemp -d "$WORK/case.XXXXXX")"
	mkdir -p "$C/data" "$C/etc" "$C/serve"
	: >"$C/curl.log"
	: >"$C/ip.log"
	printf '%s config\n%s proxy-secret\n%s myip\n' \
		"$CONFIG_URL_REAL" "$SECRET_URL_REAL" "$IP_URL_REAL" >"$C/urls"
	printf 'default 2;\nproxy_for 2 149.154.167.51:8888;\n' >"$C/serve/config"
	head -c 128 /dev/zero | tr '\0' 'k' >"$C/serve/proxy-secret"
	printf '%s\n' "$EXT_IP" >"$C/serve/myip"
	printf 'baked-proxy-secret-of-at-least-32-bytes.........\n' >"$C/etc/hello-explorers-how-are-you-doing"
}

# run_sh [VAR=value ...]: runs docker/run.sh in a clean environment (nothing leaks in from
# the caller's SECRET, TAG, DEBUG...). The stand-ins come first in PATH, so the defaults
# `curl`, `ip` and `sleep` are the stand-ins too.
run_sh() {
	env -i PATH="$BIN:/usr/bin:/bin" HOME="$C" LANG=C.UTF-8 STUB_CASE="$C" \
		MTPROXY_BIN="$BIN/fake-proxy" DATA_DIR="$C/data" ETC_DIR="$C/etc" \
		"$@" bash "$RUN_SH" >"$C/out" 2>"$C/err"
	RC=$?
	cat "$C/out" "$C/err" >"$C/all"
}

check() { # check NAME COMMAND...
	local name=$1
	shift
	if "$@"; then
		PASSED=$((PASSED + 1))
		echo "ok   - $name"
	else
		FAILED=$((FAILED + 1))
		echo "FAIL - $name"
		if [ -n "$C" ] && [ -f "$C/all" ]; then
			echo "       exit status: $RC; output:"
			sed 's/^/       | /' "$C/all" | head -20
		fi
	fi
}

rc_is() { [ "$RC" = "$1" ]; }
not() { ! "$@"; }
says() { grep -qxF -- "$1" "$C/all"; }       # an exact output line
mentions() { grep -qF -- "$1" "$C/all"; }    # a substring of the output
not_started() { [ ! -e "$C/argv" ]; }
no_refused() { [ ! -e "$C/curl.refused" ]; }
file_is() { # file_is PATH CONTENT (exact bytes; CONTENT is printf %s'd)
	[ -f "$1" ] && [ "$(od -An -c <"$1")" = "$(printf '%s' "$2" | od -An -c)" ]
}
lines_are() { # lines_are FILE LINE... (exact, line by line)
	local file=$1
	shift
	[ -f "$file" ] && diff <(printf '%s\n' "$@") "$file" >/dev/null
}
# The argv the proxy must get: expected_argv WORKERS NAT [TAG]
expected_argv() {
	local a=(-p 2398 --http-stats -H 443 -M "$1" -C 60000
		--aes-pwd "$C/etc/hello-explorers-how-are-you-doing" -u root "$C/etc/backend.conf"
		--allow-skip-dh --nat-info "$2" --mtproto-secret-file "$C/data/secret")
	[ $# -ge 3 ] && a+=(-P "$3")
	printf '%s\n' "${a[@]}"
}
argv_is() { [ -f "$C/argv" ] && diff <(expected_argv "$@") "$C/argv" >/dev/null; }
links_for() { # links_for SECRET...: both links printed for every secret
	local s
	for s in "$@"; do
		mentions "tg://proxy?server=$EXT_IP&port=443&secret=$s" || return 1
		mentions "https://t.me/proxy?server=$EXT_IP&port=443&secret=$s" || return 1
	done
}
n_link_lines() { [ "$(grep -c 'tg://proxy?' "$C/all")" = "$1" ]; }
curl_not_called() { [ ! -s "$C/curl.log" ]; }
secret_file() { cat "$C/data/secret"; }
many() { # many N: N distinct secrets, one a line
	local i
	for ((i = 1; i <= $1; i++)); do hex32 "$i"; echo; done
}
many_csv() { many "$1" | paste -sd, -; }

# ---- the defaults and the exact command line ---------------------------------------------

echo "# SECRET, everything else by default"
new_case
run_sh SECRET="$S1"
check "exit status 0 (the proxy's)" rc_is 0
check "exact argv: -M 2, --nat-info internal:external, no -P" argv_is 2 "$NAT"
check "/data/secret written back" file_is "$C/data/secret" "$S1"$'\n'
check "/data/secret_cmd written" file_is "$C/data/secret_cmd" "-- --mtproto-secret-file $C/data/secret"$'\n'
check "config: curl -s <getProxyConfig> -o backend.conf (no -f); IP: curl -s -4 <myIp>" \
	lines_are "$C/curl.log" "-s $CONFIG_URL_REAL -o $C/etc/backend.conf" "-s -4 $IP_URL_REAL"
check "backend.conf is what was served" cmp -s "$C/serve/config" "$C/etc/backend.conf"
check "internal IP from: ip -4 route get 8.8.8.8" lines_are "$C/ip.log" "-4 route get 8.8.8.8"
check "tg:// and t.me links, port 443, no dd prefix" links_for "$S1"
check "one link pair per secret" n_link_lines 1
check "prints 'no tag'" mentions "no tag"
check "prints the external IP" mentions "External IP: $EXT_IP"
check "sleeps 1 s before starting" lines_are "$C/sleep.log" 1
check "no unknown URL or option asked of curl" no_refused
check "the proxy secret present: not downloaded" not grep -qF "$SECRET_URL_REAL" "$C/curl.log"
check "no [F] or [!] line" not grep -q '^\[[F!]\]' "$C/all"

echo "# the proxy replaces the shell (exec): same pid, its exit code is the container's"
new_case
env -i PATH="$BIN:/usr/bin:/bin" HOME="$C" STUB_CASE="$C" MTPROXY_BIN="$BIN/fake-proxy" \
	DATA_DIR="$C/data" ETC_DIR="$C/etc" SECRET="$S1" FAKE_PROXY_EXIT=9 \
	bash "$RUN_SH" >"$C/all" 2>&1 &
pid=$!
wait "$pid"
RC=$?
check "exit status is the proxy's (9)" rc_is 9
check "the proxy ran with the shell's pid" [ "$(cat "$C/proxy.pid" 2>/dev/null)" = "$pid" ]

# ---- SECRET ------------------------------------------------------------------------------

echo "# SECRET with several secrets"
new_case
run_sh SECRET="$S1,$S2,$S3"
check "exit 0" rc_is 0
check "written back comma-separated, in order" file_is "$C/data/secret" "$S1,$S2,$S3"$'\n'
check "links for each secret" links_for "$S1" "$S2" "$S3"
check "three link pairs" n_link_lines 3
check "argv unchanged (secrets go through the file)" argv_is 2 "$NAT"

echo "# SECRET upper-case"
new_case
run_sh SECRET="$S1U,$S2"
check "exit 0" rc_is 0
check "lower-cased in /data/secret" file_is "$C/data/secret" "$S1,$S2"$'\n'
check "lower-cased in the links" links_for "$S1" "$S2"
check "no upper-case secret printed" not mentions "$S1U"

for bad in "${S1:0:31}" "${S1}0" "${S1:0:31}g" "$S1," ",$S1" "$S1,,$S2" "$S1 $S2" " $S1" "dd$S1" "$S1;$S2"; do
	echo "# bad SECRET '$bad'"
	new_case
	run_sh SECRET="$bad"
	check "exit 1" rc_is 1
	check "[F] Bad SECRET format" mentions "[F] Bad SECRET format"
	check "nothing downloaded, proxy not started" eval 'curl_not_called && not_started'
	check "/data/secret not written" [ ! -e "$C/data/secret" ]
done

echo "# SECRET with 128 secrets (the maximum)"
new_case
run_sh SECRET="$(many_csv 128)"
check "exit 0" rc_is 0
check "all 128 written back" file_is "$C/data/secret" "$(many_csv 128)"$'\n'
check "128 link pairs" n_link_lines 128

echo "# SECRET with 129 secrets"
new_case
run_sh SECRET="$(many_csv 129)"
check "exit 1" rc_is 1
check "[F] Bad SECRET format" mentions "[F] Bad SECRET format"
check "proxy not started" not_started

echo "# neither /data/secret nor SECRET"
new_case
run_sh
check "exit 1" rc_is 1
check "[F] ... is empty or missing and SECRET env var is not set." \
	says "[F] $C/data/secret is empty or missing and SECRET env var is not set."
check "nothing downloaded, proxy not started" eval 'curl_not_called && not_started'

echo "# SECRET set but empty"
new_case
run_sh SECRET=
check "exit 1, same message" eval 'rc_is 1 && says "[F] $C/data/secret is empty or missing and SECRET env var is not set."'

echo "# empty /data/secret (0 bytes) and SECRET"
new_case
: >"$C/data/secret"
run_sh SECRET="$S2"
check "exit 0" rc_is 0
check "SECRET used and written to the file" file_is "$C/data/secret" "$S2"$'\n'

echo "# empty /data/secret (0 bytes), no SECRET"
new_case
: >"$C/data/secret"
run_sh
check "exit 1" rc_is 1
check "[F] ... is empty or missing and SECRET env var is not set." \
	says "[F] $C/data/secret is empty or missing and SECRET env var is not set."

# ---- /data/secret ------------------------------------------------------------------------

echo "# /data/secret with comments, commas, blank lines, tabs, upper case, no final newline"
new_case
printf '# my secrets\n\n%s, %s # phone\n\t%s,,\n#%s\n   # only a comment\n%s' \
	"$S1U" "$S2" "$S3" "$(hex32 7)" "$(hex32 8)" >"$C/data/secret"
run_sh SECRET="$(hex32 9)"
check "exit 0" rc_is 0
check "normalised: one line, comma-separated, lower case, comments dropped" \
	file_is "$C/data/secret" "$S1,$S2,$S3,$(hex32 8)"$'\n'
check "SECRET ignored" not mentions "$(hex32 9)"
check "links for the file's secrets" links_for "$S1" "$S2" "$S3" "$(hex32 8)"
check "four link pairs" n_link_lines 4
check "argv" argv_is 2 "$NAT"

echo "# /data/secret with CRLF line ends"
new_case
printf '%s\r\n%s,%s\r\n# note\r\n' "$S1" "$S2" "$S3" >"$C/data/secret"
run_sh
check "exit 0" rc_is 0
check "normalised, no CR left" file_is "$C/data/secret" "$S1,$S2,$S3"$'\n'
check "links for all three" links_for "$S1" "$S2" "$S3"

echo "# /data/secret non-empty: a bad SECRET is ignored too"
new_case
printf '%s\n' "$S2" >"$C/data/secret"
run_sh SECRET="not-a-secret"
check "exit 0" rc_is 0
check "the file's secret used" eval 'file_is "$C/data/secret" "$S2"$'"'"'\n'"'"' && links_for "$S2"'

for bad in "${S1:0:31}" "dd$S1" "${S1:0:31}x" "$S1;$S2"; do
	echo "# /data/secret with a bad token '$bad'"
	new_case
	printf '%s\n# fine\n%s %s\n' "$S1" "$S2" "$bad" >"$C/data/secret"
	cp "$C/data/secret" "$C/secret.before"
	run_sh SECRET="$S3"
	check "exit 1" rc_is 1
	check "[F] Bad secret format in '/data/secret': '<tok>'. Should be 32 hex chars." \
		says "[F] Bad secret format in '$C/data/secret': '$bad'. Should be 32 hex chars."
	check "file left as it was" cmp -s "$C/secret.before" "$C/data/secret"
	check "nothing downloaded, proxy not started" eval 'curl_not_called && not_started'
done

echo "# /data/secret with 128 secrets over several lines"
new_case
many 128 | paste -d' ' - - - - >"$C/data/secret"
run_sh
check "exit 0" rc_is 0
check "all 128 written back in order" file_is "$C/data/secret" "$(many_csv 128)"$'\n'

echo "# /data/secret with 129 secrets"
new_case
many 129 >"$C/data/secret"
run_sh
check "exit 1" rc_is 1
check "[F] Too many secrets ..." mentions "[F] Too many secrets"
check "proxy not started" not_started
check "file left as it was" file_is "$C/data/secret" "$(many 129)"$'\n'

for content in $'# nothing here\n' $'\n\n' $',,, ,\n# x\n' $' \r\n'; do
	echo "# /data/secret without secrets: $(printf '%q' "$content")"
	new_case
	printf '%s' "$content" >"$C/data/secret"
	run_sh SECRET="$S1"
	check "exit 1" rc_is 1
	check "[F] Secret file '/data/secret' does not contain secrets." \
		says "[F] Secret file '$C/data/secret' does not contain secrets."
	check "proxy not started" not_started
done

# ---- TAG -------------------------------------------------------------------------------

echo "# TAG, upper case"
new_case
run_sh SECRET="$S1" TAG="$TAGU"
check "exit 0" rc_is 0
check "argv ends with -P <lower-cased tag>" argv_is 2 "$NAT" "$TAGL"
check "prints the tag" mentions "Tag: $TAGL"
check "no warning" not grep -q '^\[!\]' "$C/all"

for bad in "${TAGL:0:31}" "${TAGL}0" "${TAGL:0:31}z" "dd$TAGL" "tag"; do
	echo "# bad TAG '$bad'"
	new_case
	run_sh SECRET="$S1" TAG="$bad"
	check "exit 0: continues" rc_is 0
	check "[!] Bad tag format ..." mentions "[!] Bad tag format"
	check "[!] Continuing." says "[!] Continuing."
	check "argv without -P" argv_is 2 "$NAT"
	check "prints 'no tag'" mentions "no tag"
done

# ---- WORKERS -----------------------------------------------------------------------------

for w in 8 0 abc; do
	echo "# WORKERS=$w"
	new_case
	run_sh SECRET="$S1" WORKERS="$w" TAG="$TAGL"
	check "exit 0" rc_is 0
	check "-M $w, as given" argv_is "$w" "$NAT" "$TAGL"
done

echo "# WORKERS empty"
new_case
run_sh SECRET="$S1" WORKERS=
check "-M 2" argv_is 2 "$NAT"

# ---- downloads and addresses -------------------------------------------------------------

echo "# config download fails"
new_case
rm "$C/serve/config"
run_sh SECRET="$S1"
check "exit 2" rc_is 2
check "[F] Cannot download proxy configuration from Telegram servers." \
	says "[F] Cannot download proxy configuration from Telegram servers."
check "stops there: no IP lookups, proxy not started" \
	eval 'lines_are "$C/curl.log" "-s $CONFIG_URL_REAL -o $C/etc/backend.conf" && [ ! -s "$C/ip.log" ] && not_started'

echo "# config download gets an HTTP error page (curl without -f succeeds)"
new_case
echo "<html>502 Bad Gateway</html>" >"$C/serve/config"
echo 502 >"$C/serve/config.status"
run_sh SECRET="$S1"
check "exit 0: left to the proxy's config check" rc_is 0
check "the page is saved as backend.conf" cmp -s "$C/serve/config" "$C/etc/backend.conf"
check "argv" argv_is 2 "$NAT"

echo "# external IP lookup fails"
new_case
rm "$C/serve/myip"
run_sh SECRET="$S1"
check "exit 3" rc_is 3
check "[F] Cannot determine external IP address." says "[F] Cannot determine external IP address."
check "proxy not started" not_started

echo "# external IP lookup answers nothing"
new_case
: >"$C/serve/myip"
run_sh SECRET="$S1"
check "exit 3" rc_is 3
check "[F] Cannot determine external IP address." says "[F] Cannot determine external IP address."

echo "# internal IP: ip fails"
new_case
echo fail >"$C/ip.mode"
run_sh SECRET="$S1"
check "exit 4" rc_is 4
check "[F] Cannot determine internal IP address." says "[F] Cannot determine internal IP address."
check "proxy not started" not_started

echo "# internal IP: no src in ip's answer"
new_case
echo nosrc >"$C/ip.mode"
run_sh SECRET="$S1"
check "exit 4" rc_is 4
check "[F] Cannot determine internal IP address." says "[F] Cannot determine internal IP address."

echo "# order of the checks: secrets before downloads, config before addresses"
new_case
rm "$C/serve/config" "$C/serve/myip"
echo fail >"$C/ip.mode"
run_sh SECRET=bad
check "bad SECRET wins: exit 1" rc_is 1
run_sh SECRET="$S1"
check "then the config: exit 2" rc_is 2
printf 'default 2;\n' >"$C/serve/config"
run_sh SECRET="$S1"
check "then the external IP: exit 3" rc_is 3

# ---- the proxy secret (--aes-pwd), an addition -----------------------------------------

echo "# proxy secret missing: downloaded"
new_case
rm "$C/etc/hello-explorers-how-are-you-doing"
run_sh SECRET="$S1"
check "exit 0" rc_is 0
check "fetched with curl -s -f <getProxySecret>" \
	grep -qxF -- "-s -f $SECRET_URL_REAL -o $C/etc/hello-explorers-how-are-you-doing.download" \
	<(sed 's/\.download\.[0-9]*$/.download/' "$C/curl.log")
check "saved as the --aes-pwd file" cmp -s "$C/serve/proxy-secret" "$C/etc/hello-explorers-how-are-you-doing"
check "mode 0600" [ "$(stat -c %a "$C/etc/hello-explorers-how-are-you-doing")" = 600 ]
check "argv" argv_is 2 "$NAT"

echo "# proxy secret missing, download fails"
new_case
rm "$C/etc/hello-explorers-how-are-you-doing"
echo "<html>404</html>" >"$C/serve/proxy-secret"
echo 404 >"$C/serve/proxy-secret.status"
run_sh SECRET="$S1"
check "exit 5" rc_is 5
check "[F] Cannot download the proxy secret ..." mentions "[F] Cannot download the proxy secret"
check "nothing left in /etc/telegram but backend.conf" [ "$(ls "$C/etc")" = backend.conf ]
check "proxy not started" not_started

echo "# proxy secret missing, download has the wrong size"
new_case
rm "$C/etc/hello-explorers-how-are-you-doing"
head -c 300 /dev/zero | tr '\0' 'x' >"$C/serve/proxy-secret"
run_sh SECRET="$S1"
check "exit 5" rc_is 5
check "no --aes-pwd file left" [ ! -e "$C/etc/hello-explorers-how-are-you-doing" ]

# ---- overrides and DEBUG -----------------------------------------------------------------

echo "# CURL, IP_CMD, CONFIG_URL, IP_URL overrides"
new_case
mkdir "$C/alt"
cp "$BIN/curl" "$C/alt/my-curl"
cp "$BIN/ip" "$C/alt/my-ip"
printf 'https://config.invalid/c config\nhttps://ip.invalid/ip myip\n' >"$C/urls"
run_sh SECRET="$S1" CURL="$C/alt/my-curl" IP_CMD="$C/alt/my-ip" \
	CONFIG_URL=https://config.invalid/c IP_URL=https://ip.invalid/ip
check "exit 0" rc_is 0
check "the overriding URLs used" \
	lines_are "$C/curl.log" "-s https://config.invalid/c -o $C/etc/backend.conf" "-s -4 https://ip.invalid/ip"
check "argv" argv_is 2 "$NAT"

echo "# the stand-in curl refuses a URL it does not know"
new_case
run_sh SECRET="$S1" CONFIG_URL=https://unknown.invalid/
check "exit 2" rc_is 2
check "refusal logged" grep -qxF https://unknown.invalid/ "$C/curl.refused"

echo "# DEBUG=1"
new_case
run_sh SECRET="$S1" DEBUG=1
check "exit 0" rc_is 0
check "set -x trace on stderr" grep -q '^+ ' "$C/err"
check "argv" argv_is 2 "$NAT"

echo "# the defaults in docker/run.sh are the contract's"
C=
for line in 'MTPROXY_BIN="${MTPROXY_BIN:-/usr/local/bin/mtproto-proxy}"' \
	'CURL="${CURL:-curl}"' 'IP_CMD="${IP_CMD:-ip}"' \
	'CONFIG_URL="${CONFIG_URL:-https://core.telegram.org/getProxyConfig}"' \
	'PROXY_SECRET_URL="${PROXY_SECRET_URL:-https://core.telegram.org/getProxySecret}"' \
	'IP_URL="${IP_URL:-https://digitalresistance.dog/myIp}"' \
	'DATA_DIR="${DATA_DIR:-/data}"' 'ETC_DIR="${ETC_DIR:-/etc/telegram}"' \
	'WORKERS="${WORKERS:-2}"'; do
	check "default: $line" grep -qxF -- "$line" "$RUN_SH"
done
check "bash -n docker/run.sh" bash -n "$RUN_SH"

echo
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
