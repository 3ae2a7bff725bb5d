#!/usr/bin/env bash
# Builds a local Debian base image with debootstrap, for machines that reach Debian's archive but no
# image registry (python:3.11-slim and the CUDA images cannot be pulled there).
#
#   docker/base-image.sh [IMAGE]        (default IMAGE: tlcr-base:bookworm)
#   docker/base-image.sh --print-mirror  print the Debian mirror it would use, and exit
#
# Environment:
#   TLCR_DOCKER_CACHE    where the rootfs tarball is kept between runs (default /var/cache/tlcr-docker)
#   TLCR_DEBIAN_SUITE    Debian suite (default bookworm: its python3.11 matches cp311 wheels)
#   TLCR_DEBIAN_MIRROR   archive URL (default: the first Debian mirror in /etc/apt/sources.list*,
#                        else http://deb.debian.org/debian)
#   TLCR_DEBIAN_SECURITY_MIRROR  security archive URL (default: deb.debian.org's when the mirror is it)
#   TLCR_REBUILD_BASE=1  ignore the cached tarball and the existing image
#
# The image is only a minimal Debian userland: docker/Dockerfile installs python3 into it with apt.
set -euo pipefail

image=${1:-tlcr-base:bookworm}
suite=${TLCR_DEBIAN_SUITE:-bookworm}
cache_dir=${TLCR_DOCKER_CACHE:-/var/cache/tlcr-docker}
tarball="$cache_dir/rootfs-$suite-minbase.tar"

log() { echo "[base-image] $*" >&2; }

debian_mirror() {
  if [ -n "${TLCR_DEBIAN_MIRROR:-}" ]; then
    echo "$TLCR_DEBIAN_MIRROR"
    return
  fi
  # deb822 "URIs:" lines and one-line "deb URI suite" entries; the security archive has no base system.
  local uri
  uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | sed -n -e 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' -e 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*\).*/\2/p' \
    | grep -E '/debian/?$' | grep -v -- '-security' | head -n 1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

if [ "$image" = --print-mirror ]; then
  debian_mirror
  exit 0
fi

if [ "${TLCR_REBUILD_BASE:-0}" != 1 ] && docker image inspect "$image" >/dev/null 2>&1; then
  log "$image already present"
  exit 0
fi

if [ "${TLCR_REBUILD_BASE:-0}" = 1 ] || [ ! -s "$tarball" ]; then
  command -v debootstrap >/dev/null || {
    log "debootstrap is not installed (apt-get install -y debootstrap)"
    exit 1
  }
  mirror=$(debian_mirror)
  mkdir -p "$cache_dir"
  rootfs=$(mktemp -d "$cache_dir/rootfs.XXXXXX")
  trap 'rm -rf "$rootfs" "$tarball.partial"' EXIT
  log "debootstrap --variant=minbase $suite from $mirror (about a minute)"
  nice -n 10 debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$cache_dir/debootstrap.log" 2>&1 || {
    tail -n 20 "$cache_dir/debootstrap.log" >&2
    log "debootstrap failed; full log: $cache_dir/debootstrap.log"
    exit 1
  }
  # Updates and security fixes: the security archive is a separate tree that local mirrors often lack.
  security=${TLCR_DEBIAN_SECURITY_MIRROR:-}
  case "$mirror" in */deb.debian.org/debian | */deb.debian.org/debian/) security=${security:-http://deb.debian.org/debian-security} ;; esac
  {
    echo "deb $mirror $suite main"
    echo "deb $mirror $suite-updates main"
    [ -z "$security" ] || echo "deb $security $suite-security main"
  } >"$rootfs/etc/apt/sources.list"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
  # Written to a side file first so that an interrupted run never leaves a truncated tarball in the cache.
  tar -C "$rootfs" --numeric-owner -cf "$tarball.partial" .
  mv "$tarball.partial" "$tarball"
  log "cached rootfs in $tarball"
fi

docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  "$tarball" "$image" >/dev/null
log "imported $image from $tarball"
