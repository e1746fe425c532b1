#!/usr/bin/env bash
# The container image, built from the unchanged Dockerfile and run as users run it.
#
# This CI reaches no container registry, so the Dockerfile's two base images are stood in for
# by local ones, made once and kept between runs (tagged with exactly the names its FROM
# lines use, so `--pull=never` finds them):
#   - the runtime base (distroless cc-debian12): a Debian bookworm minbase root filesystem with
#     ca-certificates, from the mirror apt on this machine already uses (mmdebstrap);
#   - the builder (rust:1.95-bookworm): that same root filesystem plus gcc and libc6-dev, the
#     host's Rust toolchain of the pinned release, and the host's CA bundle, so that cargo
#     reaches crates.io from inside the build as it does on the host.
# The stand-in runtime base is not distroless (it has a shell and apt), so the image's total
# size would mislead: what is printed is the size the Dockerfile adds on top of its base.
#
# Then the image runs as the Dockerfile's header shows (podman, with Debian's runc): --version;
# keygen into a mounted directory as uid 65532; serve with a read-only root filesystem and the
# config directory (config and keys) mounted read-only; a request through it to the Twilio
# stand-in on the host's loopback, whose signature the stand-in must verify; the image's own
# HEALTHCHECK command healthy; and `podman stop` with a request in flight: the request
# completes, the proxy exits 0, within the documented stop timeout (35 s).
#
# Needs root (buildah/podman/mmdebstrap as root), the workspace's toolchain, curl, python3.
set -euo pipefail
cd "$(dirname "$0")/.."

# Overlay storage: vfs copies every layer in full (one build needed 41 GB).
export STORAGE_DRIVER=overlay
# The stop timeout the Dockerfile's header documents (docker run --stop-timeout 35).
STOP_TIMEOUT=35
IMAGE=localhost/pkcv-proxy:ci

missing=()
for tool in buildah podman mmdebstrap runc; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
command -v newuidmap >/dev/null || missing+=(uidmap)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# ---- timing and cleanup -------------------------------------------------------------------
stage_name="" stage_start=$SECONDS started=$SECONDS
timings=()
stage() {
  if [ -n "$stage_name" ]; then timings+=("$(printf '%5d s  %s' $((SECONDS - stage_start)) "$stage_name")"); fi
  stage_name=$1 stage_start=$SECONDS
  [ -z "$1" ] || echo "== image: $1"
}

work=$(mktemp -d /tmp/pkcv-image.XXXXXX)
container="pkcv-image-ci-$$"
standin_pid="" curl_pid="" builder_ctr=""
cleanup() {
  podman rm -f -t 0 "$container" >/dev/null 2>&1 || true
  [ -z "$builder_ctr" ] || buildah rm "$builder_ctr" >/dev/null 2>&1 || true
  [ -z "$curl_pid" ] || kill "$curl_pid" 2>/dev/null || true
  [ -z "$standin_pid" ] || kill "$standin_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "image check failed: $*" >&2; exit 1; }

[ "$(podman info --format '{{.Store.GraphDriverName}}')" = overlay ] || fail "podman storage is not overlay"

# ---- stand-in base images -----------------------------------------------------------------
# The names exactly as the Dockerfile's FROM lines give them; a short Docker Hub name is stored
# under its full docker.io/library/ name, which is where a short-name lookup finds it.
builder_name=$(sed -n 's/^FROM \([^ ]*\) AS builder$/\1/p' Dockerfile)
runtime_name=$(sed -n 's/^FROM \([^ ]*\)$/\1/p' Dockerfile | tail -n 1)
[ -n "$builder_name" ] && [ -n "$runtime_name" ] || fail "cannot read the FROM lines of the Dockerfile"
qualify() {
  case "$1" in
    */*) case "${1%%/*}" in *.* | *:* | localhost) echo "$1" ;; *) echo "docker.io/$1" ;; esac ;;
    *) echo "docker.io/library/$1" ;;
  esac
}
builder_base=$(qualify "$builder_name")
runtime_base=$(qualify "$runtime_name")
standin_label=org.pkcv-proxy.ci-stand-in

stage "runtime base stand-in ($runtime_base)"
if podman image exists "$runtime_base"; then
  echo "cached"
else
  # The Debian mirror apt on this machine uses (its sources.list), no other.
  mirror=$(apt-get indextargets --format '$(REPO_URI)' 'Release: bookworm' 'Identifier: Packages' | head -n 1)
  [ -n "$mirror" ] || fail "apt has no bookworm source to give mmdebstrap"
  timeout 20m mmdebstrap --quiet --variant=minbase --include=ca-certificates \
    bookworm "$work/rootfs.tar" "deb $mirror bookworm main"
  podman import --quiet --change "LABEL $standin_label=runtime" \
    --change 'CMD ["/bin/sh"]' "$work/rootfs.tar" "$runtime_base" >/dev/null
  rm -f "$work/rootfs.tar"
fi

stage "builder stand-in ($builder_base)"
if podman image exists "$builder_base"; then
  echo "cached"
else
  # The host toolchain of the release the Dockerfile pins (rust:1.95-… → rustc 1.95.x).
  release=${builder_name#*:}
  release=${release%%-*}
  sysroot=""
  for candidate in "$(rustc --print sysroot)" "${RUSTUP_HOME:-$HOME/.rustup}"/toolchains/*; do
    if "$candidate/bin/rustc" --version 2>/dev/null | grep -q "^rustc $release\."; then
      sysroot=$candidate
      break
    fi
  done
  [ -n "$sysroot" ] || fail "no Rust $release toolchain on this machine for the builder stand-in"
  version=$("$sysroot/bin/rustc" --version | cut -d' ' -f2)
  toolchain=/usr/local/rustup/toolchains/$version-x86_64-unknown-linux-gnu
  builder_ctr=$(buildah from --quiet --pull=never "$runtime_base")
  timeout 15m buildah run --isolation chroot --network host "$builder_ctr" -- sh -c \
    'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null && rm -rf /var/lib/apt/lists/*'
  mnt=$(buildah mount "$builder_ctr")
  mkdir -p "$mnt$toolchain" "$mnt/usr/local/cargo/bin"
  # Binaries and libraries; not the 800 MB of documentation under share/.
  cp -a "$sysroot/bin" "$sysroot/lib" "$mnt$toolchain/"
  for tool in cargo rustc rustdoc; do
    ln -s "$toolchain/bin/$tool" "$mnt/usr/local/cargo/bin/$tool"
  done
  cp /etc/ssl/certs/ca-certificates.crt "$mnt/etc/ssl/certs/ca-certificates.crt"
  buildah umount "$builder_ctr" >/dev/null
  # The environment rust:*-bookworm sets.
  buildah config --label "$standin_label=builder" \
    --env RUSTUP_HOME=/usr/local/rustup --env CARGO_HOME=/usr/local/cargo \
    --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env RUST_VERSION="$version" "$builder_ctr"
  buildah commit --quiet --rm --format docker "$builder_ctr" "$builder_base" >/dev/null
  builder_ctr=""
fi

# ---- the build ----------------------------------------------------------------------------
stage "buildah bud (the unchanged Dockerfile)"
# --layers: the dependency layer is reused when only sources change. --format docker: OCI
# drops HEALTHCHECK.
timeout 40m buildah bud --pull=never --isolation=chroot --network=host --format docker --layers \
  -t "$IMAGE" . 2>&1 | tee "$work/build.log"
cached=$(grep -c -- '--> Using cache' "$work/build.log" || true)
echo "steps from cache: $cached"

image_size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
base_size=$(podman image inspect --format '{{.Size}}' "$runtime_base")
added=$((image_size - base_size))
echo "the Dockerfile adds $(awk -v b="$added" 'BEGIN { printf "%.1f MB", b / 1e6 }') to its base ($added bytes)"
[ "$(podman image inspect --format '{{.Config.User}}' "$IMAGE")" = 65532:65532 ] || fail "the image does not run as 65532:65532"
podman image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE" | grep -q healthcheck \
  || fail "the image has no HEALTHCHECK (built as OCI?)"

# ---- run it as users do -------------------------------------------------------------------
run=(podman run --runtime runc --ulimit nofile=4096:4096 --ulimit nproc=4096:4096)
# podman schedules a HEALTHCHECK with a systemd timer, and this CI has no systemd: every run of
# the image logs that it cannot add one. Here the check is run on demand instead (`podman
# healthcheck run` below); the one-shot commands run without it, the rest drop that line.
no_timer() { grep -v 'unable to get systemd connection' >&2 || true; }

stage "run: --version, keygen as uid 65532 into a mounted directory"
want="pkcv-proxy $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
got=$(timeout 60 "${run[@]}" --rm --no-healthcheck "$IMAGE" --version)
[ "$got" = "$want" ] || fail "--version says '$got', not '$want'"
echo "$got"
config=$work/config
mkdir -m 700 "$config"
chown 65532:65532 "$config"
timeout 60 "${run[@]}" --rm --no-healthcheck --user 65532:65532 -v "$config:/etc/pkcv-proxy" \
  "$IMAGE" keygen --out-dir keys >"$work/keygen.out" 2>&1 || fail "keygen: $(cat "$work/keygen.out")"
[ "$(stat -c '%a %u' "$config/keys/pkcv-private.pem")" = "600 65532" ] \
  || fail "keygen's private key is $(stat -c '%a %u' "$config/keys/pkcv-private.pem"), not 600 65532"
[ -s "$config/keys/pkcv-public.pem" ] || fail "keygen wrote no public key"

stage "run: keys in AWS KMS are built in (the Dockerfile's FEATURES default)"
# A KMS account fails to load for want of a KMS (nothing listens on port 9), not of the feature.
probe=$work/probe
mkdir -m 755 "$probe"
printf '%s\n' '[aws_kms]' 'region = "us-east-1"' 'endpoint_url = "http://127.0.0.1:9"' \
  'sign_timeout_ms = 500' '' '[[accounts]]' 'account_sid = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"' \
  'credential_sid = "CRaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"' 'private_key = "aws-kms:alias/probe"' \
  >"$probe/kms.toml"
chmod 644 "$probe/kms.toml"
kms=$(timeout 60 "${run[@]}" --rm --no-healthcheck -v "$probe:/probe:ro" \
  -e AWS_EC2_METADATA_DISABLED=true -e AWS_ACCESS_KEY_ID=probe -e AWS_SECRET_ACCESS_KEY=probe \
  "$IMAGE" check-config -c /probe/kms.toml 2>&1) && fail "a KMS account loaded without a KMS"
echo "$kms" | grep -q -- '--features aws-kms' && fail "the image lacks aws-kms: $kms"
echo "$kms" | grep -q 'aws-kms:alias/probe' || fail "the KMS account's load error does not name the key: $kms"
echo "aws-kms: built in"

stage "run: serve (read-only root, config and keys read-only) against the stand-in"
sid() { echo "$1$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"; }
account_sid=$(sid AC) credential_sid=$(sid CR) api_key_sid=$(sid SK)
secret=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
timeout 10m cargo build --locked --quiet -p pkcv-standin --example serve
# Every answer held back 3 s: the request sent before `podman stop` below is still in flight.
STANDIN_ACCOUNT_SID=$account_sid STANDIN_CREDENTIAL_SID=$credential_sid \
  STANDIN_API_KEY_SID=$api_key_sid STANDIN_API_KEY_SECRET=$secret \
  STANDIN_PUBLIC_KEY=$config/keys/pkcv-public.pem STANDIN_CA_FILE=$config/standin-ca.pem \
  STANDIN_DELAY_MS=3000 target/debug/examples/serve >"$work/standin.out" 2>&1 &
standin_pid=$!
for _ in $(seq 100); do
  grep -q '^listening ' "$work/standin.out" && break
  kill -0 "$standin_pid" 2>/dev/null || fail "the stand-in exited: $(cat "$work/standin.out")"
  sleep 0.1
done
standin_addr=$(sed -n 's/^listening //p' "$work/standin.out")
[ -n "$standin_addr" ] || fail "the stand-in did not start within 10 s"
read -r port admin_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
cat >"$config/pkcv-proxy.toml" <<EOF
[upstream]
# Every Twilio host dialled at the stand-in on the host's loopback, trusting its CA.
connect_to = { "twilio.com" = "$standin_addr", "*.twilio.com" = "$standin_addr" }
extra_ca_file = "standin-ca.pem"

[[accounts]]
account_sid = "$account_sid"
credential_sid = "$credential_sid"
private_key_file = "keys/pkcv-private.pem"
EOF
chown -R 65532:65532 "$config"
# --network host: the container reaches the stand-in on 127.0.0.1; the listeners are moved off
# 8080/9090 (shared with the host there) by the same PKCV_ variables a user sets.
"${run[@]}" -d --name "$container" --network host --read-only --user 65532:65532 \
  --stop-timeout "$STOP_TIMEOUT" -v "$config:/etc/pkcv-proxy:ro" \
  -e PKCV_SERVER__LISTEN="127.0.0.1:$port" -e PKCV_SERVER__ADMIN_LISTEN="127.0.0.1:$admin_port" \
  "$IMAGE" >/dev/null 2> >(no_timer)

# The image's HEALTHCHECK command, run in the container as Docker would; healthy once an
# account can sign (within the HEALTHCHECK's 20 s start period).
healthy=""
for _ in $(seq 40); do
  if timeout 10 podman healthcheck run "$container" >/dev/null 2>&1; then healthy=yes; break; fi
  [ "$(podman inspect --format '{{.State.Running}}' "$container")" = true ] \
    || fail "the container exited: $(podman logs --tail 20 "$container" 2>&1)"
  sleep 0.5
done
[ -n "$healthy" ] || fail "the HEALTHCHECK did not turn healthy within 20 s: $(podman logs --tail 20 "$container" 2>&1)"
echo "HEALTHCHECK: healthy"

# A plain API-key request, base URL = the proxy (default host api.twilio.com); the secret goes
# to curl on stdin, never on a command line.
request() {
  printf 'user = "%s:%s"\n' "$api_key_sid" "$secret" | curl -sS --max-time 30 -K - \
    -o "$1" -w '%{http_code}' "http://127.0.0.1:$port/2010-04-01/Accounts/$account_sid.json"
}
status=$(request "$work/first.json") || fail "the request through the container failed"
[ "$status" = 200 ] || fail "the request through the container answered $status: $(head -c 300 "$work/first.json")"
grep -q "\"$account_sid\"" "$work/first.json" || fail "the answer is not the stand-in's account: $(head -c 300 "$work/first.json")"
echo "signed request through the container: 200, verified by the stand-in"

stage "run: podman stop with a request in flight (drain, exit 0, within ${STOP_TIMEOUT} s)"
request "$work/draining.json" >"$work/draining.status" 2>&1 &
curl_pid=$!
sleep 1
stop_start=$SECONDS
timeout $((STOP_TIMEOUT + 15)) podman stop "$container" >/dev/null 2> >(no_timer)
stopped_after=$((SECONDS - stop_start))
wait "$curl_pid" || fail "the in-flight request failed during the drain: $(cat "$work/draining.status")"
curl_pid=""
[ "$(cat "$work/draining.status")" = 200 ] || fail "the in-flight request answered $(cat "$work/draining.status")"
exit_code=$(podman inspect --format '{{.State.ExitCode}}' "$container")
[ "$exit_code" = 0 ] || fail "the proxy exited $exit_code on podman stop: $(podman logs --tail 20 "$container" 2>&1)"
[ "$stopped_after" -lt "$STOP_TIMEOUT" ] || fail "podman stop took ${stopped_after} s (stop timeout ${STOP_TIMEOUT} s)"
echo "stopped in ${stopped_after} s, exit 0, the in-flight request completed"

# The stand-in's own count: both requests verified, none rejected (its exit status).
kill -TERM "$standin_pid"
standin_status=0
timeout 10 tail --pid="$standin_pid" -f /dev/null || true
wait "$standin_pid" || standin_status=$?
standin_pid=""
tail -n 1 "$work/standin.out"
[ "$standin_status" = 0 ] || fail "the stand-in verified nothing or rejected a request"
grep -q '^verified 2 rejected 0$' "$work/standin.out" || fail "the stand-in did not verify exactly the two requests"

stage ""
echo "== image: times"
printf '%s\n' "${timings[@]}"
printf '%5d s  total\n' $((SECONDS - started))
echo "image OK"
