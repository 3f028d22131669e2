# syntax=docker/dockerfile:1
# Build: docker build -t mcp-oauth-gateway .
# Run:   docker run -p 8080:8080 -v $PWD/gateway.yaml:/etc/mcp-oauth-gateway/config.yaml \
#          -v mcpgw-data:/var/lib/mcp-oauth-gateway mcp-oauth-gateway
# (the mounted config must `listen: 0.0.0.0:8080` to be reachable from outside the container)

FROM rust:1.95-bookworm AS builder
# cmake: libz-ng-sys, a pingora dependency, builds with it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
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
COPY config.example.yaml /etc/mcp-oauth-gateway/config.yaml
# The authorization server's SQLite store (`data_dir: ./data` resolves here):
# mount a volume to keep clients, keys and refresh tokens across containers.
RUN mkdir -p /var/lib/mcp-oauth-gateway && chown 10001:10001 /var/lib/mcp-oauth-gateway
WORKDIR /var/lib/mcp-oauth-gateway
VOLUME /var/lib/mcp-oauth-gateway
USER 10001:10001
EXPOSE 8080
# SIGTERM drains in-flight requests and streams (server.shutdown_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["mcp-oauth-gateway"]
CMD ["serve", "--config", "/etc/mcp-oauth-gateway/config.yaml"]
