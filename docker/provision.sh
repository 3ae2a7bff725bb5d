#!/bin/sh
# Runs once inside docker/Dockerfile's `os` stage, as root, on any Debian/Ubuntu base image:
# python:3.11-slim (python present), an nvidia/cuda Ubuntu runtime image or a debootstrapped Debian
# (python installed here with apt). Adds extra CA certificates, the non-root user and the mount points.
#
#   provision.sh CERTS_DIR UID
set -eu

certs_dir=$1
uid=$2

need_apt=""
# The venv needs ensurepip, which Debian and Ubuntu split out of python3 into python3-venv.
if ! python3 -c 'import ensurepip, venv, tomllib' >/dev/null 2>&1; then
  need_apt="python3 python3-venv"
fi
[ -f /etc/ssl/certs/ca-certificates.crt ] || need_apt="$need_apt ca-certificates"
# tini as PID 1 forwards SIGTERM to the CLI and reaps zombies (also where no --init is given, e.g. k8s).
command -v tini >/dev/null 2>&1 || need_apt="$need_apt tini"
if [ -n "$need_apt" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  # shellcheck disable=SC2086  # a list of package names
  apt-get install -y --no-install-recommends $need_apt
  rm -rf /var/lib/apt/lists/*
fi
python3 -c 'import sys, tomllib; assert sys.version_info >= (3, 11)' 2>/dev/null || {
  echo "provision: the base image's python3 ($(python3 --version 2>&1)) is too old: the image needs 3.11+" >&2
  exit 1
}

# Extra CA certificates (a TLS-inspecting proxy's): every *.crt / *.pem file in the build's certs dir,
# bundles included, goes into the system bundle that pip, requests and httpx are pointed at.
found=0
for cert in "$certs_dir"/*.crt "$certs_dir"/*.pem; do
  [ -f "$cert" ] || continue
  found=$((found + 1))
  name=$(basename "$cert")
  mkdir -p /usr/local/share/ca-certificates
  cp "$cert" "/usr/local/share/ca-certificates/tlcr-extra-${name%.*}.crt"
done
if [ "$found" -gt 0 ]; then
  update-ca-certificates >/dev/null
  echo "provision: added $found extra CA certificate file(s)"
fi

useradd --create-home --uid "$uid" --user-group --shell /bin/sh tlcr
# Mount points: named volumes copy this ownership, so the non-root user can write data and runs.
mkdir -p /models /data /runs
chown tlcr:tlcr /models /data /runs
