#!/usr/bin/env bash
# Installs what tests/it/recipes.rs needs to run the docs/clients.md recipes for real: one
# apt-get for the JDK with Apache HttpClient 4.5, Go, Ruby and PHP with curl (only the packages
# not yet installed; `apt-get update` first only if the install fails on stale lists).
set -euo pipefail
cd "$(dirname "$0")/../.."
packages=(default-jdk-headless libhttpclient-java golang-go ruby php-cli php-curl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || { $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
fi
# aiohttp (pinned beside twilio-python, which depends on it) for the Python async recipe, into
# the virtualenv tests/sdk/setup.sh makes; run that first.
if [ -x target/sdk-venv/bin/python ]; then
  target/sdk-venv/bin/pip install --quiet --disable-pip-version-check -r tests/sdk/python/requirements.txt
else
  echo "no target/sdk-venv: run tests/sdk/setup.sh first for the Python async recipe" >&2
fi
echo "clients ready: $(java -version 2>&1 | head -1), $(go version), $(ruby --version | cut -d' ' -f1-2), PHP $(php -r 'echo PHP_VERSION, " curl ", curl_version()["version"];'), aiohttp $(target/sdk-venv/bin/python -c 'import aiohttp; print(aiohttp.__version__)' 2>/dev/null || echo missing)"
