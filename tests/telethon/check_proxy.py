#!/usr/bin/env python3
"""Real-client check: Telethon's own MTProxy connection classes through the proxy.

Connects with one of Telethon's MTProxy transports (the classes a Telethon user gets with
``connection=ConnectionTcpMTProxy...``), sends ``req_pq_multi`` with Telethon's plain
(unencrypted) sender, and checks that the ``resPQ`` that comes back carries the nonce it
sent. No login, no session, no real Telegram: the proxy is expected to relay to a fake DC
(``fake-dc`` from crates/testkit) or a fake middle-end on loopback.

    python3 check_proxy.py --proxy-host 127.0.0.1 --proxy-port P --secret HEX \
        [--dc 2] [--mode abridged|intermediate|randomized] [--count 1] [--timeout 15]

``--secret`` takes the server secret (32 hex digits) or a client form of it (``dd`` + 32
hex, or ``ee`` + 32 hex + domain hex; only the 16-byte key is used: Telethon has no fake
TLS). Prints one line, ``telethon <mode>: ok`` or ``telethon <mode>: FAIL <reason>``, and
exits 0 or 1 (2 for bad arguments).

Telethon facts this relies on (read from telethon 1.45.0, network/connection/tcpmtproxy.py):

* ``TcpMTProxy.normalize_secret`` drops a leading ``dd``/``ee`` from the *text* before
  decoding it, so a plain secret whose hex starts with ``dd`` or ``ee`` would lose a byte.
  We therefore hand Telethon ``dd`` + key for every mode, which it always decodes to the
  key, and assert that it did.
* The connection writes the 64-byte header, then waits up to 2 s for the proxy to close
  before it sends anything (its workaround for proxies that reject a transport). The
  proxy must keep a silent, freshly opened connection for at least that long.
* The DC id is always written into header bytes 60..62 as signed LE16 (also when 0).
"""

import argparse
import asyncio
import ipaddress
import logging
import os
import sys

try:
    from telethon.network import MTProtoPlainSender
    from telethon.network.connection import (
        ConnectionTcpMTProxyAbridged,
        ConnectionTcpMTProxyIntermediate,
        ConnectionTcpMTProxyRandomizedIntermediate,
    )
    from telethon.network.connection.tcpmtproxy import TcpMTProxy
    from telethon.tl.functions import ReqPqMultiRequest
    from telethon.tl.types import ResPQ
except ImportError as e:  # pragma: no cover - environment problem
    print(f"telethon: FAIL cannot import telethon ({e}); pip install -r requirements.txt")
    sys.exit(1)

MODES = {
    "abridged": ConnectionTcpMTProxyAbridged,
    "intermediate": ConnectionTcpMTProxyIntermediate,
    "randomized": ConnectionTcpMTProxyRandomizedIntermediate,
}


class Loggers(dict):
    """What Telethon's connection and sender classes expect as ``loggers``: a mapping from
    module name to logger (the same trick as ``TelegramBaseClient``)."""

    def __missing__(self, key):
        logger = logging.getLogger(key)
        self[key] = logger
        return logger


def server_key(text):
    """The 16-byte key from a server secret or a dd/ee client secret, all in hex."""
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ValueError("secret must be hex") from None
    if len(raw) == 16:
        return raw
    if len(raw) == 17 and raw[0] == 0xDD:
        return raw[1:]
    if len(raw) > 17 and raw[0] == 0xEE:
        return raw[1:17]
    raise ValueError(f"unsupported secret of {len(raw)} bytes")


def telethon_secret(key):
    """The secret text to give Telethon so that it ends up with exactly ``key``."""
    text = "dd" + key.hex()
    got = TcpMTProxy.normalize_secret(text)
    if got != key:
        raise RuntimeError(f"telethon normalizes {text} to {got.hex()}, not {key.hex()}")
    return text


async def check(args, key):
    loggers = Loggers()
    cls = MODES[args.mode]
    proxy = (args.proxy_host, args.proxy_port, telethon_secret(key))
    # ip/port are where the proxy should take us; TcpMTProxy ignores them (only dc_id travels,
    # in the header), so pass the proxy's own loopback address rather than any real DC.
    conn = cls(args.proxy_host, args.proxy_port, args.dc, loggers=loggers, proxy=proxy)
    await conn.connect(timeout=args.timeout)
    try:
        sender = MTProtoPlainSender(conn, loggers=loggers)
        for i in range(args.count):
            nonce = int.from_bytes(os.urandom(16), "big", signed=True)
            res = await asyncio.wait_for(sender.send(ReqPqMultiRequest(nonce)), args.timeout)
            if not isinstance(res, ResPQ):
                return f"answer {i + 1} is {type(res).__name__}, not ResPQ"
            if res.nonce != nonce:
                return f"answer {i + 1}: resPQ nonce {res.nonce:#x} != sent {nonce:#x}"
    finally:
        await conn.disconnect()
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--proxy-host", default="127.0.0.1")
    ap.add_argument("--proxy-port", type=int, required=True)
    ap.add_argument("--secret", required=True, help="32 hex digits, or dd/ee client form")
    ap.add_argument("--dc", type=int, default=2, help="DC id for the header (signed)")
    ap.add_argument("--mode", choices=sorted(MODES), default="intermediate")
    ap.add_argument("--count", type=int, default=1, help="req_pq_multi round trips")
    ap.add_argument("--timeout", type=float, default=15.0, help="seconds per step")
    ap.add_argument("-v", "--verbose", action="store_true", help="Telethon debug logs on stderr")
    args = ap.parse_args()

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(name)s: %(message)s",
    )
    try:
        if not ipaddress.ip_address(args.proxy_host).is_loopback:
            ap.error("--proxy-host must be a loopback address")
    except ValueError:
        ap.error("--proxy-host must be an IP address (loopback)")
    if not -32768 <= args.dc <= 32767:
        ap.error("--dc must fit a signed 16-bit integer")
    try:
        key = server_key(args.secret)
    except ValueError as e:
        ap.error(str(e))

    try:
        failure = asyncio.run(asyncio.wait_for(check(args, key), args.timeout * (args.count + 2)))
    except Exception as e:  # everything Telethon or the network can raise
        failure = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    if failure is None:
        print(f"telethon {args.mode}: ok")
        return 0
    print(f"telethon {args.mode}: FAIL {failure}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
