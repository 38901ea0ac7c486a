# syntax=docker/dockerfile:1
# jobtide's image: `docker build -t jobtide .` (no Docker engine runs on the project's own
# machines: this file is kept simple and standard, and is not built by CI — see docs/install.md).

# --- build ---------------------------------------------------------------------------------
FROM rust:1.95-bookworm AS build
# librdkafka is built from source by rdkafka's cmake build (TLS, SASL/GSSAPI, OIDC, zlib).
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake pkg-config libcurl4-openssl-dev libssl-dev libsasl2-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The `dist` profile: the release profile with whole-program LTO (Cargo.toml says why).
RUN cargo build --profile dist --locked -p jobtide-cli \
 && cp target/dist/jobtide /jobtide

# --- run -----------------------------------------------------------------------------------
# The shared libraries librdkafka links against; nothing else (the operator needs no shell).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libcurl4 libssl3 libsasl2-2 libsasl2-modules-gssapi-mit zlib1g \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /jobtide /usr/local/bin/jobtide
# A numeric non-root user (runAsNonRoot can verify it); nothing is written to the filesystem,
# so a read-only root filesystem works.
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/jobtide"]
CMD ["operator"]
