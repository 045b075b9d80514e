# syntax=docker/dockerfile:1
# prober in a small image: a Rust builder stage, then a Debian slim runtime
# that holds only the binary, CA certificates and the example probes.
#
#   docker build -t prober .
#   docker run --rm -p 127.0.0.1:9680:9680 -e DATABASE_URL=postgres://user:pass@db:5432/prober \
#     -v "$PWD/my-probes:/etc/prober/probes:ro" prober
#
# The example probes in the image target `prober demo`'s own targets: `... prober demo`
# (instead of the default `run`) shows them green without mounting anything.
#
# The build step is the command the tests and CI build the release binary with
# (`cargo build --release --locked -p prober`), on the toolchain CI uses, from
# the same Cargo.lock. No Docker engine runs in CI, so the image itself is not
# built there; instead tests/tests/it/docker_context.rs assembles this file's
# build context exactly as Docker would (.dockerignore, the COPYs) and runs its
# `cargo build` in it, `.ci/run` checks the compose file with `docker-compose
# config`, and tests/tests/it/deploy.rs checks the build command, user and
# health check.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# Everything the workspace needs (see .dockerignore); migrations are embedded in the binary.
COPY Cargo.toml Cargo.lock ./
COPY prober prober
COPY prober-bench prober-bench
COPY tests tests
COPY migrations migrations
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p prober \
    && install -m 0755 target/release/prober /usr/local/bin/prober

FROM debian:${DEBIAN_RELEASE}-slim
# CA certificates: probes verify TLS against Mozilla's roots and the system's.
# chromium-headless-shell: the browser of `browser:` checks (about 200 MB; an
# image without browser checks may leave it out).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates chromium-headless-shell \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /etc/prober --shell /usr/sbin/nologin prober \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/prober/spool /var/lib/prober/screenshots
COPY --from=build /usr/local/bin/prober /usr/local/bin/prober
COPY --chown=root:root probes /etc/prober/probes
WORKDIR /etc/prober
USER 10001:10001
# Listen on every interface inside the container; `prober healthcheck` reaches it on loopback.
# Results wait for Postgres in the spool (replayed after a crash): mount a volume here.
# Browser checks run Chromium without its sandbox: Docker's default seccomp
# profile denies the user namespaces it needs; the container is the boundary.
ENV PROBER_LISTEN=0.0.0.0:9680 \
    PROBER_PROBES=/etc/prober/probes \
    PROBER_SPOOL_DIR=/var/lib/prober/spool \
    PROBER_SCREENSHOTS_DIR=/var/lib/prober/screenshots \
    PROBER_NO_BROWSER_SANDBOX=true \
    RUST_LOG=info
VOLUME /var/lib/prober/spool
EXPOSE 9680
# No curl in the image: the binary checks its own /healthz (exit 0 healthy, 1 not).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["prober", "healthcheck", "--timeout", "2s"]
ENTRYPOINT ["prober"]
CMD ["run"]
