# syntax=docker/dockerfile:1
# Impulse's container image (OCI; Docker with BuildKit, or Podman/Buildah).
#
#   docker build -t impulse .
#       compiles `impulse` in the official Rust image at the pinned toolchain, then copies it
#       into a Debian slim runtime.
#   podman build --build-arg BIN=prebuilt --build-arg BINARY=target/release/impulse -t impulse .
#       skips the compiler and copies a binary built beforehand (for a glibc Linux of the same
#       architecture; Debian 12 or older glibc). CI does this: scripts/container-smoke.sh.
#
# Run it read-only, as its non-root user, with the config mounted read-only:
#   docker run --read-only --cap-drop=ALL -p 8080:8080 -p 8081:8081 \
#     -v "$PWD/impulse.toml:/etc/impulse/impulse.toml:ro" -v impulse-data:/var/lib/impulse impulse
# README.md, "Deploy", says more.

# The toolchain pinned in rust-toolchain.toml (tests/tests/deploy_assets.rs checks they agree).
ARG RUST_VERSION=1.95.0
# The runtime base. A Debian 12 base without network access works when it already has `tini`
# and `ca-certificates` (scripts/container-smoke.sh makes one with debootstrap).
ARG BASE=debian:bookworm-slim
# Where the binary comes from: `builder` (compiled here) or `prebuilt` (BINARY, copied from the
# build context). BuildKit and Podman build only the stages the final one needs.
ARG BIN=builder

# --- builder: compile in the official Rust image -----------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep the registry and the target directory between builds; the binary is
# copied out of the mount, without its debug line tables (72 MB → 18 MB).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p impulse-broker --bin impulse \
    && objcopy --strip-debug target/release/impulse /impulse

# --- prebuilt: a binary from the build context ---------------------------------------------------
FROM scratch AS prebuilt
ARG BINARY=target/release/impulse
COPY ${BINARY} /impulse

# --- the binary the runtime takes: BIN picks the stage above -------------------------------------
FROM ${BIN} AS bin

# --- runtime -------------------------------------------------------------------------------------
FROM ${BASE}
# tini runs as PID 1: it forwards SIGTERM to impulse and reaps orphaned processes (a process
# function's worker may leave grandchildren behind). Impulse itself reaps only its own children,
# through their handles, so that it never takes an exit status one of them waits for.
# ca-certificates: the system roots for https:// function endpoints.
# Versions are Debian 12's current ones, as every other package of the base.
# hadolint ignore=DL3008
RUN if ! command -v tini >/dev/null || [ ! -s /etc/ssl/certs/ca-certificates.crt ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends tini ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && mkdir -p /var/lib/impulse /etc/impulse \
    && chown 10001:10001 /var/lib/impulse \
    && chmod 0750 /var/lib/impulse

COPY --from=bin /impulse /usr/local/bin/impulse
COPY deploy/impulse.toml /etc/impulse/impulse.toml

# A numeric user, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001
# The working directory holds the queue's data (queue.data_dir, default `impulse-data`): the
# one place impulse writes, so the root filesystem can be read-only.
WORKDIR /var/lib/impulse
VOLUME ["/var/lib/impulse"]
ENV HOME=/var/lib/impulse
# 8080: HTTP triggers and Lambda's Invoke API; 8081: /healthz, /readyz, /metrics.
EXPOSE 8080 8081
# impulse drains on SIGTERM (--shutdown-grace, default 30 s) and exits 0; give `docker stop`
# a longer timeout than the grace (`--stop-timeout 35`, compose `stop_grace_period`).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/impulse"]
CMD ["run", "--config", "/etc/impulse/impulse.toml"]
