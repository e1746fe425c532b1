#!/usr/bin/env bash
# The Debian package: build it (cargo-deb, the production proxy without the demo), install it
# with dpkg, check what landed (files, modes, the user, `pkcv-proxy --version`, the man page,
# `systemd-analyze verify` on the installed unit and its security score), then purge it.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-deb >/dev/null || cargo install --locked cargo-deb --version 3.8.0
missing=()
command -v man >/dev/null || missing+=(man-db)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v adduser >/dev/null || missing+=(adduser)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

echo "== package: cargo deb, the one command docs/operations.md shows"
# cargo-deb builds the release binary without the demo ([package.metadata.deb]) and takes the
# man page and completions committed under deploy/debian/; it prints the .deb's path last.
deb=$(cargo deb | tail -n 1)
[ -f "$deb" ] || { echo "cargo deb did not name a package: $deb"; exit 1; }
echo "built $deb ($(du -h "$deb" | cut -f1))"

echo "== package: install and check"
dpkg --purge pkcv-proxy >/dev/null 2>&1 || true
dpkg -i "$deb"
fail() { echo "package check failed: $*"; exit 1; }
mode() { stat -c '%a %U:%G' "$1"; }
[ "$(/usr/bin/pkcv-proxy --version)" = "pkcv-proxy $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)" ] \
  || fail "pkcv-proxy --version: $(/usr/bin/pkcv-proxy --version)"
/usr/bin/pkcv-proxy demo --help >/dev/null 2>&1 && fail "the packaged binary has the demo"
getent passwd pkcv-proxy >/dev/null || fail "no pkcv-proxy user"
[ "$(mode /etc/pkcv-proxy/pkcv-proxy.toml)" = "640 root:pkcv-proxy" ] || fail "config mode $(mode /etc/pkcv-proxy/pkcv-proxy.toml)"
[ "$(mode /usr/bin/pkcv-proxy)" = "755 root:root" ] || fail "binary mode"
for file in /usr/share/doc/pkcv-proxy/README.md /usr/share/doc/pkcv-proxy/pkcv-proxy.example.toml \
    /usr/share/doc/pkcv-proxy/docs/error-codes.md /usr/share/bash-completion/completions/pkcv-proxy \
    /usr/share/zsh/vendor-completions/_pkcv-proxy /usr/share/fish/vendor_completions.d/pkcv-proxy.fish \
    /lib/systemd/system/pkcv-proxy.service; do
  [ -f "$file" ] || fail "missing $file"
done
man -w pkcv-proxy >/dev/null || fail "man -w pkcv-proxy finds no page"
[ "$(man -w pkcv-proxy)" = /usr/share/man/man1/pkcv-proxy.1.gz ] || fail "the man page is not gzipped: $(man -w pkcv-proxy)"
# The packaged documentation is the packaged binary's: no demo (the committed files are
# checked against the binary by tests/it/packaging.rs).
zcat /usr/share/man/man1/pkcv-proxy.1.gz | grep -qi 'pkcv-proxy demo' && fail "the man page documents the demo"
grep -q demo /usr/share/bash-completion/completions/pkcv-proxy && fail "the bash completions offer the demo"
# The conffile starts cleanly: no accounts, an accounts_dir that may not exist yet.
/usr/bin/pkcv-proxy check-config -c /etc/pkcv-proxy/pkcv-proxy.toml >/dev/null || fail "the shipped config does not check"
# Keys in AWS KMS are built in: a KMS account fails to load for want of a KMS (nothing listens
# on port 9), not of the feature.
probe=$(mktemp -d)
cat > "$probe/kms.toml" <<'TOML'
[aws_kms]
region = "us-east-1"
endpoint_url = "http://127.0.0.1:9"
sign_timeout_ms = 500

[[accounts]]
account_sid = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
credential_sid = "CRaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
private_key = "aws-kms:alias/probe"
TOML
kms=$(AWS_EC2_METADATA_DISABLED=true AWS_ACCESS_KEY_ID=probe AWS_SECRET_ACCESS_KEY=probe \
  /usr/bin/pkcv-proxy check-config -c "$probe/kms.toml" 2>&1) && fail "a KMS account loaded without a KMS"
rm -rf "$probe"
echo "$kms" | grep -q -- '--features aws-kms' && fail "the packaged binary lacks aws-kms: $kms"
echo "$kms" | grep -q 'aws-kms:alias/probe' || fail "the KMS account's load error does not name the key: $kms"
systemctl is-enabled pkcv-proxy >/dev/null 2>&1 && fail "the unit was enabled by the package"
echo "== package: systemd-analyze verify"
systemd-analyze verify /lib/systemd/system/pkcv-proxy.service
echo "== package: systemd-analyze security"
systemd-analyze security --offline=true /lib/systemd/system/pkcv-proxy.service | tail -n 1

echo "== package: purge"
dpkg --purge pkcv-proxy
[ ! -e /usr/bin/pkcv-proxy ] || fail "the binary is left after purge"
getent passwd pkcv-proxy >/dev/null && fail "the user is left after purge"
echo "package OK"
