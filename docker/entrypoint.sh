#!/bin/sh
# Entrypoint of every tlcr image.
#  - Secrets from files: X_API_KEY_FILE=/run/secrets/x (or X_TOKEN_FILE) sets X_API_KEY (X_TOKEN) from
#    that file (docker/compose secrets), so keys need not sit in the environment `docker inspect` shows.
#  - `docker run IMAGE serve ...` is short for `docker run IMAGE tlcr serve ...`.
#  - `tlcr serve` with a local model path that is missing fails at once with a hint about the mount.
set -eu

for assignment in $(env | sed -n 's/^\([A-Z0-9_]*_\(API_KEY\|TOKEN\)_FILE\)=.*/\1/p'); do
  name=${assignment%_FILE}
  eval "file=\${$assignment}"
  # shellcheck disable=SC2154  # set by the eval above
  if [ ! -r "$file" ]; then
    echo "tlcr-entrypoint: $assignment=$file: file not found or not readable" >&2
    exit 2
  fi
  eval "current=\${$name:-}"
  # shellcheck disable=SC2154
  if [ -n "$current" ]; then
    echo "tlcr-entrypoint: both $name and $assignment are set: keep one" >&2
    exit 2
  fi
  value=$(cat "$file")
  export "$name=$value"
  unset "$assignment"
done

if [ "$#" -eq 0 ]; then
  set -- tlcr --help
elif ! command -v "$1" >/dev/null 2>&1; then
  set -- tlcr "$@"
fi

if [ "$1" = tlcr ] && [ "${2:-}" = serve ]; then
  model=${TLCR_MODEL:-}
  previous=""
  for arg in "$@"; do
    case "$previous" in --model) model=$arg ;; esac
    case "$arg" in --model=*) model=${arg#--model=} ;; esac
    previous=$arg
  done
  case "$model" in
    /*)
      if [ ! -e "$model" ]; then
        echo "tlcr-entrypoint: no model at $model inside the container." >&2
        echo "  Mount your discriminator checkpoint there (compose: TLCR_MODELS_DIR=/host/dir, the" >&2
        echo "  checkpoint in /host/dir/discriminator) or point TLCR_MODEL at it; see docs/docker.md." >&2
        echo "  /models holds: $(find /models -mindepth 1 -maxdepth 1 -printf '%f ' 2>/dev/null)" >&2
        exit 2
      fi
      ;;
  esac
fi

exec "$@"
