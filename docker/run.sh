#!/bin/bash
# Container entry point of the mtproxy image (CMD ["/bin/bash", "/run.sh"]).
#
# Keeps the contract of the skrashevich/MTProxy image's docker/run.sh, so existing
#   docker run -e SECRET=... -e TAG=... -e WORKERS=... -v <vol>:/data ...
# setups work unchanged:
#   1. DEBUG non-empty -> `set -x`; create /data (errors ignored).
#   2. WORKERS defaults to 2, passed to -M as given.
#   3. Secrets: /data/secret when it is non-empty (SECRET is then ignored), else SECRET
#      (comma-separated). At most 128, each exactly 32 hex digits; lower-cased and written
#      back to /data/secret as one comma-separated line; /data/secret_cmd is written too.
#   4. TAG: 32 hex digits -> `-P <tag>` (lower-cased), anything else -> warning, no tag.
#   5. Download the backend config from Telegram to /etc/telegram/backend.conf.
#   5a. (addition) Download the proxy secret to /etc/telegram/hello-explorers-how-are-you-doing
#      when that file is missing or empty; an operator may mount their own copy there.
#   6. External IP from the web, 7. internal IP from `ip -4 route get 8.8.8.8`.
#   8. Print the links, 9. exec the proxy.
# Exit codes: 1 secrets, 2 config download, 3 external IP, 4 internal IP,
#             5 proxy-secret download (addition); from step 9 on, the proxy's own.
#
# The external commands and places can be overridden (for tests); the defaults below are
# the contract: MTPROXY_BIN, CURL, IP_CMD, CONFIG_URL, PROXY_SECRET_URL, IP_URL, DATA_DIR,
# ETC_DIR.

if [ -n "$DEBUG" ]; then
	set -x
fi

MTPROXY_BIN="${MTPROXY_BIN:-/usr/local/bin/mtproto-proxy}"
CURL="${CURL:-curl}"
IP_CMD="${IP_CMD:-ip}"
CONFIG_URL="${CONFIG_URL:-https://core.telegram.org/getProxyConfig}"
PROXY_SECRET_URL="${PROXY_SECRET_URL:-https://core.telegram.org/getProxySecret}"
IP_URL="${IP_URL:-https://digitalresistance.dog/myIp}"
DATA_DIR="${DATA_DIR:-/data}"
ETC_DIR="${ETC_DIR:-/etc/telegram}"

SECRET_FILE="$DATA_DIR/secret"
SECRET_CMD_FILE="$DATA_DIR/secret_cmd"
BACKEND_CONF="$ETC_DIR/backend.conf"
PROXY_SECRET="$ETC_DIR/hello-explorers-how-are-you-doing"
MAX_SECRETS=128
HEX32='^[[:xdigit:]]{32}$'

fatal() { # fatal <exit code> <message>
	echo "[F] $2" >&2
	exit "$1"
}
warn() { echo "[!] $*" >&2; }
info() { echo "[*] $*"; }

# 1. The data directory (a volume in most setups).
mkdir -p "$DATA_DIR" 2>/dev/null

# 2. Workers: not validated, the proxy itself rejects a bad -M.
WORKERS="${WORKERS:-2}"

# 3. Secrets.
SECRETS=()
if [ -s "$SECRET_FILE" ]; then
	# The same syntax the proxy's --mtproto-secret-file accepts: `#` starts a comment that runs
	# to the end of the line; tokens are separated by commas, spaces, tabs, CR and LF.
	count=0
	while IFS= read -r line || [ -n "$line" ]; do
		line="${line%%#*}"
		line="${line//,/ }"
		line="${line//$'\r'/ }"
		read -r -a tokens <<<"$line"
		for tok in "${tokens[@]}"; do
			if ! [[ $tok =~ $HEX32 ]]; then
				fatal 1 "Bad secret format in '$SECRET_FILE': '$tok'. Should be 32 hex chars."
			fi
			count=$((count + 1))
			if [ "$count" -le "$MAX_SECRETS" ]; then
				SECRETS+=("${tok,,}")
			fi
		done
	done <"$SECRET_FILE"
	if [ "$count" -gt "$MAX_SECRETS" ]; then
		fatal 1 "Too many secrets in '$SECRET_FILE': $count (max $MAX_SECRETS)."
	fi
	if [ "$count" -eq 0 ]; then
		fatal 1 "Secret file '$SECRET_FILE' does not contain secrets."
	fi
	info "Using the secrets from '$SECRET_FILE' (the SECRET variable is ignored)."
elif [ -n "$SECRET" ]; then
	if ! [[ $SECRET =~ ^[[:xdigit:]]{32}(,[[:xdigit:]]{32}){0,127}$ ]]; then
		fatal 1 "Bad SECRET format: should be 32 hex chars, several separated by commas, at most $MAX_SECRETS."
	fi
	IFS=, read -r -a SECRETS <<<"${SECRET,,}"
	info "Using the secrets from the SECRET variable."
else
	fatal 1 "$SECRET_FILE is empty or missing and SECRET env var is not set."
fi

# Normalise /data/secret (one comma-separated line) so it is also what the proxy reads.
JOINED="$(IFS=,; echo "${SECRETS[*]}")"
if ! (umask 077 && echo "$JOINED" >"$SECRET_FILE") 2>/dev/null; then
	warn "Cannot write '$SECRET_FILE'; the proxy reads it as it is."
fi
echo "-- --mtproto-secret-file $SECRET_FILE" >"$SECRET_CMD_FILE" 2>/dev/null

# 4. Proxy tag from @MTProxybot.
TAG_ARGS=()
TAG_VALUE=
if [ -n "$TAG" ]; then
	if [[ $TAG =~ $HEX32 ]]; then
		TAG_VALUE="${TAG,,}"
		TAG_ARGS=(-P "$TAG_VALUE")
	else
		warn "Bad tag format: should be 32 hex chars."
		warn "Continuing."
	fi
fi

# 5. Backend config (no -f, as the contract: an HTTP error page is caught by the proxy's
# config check later).
mkdir -p "$ETC_DIR" 2>/dev/null
if ! "$CURL" -s "$CONFIG_URL" -o "$BACKEND_CONF"; then
	fatal 2 "Cannot download proxy configuration from Telegram servers."
fi

# 5a. Proxy secret (--aes-pwd), fetched only when missing. Validated like the proxy does
# (32..256 bytes) before it is put in place, so a failed download leaves nothing behind.
if [ ! -s "$PROXY_SECRET" ]; then
	tmp="$PROXY_SECRET.download.$$"
	size=0
	if (umask 077 && "$CURL" -s -f "$PROXY_SECRET_URL" -o "$tmp"); then
		size=$(wc -c <"$tmp" 2>/dev/null || echo 0)
	fi
	if [ "$size" -lt 32 ] || [ "$size" -gt 256 ] || ! mv -f "$tmp" "$PROXY_SECRET"; then
		rm -f "$tmp"
		fatal 5 "Cannot download the proxy secret from Telegram servers into '$PROXY_SECRET' (or mount one there)."
	fi
	info "Downloaded the proxy secret to '$PROXY_SECRET'."
fi

# 6. External IP.
IP="$("$CURL" -s -4 "$IP_URL")"
if [ -z "$IP" ]; then
	fatal 3 "Cannot determine external IP address."
fi

# 7. Internal IP: the word after `src` in `ip -4 route get 8.8.8.8` (no traffic is sent).
INTERNAL_IP=
read -r -a route_words <<<"$("$IP_CMD" -4 route get 8.8.8.8 2>/dev/null)"
for ((i = 0; i + 1 < ${#route_words[@]}; i++)); do
	if [ "${route_words[i]}" = src ]; then
		INTERNAL_IP="${route_words[i + 1]}"
		break
	fi
done
if [ -z "$INTERNAL_IP" ]; then
	fatal 4 "Cannot determine internal IP address."
fi

# 8. Links. The port is the container's 443; change it if you publish another one.
info "Config:"
n=0
for s in "${SECRETS[@]}"; do
	n=$((n + 1))
	info "  Secret $n: $s"
	info "  tg:// link for secret $n: tg://proxy?server=$IP&port=443&secret=$s"
	info "  t.me link for secret $n: https://t.me/proxy?server=$IP&port=443&secret=$s"
done
if [ -n "$TAG_VALUE" ]; then
	info "  Tag: $TAG_VALUE"
else
	info "  Tag: no tag"
fi
info "  External IP: $IP"
info "  Make sure to fix the links if you publish a port other than 443."
sleep 1

# 9. The proxy, in place of this shell: its exit code is the container's.
exec "$MTPROXY_BIN" -p 2398 --http-stats -H 443 -M "$WORKERS" -C 60000 \
	--aes-pwd "$PROXY_SECRET" -u root "$BACKEND_CONF" \
	--allow-skip-dh --nat-info "$INTERNAL_IP:$IP" \
	--mtproto-secret-file "$SECRET_FILE" "${TAG_ARGS[@]}"
