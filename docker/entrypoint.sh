#!/bin/sh
# Entrypoint of every tlcr image.
#  - Secrets from files: X_API_KEY_FILE=/run/secrets/x (or X_TOKEN_FILE) sets X_API_KEY (X_TOKEN) from
#    that file (docker/compose secrets), so keys need not sit in the environment `docker inspect` shows.
#  - `docker run IMAGE serve ...` is short for `docker run IMAGE tlcr serve ...`.
#  - `tlcr serve` serves --model or TLCR_MODEL when given (a local path that is missing fails at once with a
#    hint about the mount, never replaced by another model); with neither, /models/discriminator if
#    present, else the offline demo model in /models/demo (announced loudly), else it fails with the hint.
#  - `bootstrap` (compose's one-shot service): checks a configured TLCR_MODEL exists; with none configured
#    and nothing at /models/discriminator, trains the demo model into /models/demo (`tlcr bootstrap-model`).
# TLCR_DEFAULT_MODEL and TLCR_DEMO_DIR move those two places (default /models/discriminator, /models/demo).
set -eu

default_model=${TLCR_DEFAULT_MODEL:-/models/discriminator}
demo_dir=${TLCR_DEMO_DIR:-/models/demo}

# Exit 2 with the fix when the local checkpoint path $1 is missing (a Hub id is not checked here).
require_model() {
  case "$1" in
    /*) ;;
    *) return 0 ;;
  esac
  [ ! -e "$1" ] || return 0
  echo "tlcr-entrypoint: no model at $1 inside the container." >&2
  echo "  Mount your discriminator checkpoint there (compose: TLCR_MODELS_DIR=/host/dir, the" >&2
  echo "  checkpoint in /host/dir/discriminator) or point TLCR_MODEL at it; see docs/docker.md." >&2
  if [ "$1" = "$default_model" ]; then
    echo "  Or leave TLCR_MODEL unset and let \`docker compose up\` train the offline demo model first." >&2
  fi
  echo "  /models holds: $(find /models -mindepth 1 -maxdepth 1 -printf '%f ' 2>/dev/null)" >&2
  exit 2
}

if [ "${1:-}" = bootstrap ]; then
  shift
  if [ -n "${TLCR_MODEL:-}" ]; then
    require_model "$TLCR_MODEL"
    echo "tlcr-entrypoint: TLCR_MODEL=$TLCR_MODEL is configured: no demo model needed"
    exit 0
  fi
  if [ -e "$default_model" ]; then
    echo "tlcr-entrypoint: $default_model is present: no demo model needed"
    exit 0
  fi
  echo "tlcr-entrypoint: no TLCR_MODEL configured and nothing at $default_model: the service will serve the"
  echo "  offline DEMO discriminator from $demo_dir (trained once, about a minute on CPU; docs/docker.md)"
  exec tlcr bootstrap-model --output-dir "$demo_dir" "$@"
fi

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
  if [ -n "$model" ]; then
    require_model "$model"
  elif [ -e "$default_model" ] || [ ! -f "$demo_dir/discriminator/config.json" ]; then
    require_model "$default_model"
    export TLCR_MODEL="$default_model"
  else
    export TLCR_MODEL="$demo_dir/discriminator"
    echo "tlcr-entrypoint: no TLCR_MODEL configured and nothing at $default_model: serving the offline DEMO" >&2
    echo "  discriminator $TLCR_MODEL (a tiny model of the controlled task, not for real RLHF). Put your" >&2
    echo "  checkpoint at $default_model or set TLCR_MODEL to serve it instead; see docs/docker.md." >&2
  fi
fi

exec "$@"
