# Multi-stage build: a Rust builder, then a slim runtime running as a non-root user.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# --no-default-features: no `authgate demo`, so the development IdP (crates/devidp) is not in the image.
RUN cargo build --release --locked --no-default-features -p authgate && cp target/release/authgate /usr/local/bin/authgate

# The development IdP and echo upstream of the compose walk-through (`compose.yaml`, target
# `devidp`): a separate image, never the gateway's. Users sign in without a password.
FROM build AS devidp-build
RUN cargo build --release --locked -p devidp --bin devidp && cp target/release/devidp /usr/local/bin/devidp

FROM debian:bookworm-slim AS devidp
RUN useradd --system --uid 10002 --no-create-home --shell /usr/sbin/nologin devidp
COPY --from=devidp-build /usr/local/bin/devidp /usr/local/bin/devidp
USER devidp
EXPOSE 9091 8081
ENTRYPOINT ["devidp"]

# The gateway (the default target: the last stage).
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin authgate
COPY --from=build /usr/local/bin/authgate /usr/local/bin/authgate
COPY config/authgate.example.toml /etc/authgate/authgate.toml
USER authgate
# 8080: proxy; 9090: admin (/metrics, /healthz, /readyz). Bind admin to 0.0.0.0 in the config
# only when the container network is private.
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["authgate", "health", "--admin", "127.0.0.1:9090"]
ENTRYPOINT ["authgate"]
CMD ["run", "--config", "/etc/authgate/authgate.toml"]
