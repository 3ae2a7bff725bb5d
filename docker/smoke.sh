#!/usr/bin/env bash
# End-to-end check of the images and compose files on CPU, running README's / docs/docker.md's commands the
# way a newcomer does: a clean checkout (the working tree's tracked and unignored files, nothing else), a
# .env, empty volumes, no model anywhere:
#
#   docker compose -f docker-compose.yml -f docker-compose.cpu.yml up -d   (builds; the bootstrap service
#       trains the offline demo discriminator into the models volume; the reward service then serves it)
#   curl /readyz, /info (says: demo model), / (heatmap page), POST /token_rewards (checked against the
#       service's pydantic contract, r = 2D - 1)
#   docker compose ... --profile trainer run --rm trainer                  (the default short PPO job)
#   docker compose ... --profile labeling run --rm labeling tlcr label ...  (docs/docker.md's demo labeling)
#   TLCR_MODEL=/models/absent docker compose ... up -d                     (stops with the hint, no loop)
#   docker compose ... --profile trainer down -v
#
# This machine's build inputs go where docs/docker.md says a user puts them: the .env of the checkout
# (base image, torch spec; API key, a random loopback port) and docker/wheels, docker/certs.
#
#   docker/smoke.sh [--keep-running] [--remove-images]
#     --keep-running   leave the stack (project tlcr-smoke) up for inspection; `docker compose -p tlcr-smoke
#                      down -v` later
#     --remove-images  also delete the smoke's images and the base image (default: keep them, the next
#                      run then rebuilds only what changed)
#
# Exit codes: 0 passed, or SKIPPED (no engine could be had: a loud message says why); 1 a check failed.
# Environment:
#   TLCR_DOCKER_CACHE       cache folder: debootstrap rootfs, compose plugin, the checkout (default
#                           /var/cache/tlcr-docker)
#   TLCR_SMOKE_BASE_IMAGE   base image to build on (default: tlcr-base:bookworm from docker/base-image.sh;
#                           python:3.11-slim where a registry is reachable)
#   TLCR_SMOKE_TORCH_WHEEL  a torch CPU wheel for the base image's python (default: searched in pip's
#                           find-links folders; else torch comes from PyTorch's CPU index)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

keep_running=0
remove_images=0
for arg in "$@"; do
  case "$arg" in
    --keep-running) keep_running=1 ;;
    --remove-images) remove_images=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "smoke: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

# Compose settings from the caller's shell would override the smoke's own env file: drop them (the
# script's own TLCR_DOCKER_CACHE / TLCR_SMOKE_* / base-image variables stay).
for name in $(compgen -e); do
  case "$name" in
    TLCR_DOCKER_CACHE | TLCR_SMOKE_* | TLCR_DEBIAN_* | TLCR_REBUILD_BASE) ;;
    TLCR_* | COMPOSE_FILE | COMPOSE_PROFILES | COMPOSE_PROJECT_NAME | COMPOSE_ENV_FILES) unset "$name" ;;
  esac
done

project=tlcr-smoke
cache_dir=${TLCR_DOCKER_CACHE:-/var/cache/tlcr-docker}
checkout="$cache_dir/smoke-checkout"  # the newcomer's clean clone (on the disk: wheels are hard-linked in)
logs=$(mktemp -d /tmp/tlcr-smoke-logs.XXXXXX)
started_dockerd_pid=""
compose=()
passed=0
start_time=$SECONDS

log() { printf '[smoke %4ss] %s\n' "$((SECONDS - start_time))" "$*"; }

skip() {
  echo
  echo "############################################################################################"
  echo "##  DOCKER SMOKE TEST SKIPPED: $*"
  echo "##  Nothing about the images or compose files was checked on this machine."
  echo "############################################################################################"
  echo
  exit 0
}

checks_passed=0

fail() {
  log "FAILED: $*"
  # The plain "N passed, N failed" closing line that CI summaries read.
  echo "docker-smoke: $checks_passed passed, 1 failed"
  exit 1
}

# Runs a step with its output in $logs/NAME.log; on failure shows the log's end and fails the smoke.
step() {
  local name=$1
  shift
  local began=$SECONDS
  if "$@" >"$logs/$name.log" 2>&1; then
    checks_passed=$((checks_passed + 1))
    log "$name: ok ($((SECONDS - began)) s)"
  else
    local rc=$?
    tail -n 60 "$logs/$name.log" | sed "s/^/  $name| /"
    fail "$name exited $rc (log: $logs/$name.log)"
  fi
}

cleanup() {
  local rc=$?
  set +e
  if [ "$rc" -ne 0 ] && [ "${#compose[@]}" -gt 0 ]; then
    local container
    local container service
    for service in bootstrap reward; do
      for container in $("${compose[@]}" ps -aq "$service" 2>/dev/null); do
        log "$service logs (last 40 lines):"
        docker logs --tail 40 "$container" 2>&1 | sed "s/^/  $service| /"
      done
    done
  fi
  if [ "${#compose[@]}" -gt 0 ] && { [ "$keep_running" = 0 ] || [ "$passed" = 0 ]; }; then
    (cd "$checkout" 2>/dev/null &&
      "${compose[@]}" --profile labeling --profile trainer down -v --remove-orphans --timeout 20 >"$logs/down.log" 2>&1)
  fi
  rm -rf "$checkout"
  if [ "$remove_images" = 1 ] && docker info >/dev/null 2>&1; then
    docker image rm -f "$project-service:cpu" "$project-labeling:cpu" "$project-trainer:cpu" tlcr-base:bookworm \
      >/dev/null 2>&1
  fi
  if [ -n "$started_dockerd_pid" ] && [ "$keep_running" = 0 ]; then
    log "stopping the dockerd this script started (pid $started_dockerd_pid)"
    kill "$started_dockerd_pid" 2>/dev/null
    for _ in $(seq 1 30); do kill -0 "$started_dockerd_pid" 2>/dev/null || break; sleep 1; done
  fi
  if [ "$rc" -eq 0 ]; then
    rm -rf "$logs"
  else
    echo "smoke: logs kept in $logs" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

apt_install() {
  command -v apt-get >/dev/null || return 1
  DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -q "$@" >>"$logs/apt.log" 2>&1 && return 0
  timeout 120 apt-get update -q >>"$logs/apt.log" 2>&1 || return 1
  DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -q "$@" >>"$logs/apt.log" 2>&1
}

engine_ready() { timeout 20 docker info >/dev/null 2>&1; }

ensure_engine() {
  if command -v docker >/dev/null && engine_ready; then
    return
  fi
  [ "$(id -u)" = 0 ] || skip "no Docker engine answers and this user is not root, so none can be started"
  if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
    log "installing Debian's docker.io"
    apt_install docker.io || skip "docker.io could not be installed (see $logs/apt.log)"
  fi
  mkdir -p "$cache_dir"
  log "starting dockerd (log: $cache_dir/dockerd.log)"
  # Its own session: a Ctrl-C or CI's timeout signals the smoke's process group, and the engine must
  # outlive those long enough for the cleanup's `compose down`.
  setsid dockerd >"$cache_dir/dockerd.log" 2>&1 </dev/null &
  started_dockerd_pid=$!
  for _ in $(seq 1 60); do
    if engine_ready; then
      return
    fi
    if ! kill -0 "$started_dockerd_pid" 2>/dev/null; then
      started_dockerd_pid=""
      break
    fi
    sleep 1
  done
  tail -n 15 "$cache_dir/dockerd.log" 2>/dev/null | sed 's/^/  dockerd| /'
  skip "dockerd did not start here (cgroups, storage driver or iptables refused; see $cache_dir/dockerd.log)"
}

compose_recent_enough() {
  local version
  version=$(docker compose version --short 2>/dev/null) || return 1
  version=${version#v}
  local major=${version%%.*} rest=${version#*.}
  local minor=${rest%%.*}
  # env_file `required: false` and `!reset` need Compose 2.24.
  [ "$major" -gt 2 ] 2>/dev/null || { [ "$major" -eq 2 ] && [ "$minor" -ge 24 ]; } 2>/dev/null
}

ensure_compose() {
  compose_recent_enough && return
  # Debian 12 packages only Compose v1; Debian 13 (trixie) packages v2 as a static CLI plugin.
  log "installing the Compose v2 plugin from Debian trixie's docker-compose package"
  local apt_dir="$cache_dir/apt-trixie" mirror
  mirror=$("$repo/docker/base-image.sh" --print-mirror)
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/deb"
  echo "deb $mirror trixie main" >"$apt_dir/sources.list"
  local opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache")
  if ! ls "$apt_dir"/deb/docker-compose_2*.deb >/dev/null 2>&1; then
    { timeout 120 apt-get "${opts[@]}" update -q &&
      (cd "$apt_dir/deb" && timeout 300 apt-get "${opts[@]}" download docker-compose); } >>"$logs/apt.log" 2>&1 ||
      skip "the Compose v2 plugin could not be fetched (see $logs/apt.log)"
  fi
  local unpacked
  unpacked=$(mktemp -d)
  dpkg -x "$(find "$apt_dir/deb" -name "docker-compose_2*.deb" | sort -V | tail -n 1)" "$unpacked"
  mkdir -p /usr/local/lib/docker/cli-plugins
  install -m 0755 "$unpacked/usr/libexec/docker/cli-plugins/docker-compose" /usr/local/lib/docker/cli-plugins/
  rm -rf "$unpacked"
  compose_recent_enough || skip "Docker Compose >= 2.24 is not available ($(docker compose version 2>&1 | head -n 1))"
}

# A torch CPU wheel for the base image's python 3.11, so the build never downloads one (let alone CUDA's).
find_torch_wheel() {
  if [ -n "${TLCR_SMOKE_TORCH_WHEEL:-}" ]; then
    echo "$TLCR_SMOKE_TORCH_WHEEL"
    return
  fi
  local dirs="${PIP_FIND_LINKS:-} /opt/wheels"
  if command -v python3 >/dev/null; then
    dirs="$dirs $(python3 -m pip config list 2>/dev/null | sed -n "s/^.*find-links='\(.*\)'$/\1/p" | tr '\n' ' ')"
  fi
  local dir
  for dir in $dirs; do
    dir=${dir#file://}
    [ -d "$dir" ] && ls "$dir"/torch-*+cpu-cp311-cp311-*linux*x86_64.whl 2>/dev/null
  done | sort -V | tail -n 1
}

# The CA bundle pip trusts on this machine (a TLS-inspecting proxy's CA is in it), for pip in the build.
find_ca_bundle() {
  local cert=""
  if command -v python3 >/dev/null; then
    cert=$(python3 -m pip config list 2>/dev/null | sed -n "s/^.*\.cert='\(.*\)'$/\1/p" | head -n 1)
  fi
  for candidate in "$cert" "${PIP_CERT:-}" "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt; do
    if [ -n "$candidate" ] && [ -f "$candidate" ]; then
      echo "$candidate"
      return
    fi
  done
}

# ------------------------------------------------------------------------------------------ engine
ensure_engine
log "engine: $(docker version --format 'server {{.Server.Version}}, client {{.Client.Version}}' 2>/dev/null)"
ensure_compose
log "compose: $(docker compose version --short)"
if ! command -v curl >/dev/null; then
  apt_install curl || fail "curl is missing and could not be installed"
fi

# ------------------------------------------------------------------------------------- clean checkout
# What `git clone` of this working tree gives: tracked and unignored files, no .env, no models/ or .venv.
make_checkout() {
  rm -rf "$checkout"
  mkdir -p "$checkout"
  if git -c safe.directory="$repo" -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # --ignore-failed-read: a tracked file deleted in the working tree is left out, as a commit would.
    git -c safe.directory="$repo" -C "$repo" ls-files -z --cached --others --exclude-standard |
      tar -C "$repo" --null --ignore-failed-read -T - -cf - | tar -C "$checkout" -xf -
  else
    tar -C "$repo" --exclude=.git --exclude=.venv --exclude=.env --exclude=runs --exclude=models --exclude=data \
      -cf - . | tar -C "$checkout" -xf -
  fi
  echo "checkout: $(find "$checkout" -type f | wc -l) files"
}
step checkout make_checkout
cd "$checkout"

# ---------------------------------------------------------------------------- this machine's inputs
base_image=${TLCR_SMOKE_BASE_IMAGE:-tlcr-base:bookworm}
if [ -z "${TLCR_SMOKE_BASE_IMAGE:-}" ]; then
  if ! command -v debootstrap >/dev/null; then
    log "installing Debian's debootstrap"
    apt_install debootstrap || skip "debootstrap could not be installed (see $logs/apt.log)"
  fi
  step base-image env TLCR_DOCKER_CACHE="$cache_dir" "$repo/docker/base-image.sh" "$base_image"
fi

torch_wheel=$(find_torch_wheel)
if [ -n "$torch_wheel" ]; then
  ln -f "$torch_wheel" docker/wheels/ 2>/dev/null || cp "$torch_wheel" docker/wheels/
  torch_version=$(basename "$torch_wheel" | cut -d- -f2)
  torch_spec="torch==$torch_version"
  torch_index=""
  log "torch: local wheel $(basename "$torch_wheel")"
else
  torch_spec="torch==2.13.0"
  torch_index="https://download.pytorch.org/whl/cpu"
  log "torch: no local CPU wheel found; $torch_spec from $torch_index"
fi
ca_bundle=$(find_ca_bundle)
if [ -n "$ca_bundle" ]; then
  cp "$ca_bundle" docker/certs/host-ca-bundle.crt
  log "CA bundle for the build: $ca_bundle"
fi

api_key="smoke-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
# The user's .env (docs/docker.md, "Configure"): only what this machine needs, nothing about models.
cat >.env <<ENV
TLCR_API_KEY=$api_key
TLCR_PUBLISH_PORT=0
TLCR_IMAGE_PREFIX=$project
TLCR_CPU_BASE_IMAGE=$base_image
TLCR_CPU_TORCH_SPEC=$torch_spec
TLCR_CPU_TORCH_INDEX_URL=$torch_index
TLCR_TORCH_THREADS=1
OMP_NUM_THREADS=1
HF_HUB_OFFLINE=1
ENV
# The project name keeps the smoke apart from a `tlcr` stack of the developer's (compose's own variable).
export COMPOSE_PROJECT_NAME=$project
compose=(docker compose -f docker-compose.yml -f docker-compose.cpu.yml)
"${compose[@]}" --profile labeling --profile trainer down -v --remove-orphans --timeout 10 \
  >"$logs/down-before.log" 2>&1 || true
# A fresh machine has no tlcr images, so `up` builds them (from the build cache, where one is kept).
docker image rm "$project-service:cpu" "$project-labeling:cpu" "$project-trainer:cpu" >/dev/null 2>&1 || true

# ------------------------------------------------------------------------------------ up, first run
check_gpu_file() {
  # The default (GPU) file alone: valid, with the GPU reservation of the service and the trainer.
  docker compose --profile labeling --profile trainer config --format json | python3 -c '
import json, sys
services = json.load(sys.stdin)["services"]
gpu = sorted(name for name, s in services.items() if s.get("deploy", {}).get("resources", {}).get("reservations"))
print("services:", sorted(services), "GPU reserved by:", gpu)
assert gpu == ["reward", "trainer"], gpu'
}
step gpu-compose-file check_gpu_file
step up nice -n 10 "${compose[@]}" up -d

wait_ready() {
  local address code=""
  address=$("${compose[@]}" port reward 8000) || return 1
  echo "published on $address"
  case "$address" in 127.0.0.1:*) ;; *) echo "expected a loopback address"; return 1 ;; esac
  echo "http://$address" >"$logs/url"
  for _ in $(seq 1 150); do
    code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 "http://$address/readyz" 2>/dev/null) || true
    [ "$code" = 200 ] && break
    sleep 2
  done
  echo "GET /readyz: $code"
  [ "$code" = 200 ]
}
step readyz wait_ready
url=$(cat "$logs/url")
log "reward service ready at $url"

check_demo_announced() {
  local info
  "${compose[@]}" logs bootstrap reward >"$logs/service.log" 2>&1
  grep -q 'training the offline demo discriminator into /models/demo' "$logs/service.log" || return 1
  grep -q 'serving the offline DEMO' "$logs/service.log" || return 1
  grep -q 'serving the DEMO discriminator' "$logs/service.log" || return 1
  info=$(curl -sS --fail --max-time 10 -H "Authorization: Bearer $api_key" "$url/info") || return 1
  echo "GET /info: $info"
  # /info names the model (never its path): the demo note is what tells it apart
  grep -q '"model":"discriminator"' <<<"$info" && grep -q '"demo":"offline demo' <<<"$info"
}
step demo-announced check_demo_announced

check_pages() {
  local health code
  health=$(docker inspect --format '{{.State.Health.Status}}' "$("${compose[@]}" ps -q reward)")
  echo "container health: $health"
  code=$(curl -sS -o "$logs/index.html" -w '%{http_code}' --max-time 10 "$url/")
  echo "GET /: $code"
  [ "$code" = 200 ] && grep -qi '<html' "$logs/index.html" || return 1
  code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 "$url/healthz")
  echo "GET /healthz: $code"
  [ "$code" = 200 ]
}
step heatmap-page check_pages

request='{"items": [{"prompt": "What is the capital of Veltria?", "response": "The capital of Veltria is Orsk."},
                    {"prompt_token_ids": [5, 6, 7], "response_token_ids": [8, 9, 10, 11]}],
          "return_probabilities": true, "return_tokens": true}'

check_api_key_required() {
  local code
  code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 30 -H 'Content-Type: application/json' \
    -d "$request" "$url/token_rewards")
  echo "POST /token_rewards without the key: $code"
  [ "$code" = 401 ]
}

post_token_rewards() {
  curl -sS --fail-with-body --max-time 60 -H 'Content-Type: application/json' \
    -H "Authorization: Bearer $api_key" -d "$request" "$url/token_rewards" >"$logs/token_rewards.json"
  local rc=$?
  cat "$logs/token_rewards.json"
  return "$rc"
}

step api-key-required check_api_key_required
step post-token-rewards post_token_rewards
run=("${compose[@]}" run --rm --no-deps -T)
# Validated with the project's own pydantic contract, inside the service image.
step check-token-rewards "${run[@]}" reward python -c '
import json, sys
from tlcr.service.schemas import TokenRewardsResponse
body = json.loads(sys.stdin.read())
response = TokenRewardsResponse.model_validate(body)  # the typed HTTP contract
assert response.model == "discriminator", response.model  # a name, never a path
assert response.mode.value == "continuous", response.mode
assert len(response.results) == 2, len(response.results)
assert len(response.results[1].rewards) == 4, "one reward per response token id"
for result in response.results:
    assert result.rewards and len(result.rewards) == len(result.probabilities) == len(result.tokens)
    for r, p in zip(result.rewards, result.probabilities):
        assert -1.0 <= r <= 1.0 and abs(r - (2 * p - 1)) < 1e-4, (r, p)  # r_t = 2 D - 1
print("token rewards:", [[round(r, 3) for r in result.rewards] for result in response.results])
' <"$logs/token_rewards.json"
log "POST /token_rewards: $(grep -o '"rewards":\[[^]]*\]' "$logs/token_rewards.json" | head -n 1 | cut -c1-100)..."

check_image_config() {
  local target health user
  health=$(docker image inspect --format '{{json .Config.Healthcheck.Test}}' "$project-service:cpu")
  echo "service HEALTHCHECK: $health"
  case "$health" in *tlcr-healthcheck*) ;; *) return 1 ;; esac
  for target in service trainer; do
    user=$(docker image inspect --format '{{.Config.User}}' "$project-$target:cpu")
    echo "$target runs as: $user"
    [ "$user" = tlcr ] || return 1
  done
}

# ----------------------------------------------------------------------------- the trainer profile
step ppo "${compose[@]}" --profile trainer run --rm -T trainer
step check-ppo "${run[@]}" trainer python -c '
import json, math
import yaml
steps = yaml.safe_load(open("/models/demo/ppo.yaml", encoding="utf-8"))["num_steps"]
rows = [json.loads(line) for line in open("/runs/ppo/metrics.jsonl", encoding="utf-8")]
assert [r["step"] for r in rows] == list(range(1, steps + 1)), [r.get("step") for r in rows]
assert all(math.isfinite(r["reward/sequence"]) for r in rows), "rewards from the service reached PPO"
print("ppo reward/sequence per step:", [round(r["reward/sequence"], 4) for r in rows])
'
step image-config check_image_config

# Each image carries its own stage's extra only (docs/docker.md "Images"): the service image has no training,
# labeling or plotting packages.
check_stage_packages() {
  local target absent size
  for target in service labeling trainer; do
    case "$target" in
      service) absent="trl datasets pyarrow matplotlib openai accelerate" ;;
      labeling) absent="trl datasets pyarrow matplotlib fastapi accelerate" ;;
      trainer) absent="matplotlib fastapi" ;;
    esac
    size=$(docker image inspect --format '{{.Size}}' "$project-$target:cpu")
    echo "$target image: $(( size / 1000000 )) MB"
    docker run --rm --entrypoint python "$project-$target:cpu" -c '
import sys
from importlib.metadata import PackageNotFoundError, version
present = []
for name in sys.argv[1:]:
    try:
        present.append(f"{name} {version(name)}")
    except PackageNotFoundError:
        pass
print("  none of:", " ".join(sys.argv[1:]) if not present else "")
assert not present, f"packages this stage never imports: {present}"' $absent || return 1
  done
}

# ---------------------------------------------------------------------------- the labeling profile
# The labeling service's default command must still parse (click rejects an unknown option before --help).
check_default_labeling_command() {
  local -a command
  mapfile -t command < <("${compose[@]}" --profile labeling config --format json | python3 -c '
import json, sys
print("\n".join(json.load(sys.stdin)["services"]["labeling"]["command"]))')
  echo "labeling: ${command[*]} --help"
  [ "${#command[@]}" -gt 2 ] || return 1
  "${compose[@]}" --profile labeling run --rm -T labeling "${command[@]}" --help >/dev/null
}
step labeling-default-command check_default_labeling_command
step label "${compose[@]}" --profile labeling run --rm -T labeling tlcr label --source controlled --data-limit 64 \
  --reviser chosen --tokenizer /models/demo/policy --output-file /data/labelled.jsonl --no-progress
step check-labels "${run[@]}" labeling python -c '
import json
rows = [json.loads(line) for line in open("/data/labelled.jsonl", encoding="utf-8")]
ok = [r for r in rows if r["status"] == "ok"]
print(f"{len(rows)} records, {len(ok)} ok")
assert len(ok) >= 32, "too few ok records"
assert all(len(r["rejected_token_ids"]) == len(r["rejected_labels"]) for r in ok)
'

# ------------------------------------------------------------------ configured but missing: a stop
check_configured_model_missing() {
  local rc=0 restarts
  TLCR_MODEL=/models/absent "${compose[@]}" up -d || rc=$?
  echo "up with TLCR_MODEL=/models/absent: exit $rc"
  [ "$rc" -ne 0 ] || return 1
  "${compose[@]}" logs bootstrap >"$logs/bootstrap-missing.log" 2>&1
  cat "$logs/bootstrap-missing.log"
  grep -q 'no model at /models/absent inside the container' "$logs/bootstrap-missing.log" || return 1
  # The reward service never started on the missing model, so it cannot restart in a loop.
  sleep 5
  restarts=$(docker inspect --format '{{.RestartCount}} {{.State.Status}}' "$("${compose[@]}" ps -aq reward)")
  echo "reward: restart count and state: $restarts"
  case "$restarts" in "0 running" | "0 created" | "0 exited") ;; *) return 1 ;; esac
}
step configured-model-missing check_configured_model_missing
step stage-packages check_stage_packages  # after the labeling profile has built its image

# -------------------------------------------------------------------------------------------- down
if [ "$keep_running" = 1 ]; then
  passed=1
  echo "docker-smoke: $checks_passed passed, 0 failed"
  log "PASSED; stack left running: stop it with docker compose -p $project down -v"
  exit 0
fi
check_nothing_left() {
  local leftover
  leftover=$(docker ps -aq --filter "label=com.docker.compose.project=$project")
  leftover="$leftover$(docker volume ls -q --filter "label=com.docker.compose.project=$project")"
  echo "left after down: ${leftover:-nothing}"
  [ -z "$leftover" ]
}
# With the trainer's profile, as README says: else the data and runs volumes of its jobs would stay.
step down "${compose[@]}" --profile trainer down -v --timeout 30
step nothing-left check_nothing_left
# Builds replace the tags of the previous run's images; drop those untagged leftovers (only tlcr's).
docker image prune -f --filter "label=org.opencontainers.image.title=tlcr" >/dev/null 2>&1 || true
if [ -n "$started_dockerd_pid" ]; then
  # An engine this script started (CI's): bound its build cache, which grows a little with every source
  # change, while keeping what the next run reuses (one CPU build needs about 5 GB).
  docker builder prune -f --keep-storage 10GB >/dev/null 2>&1 || true
fi
passed=1
log "PASSED in $((SECONDS - start_time)) s"
echo "docker-smoke: $checks_passed passed, 0 failed"
