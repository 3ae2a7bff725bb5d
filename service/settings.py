"""Service settings: one pydantic-settings model, the single definition of every `tlcr serve` option.

`tlcr serve` derives its flags from the fields (core.config_cli): flags win over ``TLCR_*`` environment
variables, which win over a `--config FILE.yaml`, which wins over the defaults. `tlcr serve --help` (or
``python -m tlcr.service --help``) lists every flag with its environment variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tlcr.core.logs import verbosity_of_level
from tlcr.service.schemas import MAX_ITEMS, MAX_OFFSETS, RewardMode

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def public_name(name_or_path: str) -> str:
    """A Hub id as is; a local checkpoint by its directory name only (the server's paths stay private)."""
    path = Path(name_or_path)
    return path.name if path.is_absolute() or name_or_path.startswith((".", "~")) or path.exists() else name_or_path


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TLCR_", extra="ignore",
        env_ignore_empty=True,  # TLCR_API_KEY= (as compose env files write it) means no key, not the key ""
    )

    # What to serve
    model: Annotated[str, Field(description="Discriminator checkpoint: local path or Hub id.")]
    sequence_model: Annotated[str | None, Field(
        description="Optional one-label sequence reward model for POST /sequence_rewards.")] = None
    model_name: Annotated[str | None, Field(
        description="Name reported in responses (default: the --model value).")] = None
    revision: Annotated[str | None, Field(
        description="Revision reported in responses (default: Hub commit, else a fingerprint of the files).")] = None
    device: Annotated[str | None, Field(description="cuda, cuda:1, cpu... (default: CUDA if present).")] = None
    dtype: Annotated[Literal["auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16"], Field(
        description="auto: bf16 (or fp16) on CUDA, fp32 on CPU.")] = "auto"
    torch_threads: Annotated[int | None, Field(ge=1, description="CPU threads for torch (default: torch's).")] = None

    # Network
    host: Annotated[str, Field(description="Interface to bind.")] = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535, description="TCP port (0: any free port).")] = 8000
    fd: Annotated[int | None, Field(description="Serve on this inherited listening socket instead (launcher).")] = None
    api_key: Annotated[SecretStr | None, Field(
        description="If set, inference routes need 'Authorization: Bearer KEY'.")] = None
    allowed_hosts: Annotated[list[str] | None, Field(description=(
        "Host header values accepted (ports ignored; '*': any). Default: loopback names when bound to "
        "loopback without an API key (a guard against DNS rebinding), else any."))] = None
    log_level: Annotated[str, Field(description=(
        "debug, info, warning, error or critical; the global `tlcr -v/-q` wins when given. debug also logs every "
        "request."))] = "info"
    graceful_timeout_s: Annotated[float, Field(
        gt=0, description="On SIGTERM, wait this long for requests in flight.")] = 30.0
    parent_pid: Annotated[int | None, Field(ge=1, description=(
        "Stop as on SIGTERM once this process is no longer the service's parent (the launcher sets it, so a "
        "trainer or demo that dies, even by SIGKILL, leaves no service behind)."))] = None

    # Limits
    max_body_bytes: Annotated[int, Field(ge=1024, description="Largest request body (413 above).")] = 8 * 1024 * 1024
    max_json_values: Annotated[int, Field(ge=600_000, description=(
        "Most JSON values (numbers, strings...) in a body over 1 MiB (413 above, before parsing).") )] = 1_000_000
    max_items_per_request: Annotated[int, Field(ge=1, le=MAX_ITEMS, description=(
        "Most items in one request (422 above).") )] = 256
    max_offsets_per_item: Annotated[int, Field(ge=1, le=MAX_OFFSETS, description=(
        "Most response_offsets spans in one item (422 above).") )] = 16_384
    max_preparing: Annotated[int, Field(ge=1, description=(
        "Most requests tokenized, aligned or decoded at once, in worker threads; others wait their turn.") )] = 4
    max_length: Annotated[int | None, Field(ge=2, description=(
        "Most prompt+response tokens per item (default: the checkpoint's tlcr.max_length).") )] = None
    truncation: Annotated[Literal["none", "prompt_left"], Field(description=(
        "none: too-long items get 422; prompt_left: drop the earliest prompt tokens to fit "
        "(a response longer than max_length is still a 422)."))] = "none"
    request_timeout_s: Annotated[float, Field(
        gt=0, description="A request waiting longer for the model gets 503.")] = 120.0

    # Dynamic batching
    token_budget: Annotated[int, Field(ge=1, description="Most padded tokens in one forward batch.")] = 16384
    max_batch_size: Annotated[int, Field(ge=1, description="Most sequences in one forward batch.")] = 64
    max_wait_ms: Annotated[float, Field(ge=0, description="Longest a sequence waits for batch companions.")] = 50.0
    adaptive_wait: Annotated[bool, Field(description=(
        "Wait for companions at most a quarter of the recent forward time (capped by --max-wait-ms): a few "
        "ms on a GPU, tens on a CPU. --no-adaptive-wait: always wait --max-wait-ms."))] = True
    max_queue_items: Annotated[int, Field(ge=1, description="Most sequences queued; beyond, 503 + Retry-After.")] = 2048
    retry_after_s: Annotated[int, Field(ge=1, description="Retry-After seconds sent with 503.")] = 1

    # Rewards
    default_mode: Annotated[RewardMode, Field(description="Mode of POST /get_reward.")] = RewardMode.continuous
    default_threshold: Annotated[float, Field(
        gt=0.5, le=1.0, description="tau of the fixed mode in /get_reward.")] = 0.6
    get_reward_reduction: Annotated[Literal["sum", "mean"], Field(
        description="How /get_reward turns token rewards into one scalar.")] = "sum"
    get_reward_policy_tokenizer: Annotated[str | None, Field(description=(
        "The policy's tokenizer (path or Hub id): its special tokens (EOS, chat-template end markers) are cut "
        "off the end of each /get_reward query before scoring, as the discriminator tokenizer's own always are; "
        "OpenRLHF decodes queries with them."))] = None
    warmup: Annotated[bool, Field(description="Run a warm-up forward before reporting ready.")] = True
    prefix_sharing: Annotated[bool, Field(description=(
        "Items of one forward batch with the same prompt tokens (GRPO's n responses per prompt, from one "
        "request or several) get the prompt computed once and its KV cache shared. Falls back to whole "
        "sequences, with one log line, for models that cannot. --no-prefix-sharing: always whole."))] = True
    packing: Annotated[bool, Field(description=(
        "The discriminator scores each forward batch packed: its sequences laid end to end in one row, "
        "without padding, so only real tokens are computed. Falls back to padded batches, with one log line, "
        "for models whose attention cannot be packed. --no-packing: always padded."))] = True

    keep_freed_memory: Annotated[bool, Field(description=(
        "Keep memory the forwards free for the next ones instead of returning it to the kernel (glibc's malloc: "
        "allocations up to 32 MiB from the heap, trimmed above 1 GiB free). A forward no longer faults in fresh "
        "pages: 7-23 % faster for batches of 8-64 sequences on CPU (benchmarks/forward_memory.py); memory stays at its "
        "peak. --no-keep-freed-memory: glibc's defaults."))] = True
    forward_process: Annotated[bool, Field(description=(
        "Run the discriminator's forwards in a child process of their own, so HTTP handling and forwards never "
        "wait on each other's GIL (as vLLM splits its API server from its engine core); the sequence reward model "
        "stays in this process. Off by default: on 2 CPU cores it measured within noise of forwards in a worker "
        "thread (docs/benchmarks.md)."))] = False

    @field_validator("model", "sequence_model", "get_reward_policy_tokenizer")
    @classmethod
    def _local_path_exists(cls, value: str | None) -> str | None:
        # A Hub id never starts with '/', '.' or '~': such a value is a local path, checked now rather
        # than after seconds of importing torch.
        if value is not None and value.startswith(("/", ".", "~")) and not Path(value).expanduser().exists():
            raise ValueError(f"checkpoint directory {value!r} does not exist")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        verbosity_of_level(value)  # raises naming the unknown level
        return value.lower()

    @model_validator(mode="after")
    def _consistent_limits(self) -> ServiceSettings:
        if self.max_items_per_request > self.max_queue_items:
            raise ValueError(f"max_items_per_request ({self.max_items_per_request}) must not exceed "
                             f"max_queue_items ({self.max_queue_items}): such a request could never be queued")
        return self

    @property
    def served_model_name(self) -> str:
        """The name in responses: --model-name, else the checkpoint's Hub id or directory name (no path)."""
        return self.model_name or public_name(self.model)

    @property
    def host_allowlist(self) -> list[str] | None:
        """Accepted Host names (lower case), or None for any."""
        if self.allowed_hosts is not None:
            hosts = [h.lower() for h in self.allowed_hosts]
            return None if "*" in hosts else hosts
        if self.api_key is None and self.host in LOOPBACK_HOSTS:
            return list(LOOPBACK_HOSTS)
        return None

