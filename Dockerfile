# pkcv-proxy container image: the production proxy (built with --no-default-features: no
# `demo`, no Twilio stand-in) on distroless, running as uid/gid 65532.
#
#   docker build -t pkcv-proxy .
#
#   # One directory holds everything the proxy reads: config/pkcv-proxy.toml, and beside it
#   # what its relative paths name (keys/…, ca/…, accounts/…). It is mounted as a DIRECTORY,
#   # not as single files, so edits and key rotations reach the running proxy (it re-reads
#   # its accounts and key files every reload_interval_ms). A key pair for it:
#   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD/config:/etc/pkcv-proxy" \
#     pkcv-proxy keygen --out-dir keys            # config/keys/pkcv-private.pem (0600)
#
#   docker run -d --name pkcv-proxy --stop-timeout 35 \
#     -p 127.0.0.1:8080:8080 --user "$(id -u):$(id -g)" \
#     -v "$PWD/config:/etc/pkcv-proxy:ro" \
#     pkcv-proxy
#   docker inspect --format '{{.State.Health.Status}}' pkcv-proxy   # starting, then healthy
#
# --stop-timeout 35: on SIGTERM the proxy drains in-flight requests and tunnels for up to
# shutdown_grace_secs (30 s by default) and then exits 0; `docker stop` would SIGKILL it
# after 10 s. (`docker stop -t 35`; Compose: `stop_grace_period: 35s`.)
#
# Do not add further -v mounts BELOW /etc/pkcv-proxy (e.g. -v "$PWD/keys:/etc/pkcv-proxy/keys")
# unless that directory already exists in ./config: Docker cannot create a mount point inside
# a read-only mount and the container fails to start. Put the files in ./config instead, or
# mount them elsewhere (e.g. /run/secrets/pkcv) and name them by absolute path.
#
# The admin port 9090 (/healthz, /readyz, /metrics) listens on the container's loopback for
# the HEALTHCHECK below. To scrape /metrics from outside, add
#   -e PKCV_SERVER__ADMIN_LISTEN=0.0.0.0:9090 -p 127.0.0.1:9090:9090
# (unauthenticated, no secrets; keep it on loopback or a private network).
#
# See deploy/README.md and "Docker" in docs/operations.md.

# ---- build ------------------------------------------------------------------------------
# The same Rust release as the project's CI toolchain; bookworm, to match the glibc of the
# distroless debian12 runtime below. Pin by digest in production (rust:1.95-bookworm@sha256:…).
FROM rust:1.95-bookworm AS builder

# aws-lc-sys (the crypto under aws-lc-rs and rustls) builds its C with the image's gcc (its
# default cc builder): no cmake, no clang, nothing to apt-get.
WORKDIR /src

# Cargo features on top of the production build: keys in AWS KMS by default (docs/aws-kms.md;
# `--build-arg FEATURES=` leaves the AWS SDK out); `--build-arg FEATURES=aws-kms,otlp` adds
# span export over OTLP/HTTP (docs/operations.md, "Span export over OTLP").
ARG FEATURES="aws-kms"

# 1. Dependencies, in a layer of their own: it is rebuilt only when a manifest or the lock
#    file changes. The workspace's manifests must all be present for cargo to load it
#    (crates/standin, crates/bench and crates/fuzz are members), and so must the declared
#    [[bench]] file. The sources are stubs; the stub main panics, so a stale stub binary can
#    never pass the check in step 2.
#    Only the proxy's own package and binary are built, without default features: the
#    stand-in (an optional dependency behind `demo`) and jsonwebtoken are never compiled.
#    (Plain stubs rather than cargo-chef: no extra tool to install and pin, and the recipe
#    is a few empty files.)
COPY Cargo.toml Cargo.lock ./
COPY crates/standin/Cargo.toml crates/standin/Cargo.toml
COPY crates/bench/Cargo.toml crates/bench/Cargo.toml
COPY crates/fuzz/Cargo.toml crates/fuzz/Cargo.toml
COPY benches benches
RUN mkdir -p src crates/standin/src crates/bench/src crates/fuzz/src \
    && printf 'fn main() {\n    panic!("dependency-layer stub");\n}\n' > src/main.rs \
    && : > src/lib.rs \
    && : > crates/standin/src/lib.rs \
    && printf 'fn main() {}\n' > crates/bench/src/main.rs \
    && printf 'fn main() {}\n' > crates/fuzz/src/main.rs \
    && : > crates/fuzz/src/lib.rs \
    && cargo build --release --locked --no-default-features --features "$FEATURES" --package pkcv-proxy --bin pkcv-proxy

# 2. The proxy itself. COPY keeps the files' own modification times, which may be older than
#    the stub build: touch them so cargo rebuilds the proxy rather than keeping the stub.
#    Then check the binary: the real one (not the stub), and without the demo.
COPY src src
COPY crates/standin/src crates/standin/src
# `pkcv-proxy explain` carries the error-code table.
COPY docs/error-codes.md docs/error-codes.md
RUN find src crates/standin/src -type f -exec touch {} + \
    && cargo build --release --locked --no-default-features --features "$FEATURES" --package pkcv-proxy --bin pkcv-proxy \
    && target/release/pkcv-proxy --version \
    && if target/release/pkcv-proxy demo --help >/dev/null 2>&1; then \
         echo "the image binary has the demo: build it with --no-default-features" >&2; exit 1; \
       fi

# ---- run --------------------------------------------------------------------------------
# Distroless: glibc, libgcc and CA certificates; no shell, no package manager, no curl (the
# HEALTHCHECK uses the proxy's own `healthcheck` subcommand). The public web roots the proxy
# trusts are compiled into the binary (webpki-roots). Pin by digest in production.
FROM gcr.io/distroless/cc-debian12:nonroot

LABEL org.opencontainers.image.title="pkcv-proxy" \
      org.opencontainers.image.description="A signing forward proxy for Twilio Public Key Client Validation (PKCV)" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /src/target/release/pkcv-proxy /pkcv-proxy

# The mounted config directory. Relative paths in the config (private_key_file =
# "keys/pkcv-private.pem", accounts_dir = "accounts") resolve against the working directory,
# so they land inside it, next to pkcv-proxy.toml.
WORKDIR /etc/pkcv-proxy

# Inside a container the proxy must listen on all interfaces to be reachable at all; this
# overrides [server] listen from the config file. Without [[clients]] in the config, anyone
# who can reach the port can send requests signed with the configured keys, using their own
# API key: add [[clients]] (proxy credentials, or client certificates on the tls_listen
# listener; docs/operations.md, "Client authentication"), and keep the port unpublished
# (container-to-container only) or published on loopback / a private network only
# (e.g. -p 127.0.0.1:8080:8080).
ENV PKCV_SERVER__LISTEN=0.0.0.0:8080
# The admin listener, on the container's loopback: the HEALTHCHECK runs inside the
# container. Set here (rather than left to the config file) so that `serve` and
# `healthcheck`, which reads no config file here, agree on the address: a PKCV_ variable
# overrides the file. Setting it to "" disables the admin port; run with --no-healthcheck then.
ENV PKCV_SERVER__ADMIN_LISTEN=127.0.0.1:9090

# The proxy port only. 9090 (admin) is optional and not exposed; see the header.
EXPOSE 8080

# distroless "nonroot" (uid/gid 65532), numeric so runAsNonRoot checks can verify it.
USER 65532:65532

# Healthy while GET /readyz on the admin port answers 200: an account can sign and the proxy
# is not draining. Unhealthy with no (loadable) account, and from the first SIGTERM on.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/pkcv-proxy", "healthcheck", "--timeout", "3"]

# SIGTERM: /readyz turns 503, the listener stops accepting, in-flight requests and tunnels
# get shutdown_grace_secs (30 s) to finish, then exit 0; a second signal exits at once. Give
# `docker stop` more than the drain: `docker run --stop-timeout 35` (or `docker stop -t 35`).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/pkcv-proxy"]
CMD ["serve", "--config", "/etc/pkcv-proxy/pkcv-proxy.toml"]
