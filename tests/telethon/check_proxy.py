#!/usr/bin/env python3
"""Real-client check: Telethon's own MTProxy connection classes through the proxy.

Connects with one of Telethon's MTProxy transports (the classes a Telethon user gets with
``connection=ConnectionTcpMTProxy...``), sends ``req_pq_multi`` with Telethon's plain
(unencrypted) sender, and checks that the ``resPQ`` that comes back carries the nonce it
sent. No login, no session, no real Telegram: the proxy is expected to relay to a fake DC
(``fake-dc`` from crates/testkit) or a fake middle-end on loopback.

    python3 check_proxy.py --proxy-host 127.0.0.1 --proxy-port P --secret HEX \
        [--dc 2] [--mode abridged|intermediate|randomized|faketls] [--domain NAME] \
        [--count 1] [--timeout 15]

``--secret`` takes the server secret (32 hex digits) or a client form of it (``dd`` + 32
hex, or ``ee`` + 32 hex + domain hex). The obfuscated2 modes use only the 16-byte key.
``--mode faketls`` uses the PyPI package TelethonFakeTLS (``ConnectionTcpMTProxyFakeTLS``,
randomized intermediate inside fake TLS): the SNI domain comes from an ``ee`` secret or
from ``--domain`` (one of them is required; when both are given they must agree). Prints
one line, ``telethon <mode>: ok`` or ``telethon <mode>: FAIL <reason>``, and exits 0 or 1
(2 for bad arguments).

Telethon facts this relies on (read from telethon 1.45.0, network/connection/tcpmtproxy.py):

* ``TcpMTProxy.normalize_secret`` drops a leading ``dd``/``ee`` from the *text* before
  decoding it, so a plain secret whose hex starts with ``dd`` or ``ee`` would lose a byte.
  We therefore hand Telethon ``dd`` + key for every mode, which it always decodes to the
  key, and assert that it did.
* The connection writes the 64-byte header, then waits up to 2 s for the proxy to close
  before it sends anything (its workaround for proxies that reject a transport). The
  proxy must keep a silent, freshly opened connection for at least that long.
* The DC id is always written into header bytes 60..62 as signed LE16 (also when 0).

TelethonFakeTLS facts (read from TelethonFakeTLS 2022.4.4.16.37.38.728726, which works
with telethon 1.45.0; it needs Python >= 3.10 for its annotations):

* ``ConnectionTcpMTProxyFakeTLS(ip, port, dc_id, loggers=..., proxy=(host, port, text))``
  takes the secret text **without** the leading ``ee``: it prepends ``ee`` itself
  (``bytes.fromhex('ee' + text)``, key = bytes 1..17, domain = the rest; a text that is
  not hex is read as base64 without its leading ``7``). Passing the ``ee`` form gives it a
  wrong key and the proxy forwards the hello to the site.
* It then hands the bare key (hex) to Telethon's ``TcpMTProxy``, whose
  ``normalize_secret`` strips a leading ``dd``/``ee``: with a key starting with byte
  ``dd`` or ``ee`` the obfuscated2 layer would raise "MTProxy secret must be ... 16 bytes".
  We put the key back into ``conn._secret`` (and say so with ``-v``).
* Hello: 517 bytes, a fixed template (no extension permutation, fixed GREASE values), SNI
  = the domain, timestamp = local ``time.time()`` (no server-time correction). The
  template lives in a class attribute that every instance mutates, so concurrent
  connections of one process can corrupt each other's hello: use one at a time.
* Reply check: reads 127 + 6 + 5 bytes, then the application-data record; requires the
  session id echoed and the server HMAC. After it: **no** ChangeCipherSpec; the 64-byte
  header goes alone in the first ``17 03 03`` record; every later write (one packet) is
  its own records of at most 16384 + 24 bytes, each record header written separately
  from its payload. It skips ``14`` records from the server and treats any record type
  other than ``14``/``17`` or version other than ``03 03`` as end of stream. It bypasses
  TcpMTProxy's 2-second wait after connecting.
* Telethon 1.45's ``disconnect`` awaits ``writer.wait_closed()``, which the package's
  writer lacks: after closing the socket, Telethon logs an ``AttributeError ... during
  disconnect`` at INFO level (seen with ``-v``). Harmless.
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
    "faketls": None,  # TelethonFakeTLS, imported only when asked for
}


def faketls_class():
    """TelethonFakeTLS's connection class (ImportError if the package is missing)."""
    from TelethonFakeTLS import ConnectionTcpMTProxyFakeTLS

    return ConnectionTcpMTProxyFakeTLS


class Loggers(dict):
    """What Telethon's connection and sender classes expect as ``loggers``: a mapping from
    module name to logger (the same trick as ``TelegramBaseClient``)."""

    def __missing__(self, key):
        logger = logging.getLogger(key)
        self[key] = logger
        return logger


def parse_secret(text):
    """(16-byte key, domain or None) from a server secret or a dd/ee client secret, in hex."""
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ValueError("secret must be hex") from None
    if len(raw) == 16:
        return raw, None
    if len(raw) == 17 and raw[0] == 0xDD:
        return raw[1:], None
    if len(raw) > 17 and raw[0] == 0xEE:
        try:
            return raw[1:17], raw[17:].decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("the domain in the ee secret is not ASCII") from None
    raise ValueError(f"unsupported secret of {len(raw)} bytes")


def server_key(text):
    """The 16-byte key from a server secret or a dd/ee client secret, all in hex."""
    return parse_secret(text)[0]


def telethon_secret(key):
    """The secret text to give Telethon so that it ends up with exactly ``key``."""
    text = "dd" + key.hex()
    got = TcpMTProxy.normalize_secret(text)
    if got != key:
        raise RuntimeError(f"telethon normalizes {text} to {got.hex()}, not {key.hex()}")
    return text


def faketls_connection(args, key, domain, loggers):
    """TelethonFakeTLS's connection for ``key`` and SNI ``domain``, checked and patched."""
    cls = faketls_class()
    # The package wants the ee secret without its "ee" (see the module docstring).
    text = key.hex() + domain.encode("ascii").hex()
    proxy = (args.proxy_host, args.proxy_port, text)
    conn = cls(args.proxy_host, args.proxy_port, args.dc, loggers=loggers, proxy=proxy)
    codec = conn.fake_tls_cdc
    if codec.secret != key or codec.domain != domain.encode("ascii"):
        raise RuntimeError(
            f"TelethonFakeTLS read {text} as key {codec.secret.hex()}, domain {codec.domain!r}"
        )
    if conn._secret != key:
        # Telethon's normalize_secret dropped a leading dd/ee byte of the key itself.
        logging.getLogger("check_proxy").info(
            "restoring the key Telethon normalized to %s", conn._secret.hex()
        )
        conn._secret = key
    return conn


async def check(args, key, domain):
    loggers = Loggers()
    # ip/port are where the proxy should take us; TcpMTProxy ignores them (only dc_id travels,
    # in the header), so pass the proxy's own loopback address rather than any real DC.
    if args.mode == "faketls":
        conn = faketls_connection(args, key, domain, loggers)
    else:
        proxy = (args.proxy_host, args.proxy_port, telethon_secret(key))
        conn = MODES[args.mode](
            args.proxy_host, args.proxy_port, args.dc, loggers=loggers, proxy=proxy
        )
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
    ap.add_argument("--domain", help="SNI domain for --mode faketls (else from the ee secret)")
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
        key, secret_domain = parse_secret(args.secret)
    except ValueError as e:
        ap.error(str(e))
    domain = None
    if args.mode == "faketls":
        if args.domain and secret_domain and args.domain != secret_domain:
            ap.error(f"--domain {args.domain} differs from the secret's {secret_domain}")
        domain = args.domain or secret_domain
        if not domain:
            ap.error("--mode faketls needs a domain: an ee secret or --domain")
        try:
            domain.encode("ascii")
        except UnicodeEncodeError:
            ap.error("--domain must be ASCII")
        try:
            faketls_class()
        except ImportError as e:
            print(f"telethon faketls: FAIL cannot import TelethonFakeTLS ({e}); "
                  "pip install -r requirements.txt")
            return 1

    try:
        failure = asyncio.run(
            asyncio.wait_for(check(args, key, domain), args.timeout * (args.count + 2))
        )
    except Exception as e:  # everything Telethon or the network can raise
        failure = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    if failure is None:
        print(f"telethon {args.mode}: ok")
        return 0
    print(f"telethon {args.mode}: FAIL {failure}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
