# pkcv-proxy container image.
#
#   docker build -t pkcv-proxy .
#   docker run --rm -p 127.0.0.1:8080:8080 --user "$(id -u):$(id -g)" \
#     -v "$PWD/config/pkcv-proxy.toml:/etc/pkcv-proxy/pkcv-proxy.toml:ro" \
#     -v "$PWD/keys/pkcv-private.pem:/etc/pkcv-proxy/keys/pkcv-private.pem:ro" \
#     pkcv-proxy
#
# See "Docker" in README.md.

# ---- build ------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder

# aws-lc-sys (the crypto under aws-lc-rs and rustls) compiles C with the cc toolchain this
# image already has; cmake is installed so its CMake build path is available too.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .
RUN cargo build --release --locked

# ---- run --------------------------------------------------------------------------------
# Distroless: glibc, libgcc and CA certificates, no shell, no package manager. The public web
# roots the proxy trusts are compiled into the binary (webpki-roots).
FROM gcr.io/distroless/cc-debian12:nonroot

COPY --from=builder /src/target/release/pkcv-proxy /pkcv-proxy

# Relative paths in the config (private_key_file = "keys/pkcv-private.pem") resolve against
# the working directory, so they land next to the mounted config file.
WORKDIR /etc/pkcv-proxy

# Inside a container the proxy must listen on all interfaces to be reachable at all; this
# overrides [server] listen from the config file. The proxy does not authenticate its
# clients: anyone who can reach the port can send requests signed with the configured keys,
# using their own API key. Keep the port unpublished (container-to-container only), or
# publish it on loopback / a private network only (e.g. -p 127.0.0.1:8080:8080).
ENV PKCV_SERVER__LISTEN=0.0.0.0:8080
EXPOSE 8080

# distroless "nonroot" (uid/gid 65532), numeric so runAsNonRoot checks can verify it.
USER 65532:65532

# SIGTERM stops accepting and drains in-flight requests for up to 30 s; `docker stop`
# waits only 10 s unless given -t 30.
ENTRYPOINT ["/pkcv-proxy"]
CMD ["serve", "--config", "/etc/pkcv-proxy/pkcv-proxy.toml"]
