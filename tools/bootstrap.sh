#!/usr/bin/env bash
# Idempotent set-up for `make test` / `make demo`: Debian packages, .venv, the project.
# A second run installs nothing: each step checks first.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="qgis python3-qgis qgis-providers gdal-bin python3-gdal python3-venv"
VENV=.venv
STAMP=$VENV/.hrmnet-installed

missing=""
for p in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "bootstrap: installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q $missing >/dev/null
  else
    echo "bootstrap: missing Debian packages. Run as root:" >&2
    echo "  sudo apt-get install -y$missing" >&2
    exit 1
  fi
fi

if [ ! -x $VENV/bin/python ]; then
  echo "bootstrap: creating $VENV"
  /usr/bin/python3 -m venv --system-site-packages $VENV
fi

want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ "$(cat $STAMP 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing the project into $VENV"
  links=""
  [ -d /opt/wheels ] && links="--find-links /opt/wheels"
  $VENV/bin/python -m pip install -q $links -c constraints.txt -e '.[test]'
  echo "$want" > $STAMP
fi
