#!/bin/sh
# Apply PATCH to the JupyterHub installed in SITE_PACKAGES exactly as it was made: only
# to the release its Applies-To line names, with no fuzz and at no other line, so a
# JupyterHub whose files differ from that release's fails the build instead of
# building with a patch applied in the wrong place.
# Usage: sh apply-patch.sh SITE_PACKAGES PATCH INSTALLED_VERSION
set -eu
want=$(sed -n 's/^Applies-To: jupyterhub //p' "$2")
if [ "$3" != "$want" ]; then
  echo "$2: made for jupyterhub $want, found $3; refresh it or drop it (its header says how)" >&2
  exit 1
fi
if ! out=$(patch --directory="$1" --strip=1 --forward --batch --fuzz=0 \
  --no-backup-if-mismatch --input="$2"); then
  echo "$out"
  exit 1
fi
echo "$out"
if echo "$out" | grep -q offset; then
  echo "$2: applied at other lines than jupyterhub $want has them; refresh it" >&2
  exit 1
fi
