#!/usr/bin/env bash
# Installs the pinned official Twilio SDKs for tests/it/sdk.rs: twilio-python into a virtualenv
# at target/sdk-venv, twilio-node into tests/sdk/node/node_modules (from package-lock.json).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -x target/sdk-venv/bin/python ]; then
  mkdir -p target
  python3 -m venv target/sdk-venv
fi
target/sdk-venv/bin/pip install --quiet --disable-pip-version-check -r tests/sdk/python/requirements.txt
(cd tests/sdk/node && npm ci --no-audit --no-fund --loglevel=error)
echo "SDKs ready: $(target/sdk-venv/bin/python -c 'import twilio; print("twilio-python", twilio.__version__)'), twilio-node $(node -p 'require("./tests/sdk/node/node_modules/twilio/package.json").version')"
