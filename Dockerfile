# CoinSensei's container image: the one `coinsensei` binary on a minimal Debian runtime, run as
# an unprivileged user. Needs BuildKit (the default builder since Docker 23; DOCKER_BUILDKIT=1
# before), which builds only the stages the target needs.
#
#   docker build -t coinsensei .       the full build: compiles in `build`, copies into `runtime`
#   cargo xtask docker                 the same, with the base images as arguments (see docs/deploy.md)
#   docker build --target prebuilt -t coinsensei DIR
#                                      a binary built outside (DIR/coinsensei, for the same glibc),
#                                      copied onto the same runtime; what the test suite does
#
# BASE_IMAGE is the runtime's base: Debian bookworm or anything with glibc >= 2.36 and apt
# (the tests use one made with `mmdebstrap --variant=minbase bookworm`, as no image registry
# is reachable there). RUST_IMAGE compiles: the toolchain of rust-toolchain.toml, plus a C and
# C++ compiler for ring, SQLite and libbitcoinconsensus.
ARG BASE_IMAGE=debian:bookworm-slim
ARG RUST_IMAGE=rust:1.95-bookworm

FROM ${BASE_IMAGE} AS runtime-base
# CA certificates for HTTPS to chain nodes (rustls reads the system's roots). Not pinned to a
# version: a Debian stable update is a security fix we want at the next build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 coinsensei \
    && useradd --system --uid 10001 --gid coinsensei --home-dir /var/lib/coinsensei \
        --create-home --shell /usr/sbin/nologin coinsensei
WORKDIR /var/lib/coinsensei
# Inside a container the control plane listens on every interface; the embedded SQLite (if
# used at all) lives in the user's home. Postgres is set with COINSENSEI_DATABASE_URL.
ENV COINSENSEI_LISTEN=0.0.0.0:8080 \
    COINSENSEI_DATA_DIR=/var/lib/coinsensei
EXPOSE 8080
USER 10001:10001
# No HEALTHCHECK: the image has no HTTP client, and the orchestrators probe /healthz and
# /readyz themselves (Kubernetes probes; a compose healthcheck in deploy/compose/).
ENTRYPOINT ["/usr/local/bin/coinsensei"]
CMD ["serve"]

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --package coinsensei \
    && install -m 0755 target/release/coinsensei /usr/local/bin/coinsensei

FROM runtime-base AS prebuilt
COPY coinsensei /usr/local/bin/coinsensei

FROM runtime-base AS runtime
COPY --from=build /usr/local/bin/coinsensei /usr/local/bin/coinsensei
