# mtproxy image: a drop-in for the skrashevich/MTProxy image (same /run.sh contract:
# SECRET, TAG, WORKERS, DEBUG, /data/secret; ports 443 and 2398).
#
#   docker build -t mtproxy .
#   docker run -d --name mtproxy --restart unless-stopped -p 443:443 \
#     -e SECRET=<32 hex> [-e TAG=<32 hex>] [-e WORKERS=2] -v mtproxy-data:/data mtproxy
#
# Unlike the fork, the image does not carry Telegram's proxy secret
# (/etc/telegram/hello-explorers-how-are-you-doing): run.sh downloads it on first start,
# or mount your own copy there (read-only is fine).

FROM rust:1-slim-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
RUN cargo build --release --locked --bin mtproto-proxy

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends bash ca-certificates curl iproute2 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder /src/target/release/mtproto-proxy /usr/local/bin/mtproto-proxy
COPY docker/run.sh /run.sh
RUN mkdir -p /etc/telegram /data
# 443: clients. 2398: /stats, which the proxy binds to 127.0.0.1 inside the container.
EXPOSE 443 2398
CMD ["/bin/bash", "/run.sh"]
