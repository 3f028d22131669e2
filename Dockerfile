# syntax=docker/dockerfile:1
# Build: docker build -t mcp-oauth-gateway .
# Run:   docker run -p 8080:8080 -p 9464:9464 \
#          -v $PWD/gateway.yaml:/etc/mcp-oauth-gateway/config.yaml \
#          -v mcpgw-data:/var/lib/mcp-oauth-gateway mcp-oauth-gateway
# A mounted config must `listen: 0.0.0.0:8080` (and `metrics.listen:
# 0.0.0.0:9464`) to be reachable from outside the container, and should set
# `authorization_server.data_dir: /var/lib/mcp-oauth-gateway` (a relative
# data_dir is resolved against the config file's directory).
# tests/dockerfile.rs checks this file against the repository (no container
# engine runs in CI).

FROM rust:1.95-bookworm AS builder
# The build's system packages, as ./run installs them: cmake for libz-ng-sys
# (a pingora dependency); the image already has a C compiler.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# src/ holds the SQL migrations (src/store/migrations), compiled in.
COPY src ./src
# askama compiles the login and consent pages into the binary.
COPY templates ./templates
RUN cargo build --release --locked --bin mcp-oauth-gateway

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gateway
COPY --from=builder /src/target/release/mcp-oauth-gateway /usr/local/bin/mcp-oauth-gateway
# The example configuration, made reachable from outside the container and
# keeping its store in the volume below.
COPY config.example.yaml /etc/mcp-oauth-gateway/config.yaml
RUN sed -i \
      -e 's|^listen: 127.0.0.1:8080|listen: 0.0.0.0:8080|' \
      -e 's|^  listen: 127.0.0.1:9464|  listen: 0.0.0.0:9464|' \
      -e 's|^  data_dir: ./data |  data_dir: /var/lib/mcp-oauth-gateway |' \
      /etc/mcp-oauth-gateway/config.yaml
# The authorization server's SQLite store: mount a volume to keep clients,
# keys and refresh tokens across containers.
RUN mkdir -p /var/lib/mcp-oauth-gateway && chown 10001:10001 /var/lib/mcp-oauth-gateway
WORKDIR /var/lib/mcp-oauth-gateway
VOLUME /var/lib/mcp-oauth-gateway
USER 10001:10001
# The gateway and /metrics (config.example.yaml's listen and metrics.listen).
EXPOSE 8080 9464
# No HEALTHCHECK yet: the gateway has no readiness endpoint (issue 16).
# SIGTERM drains in-flight requests and streams (server.shutdown_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["mcp-oauth-gateway"]
CMD ["serve", "--config", "/etc/mcp-oauth-gateway/config.yaml"]
