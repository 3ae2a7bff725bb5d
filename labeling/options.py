"""The options of `tlcr label`: one dataclass (help metadata), from which core.config_cli derives the command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tlcr.core.data.pair_options import PairsOptions
from tlcr.labeling.filters import FilterConfig


@dataclass(kw_only=True)
class LabelOptions(PairsOptions):
    output_file: Path = field(metadata={
        "help": "Output JSONL of labelled records (appended to and resumed if it exists)."})
    tokenizer: str = field(metadata={
        "help": "The discriminator's tokenizer (Hub name or local path); token ids and labels use it."})
    source: str = field(default="controlled", metadata={
        "help": "Pairs: 'controlled', a local .jsonl/.jsonl.gz (HH-RLHF or {prompt, chosen, rejected}), or a Hub "
                "id. With --reviser given: a .jsonl/.jsonl.gz/.json file carrying revisions."})
    reviser: Literal["chosen", "given", "openai"] = field(default="chosen", metadata={
        "help": "chosen (offline: revision = chosen response), given (revisions in --source), or openai "
                "(an OpenAI-compatible endpoint)."})
    reviser_model: str | None = field(default=None, metadata={"help": "openai: model name at the endpoint."})
    base_url: str | None = field(default=None, metadata={
        "help": "openai: endpoint base URL, e.g. http://localhost:8000/v1 (default: $OPENAI_BASE_URL or OpenAI)."})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={
        "help": "openai: environment variable holding the API key."})
    concurrency: int = field(default=8, metadata={"help": "Reviser calls in flight at once."})
    workers: int | None = field(default=None, metadata={
        "help": "openai: processes making the calls and labelling, each with an equal share of --concurrency; "
                "1 = all in this process (default: one per 64 calls in flight, at most one per CPU)."})
    worker_start: Literal["fork", "spawn"] | None = field(default=None, metadata={
        "help": "openai, --workers > 1: fork (copies of this process, ready in milliseconds; the default on "
                "Linux) or spawn (fresh interpreters, ~1.1-1.4 s of CPU each to import openai and transformers; "
                "the default elsewhere)."})
    timeout: float = field(default=120.0, metadata={"help": "openai: deadline of one call, seconds."})
    max_retries: int = field(default=6, metadata={"help": "openai: retries on 429 / 5xx / timeouts per pair."})
    backoff: float = field(default=1.0, metadata={"help": "openai: first backoff in seconds, doubled each retry."})
    max_backoff: float = field(default=60.0, metadata={"help": "openai: longest backoff, seconds."})
    temperature: float = field(default=0.0, metadata={"help": "openai: sampling temperature."})
    max_tokens: int | None = field(default=None, metadata={
        "help": "openai: completion token limit (default: the endpoint's)."})
    reviser_context_length: int | None = field(default=None, metadata={
        "help": "openai: the reviser's context length in tokens (default: what the endpoint's /v1/models reports, "
                "as vLLM does); pairs whose request cannot fit are not sent but recorded failed, "
                "too_long_for_reviser."})
    reviser_tokenizer: str | None = field(default=None, metadata={
        "help": "openai: the reviser's tokenizer, to count prompt tokens (default: the served model's folder "
                "when /v1/models names a local one; otherwise an estimate that errs short)."})
    cache: Path | None = field(default=None, metadata={
        "help": "openai: answer cache (default: <output file>.cache.sqlite)."})
    no_cache: bool = field(default=False, metadata={"help": "openai: do not read or write the answer cache."})
    shard: str | None = field(default=None, metadata={
        "help": "Label only shard i of n (i/n, by id hash); give each shard its own --output-file."})
    min_kept_share: float = field(default=0.5, metadata={
        "help": "Filter rewrites: revisions keeping less than this share of the rejected tokens and made of less "
                "than this share of kept tokens (an unrelated answer, not a minimal edit)."})
    max_edit_ratio: float | None = field(default=None, metadata={
        "help": "Also filter revisions whose edit distance / rejected tokens exceeds this (default: off)."})
    max_chars: int = field(default=20_000, metadata={
        "help": "Skip (filter as too_long) pairs whose prompt, chosen, rejected or revised text is longer."})
    max_response_tokens: int = field(default=4_096, metadata={
        "help": "Skip (filter as too_long) pairs whose rejected or revised response has more tokens."})
    max_failure_share: float = field(default=0.5, metadata={
        "help": "Exit 2 when more than this share of the output's records failed (the reviser gave no usable "
                "answer: an endpoint error, an unparsable answer, too long for the reviser); 1 = never."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, not {self.concurrency}")
        if self.reviser == "openai" and not self.reviser_model:
            raise ValueError("--reviser openai needs --reviser-model")
        from tlcr.labeling.revisers import MAX_CONCURRENCY  # here: it loads the openai SDK, which --help does not need

        if self.reviser == "openai" and self.concurrency > MAX_CONCURRENCY:
            raise ValueError(f"--concurrency must be <= {MAX_CONCURRENCY} with --reviser openai (the HTTP client's "
                             f"connection limit), not {self.concurrency}")
        if self.workers is not None:
            if self.workers < 1:
                raise ValueError(f"--workers must be >= 1, not {self.workers}")
            if self.workers > 1 and self.reviser != "openai":
                raise ValueError(f"--workers {self.workers} needs --reviser openai (the {self.reviser} reviser "
                                 "makes no calls)")
            if self.workers > self.concurrency:
                raise ValueError(f"--workers ({self.workers}) must be <= --concurrency ({self.concurrency}): each "
                                 "worker needs a call in flight")
        if not 0.0 <= self.max_failure_share <= 1.0:
            raise ValueError(f"--max-failure-share must be in [0, 1], not {self.max_failure_share}")
        if self.reviser_context_length is not None and self.reviser_context_length < 1:
            raise ValueError(f"--reviser-context-length must be >= 1, not {self.reviser_context_length}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"--max-tokens must be >= 1, not {self.max_tokens}")
        self.filters()  # raises naming a bad filter setting
        self.shard_index_count()

    def filters(self) -> FilterConfig:
        return FilterConfig(min_kept_share=self.min_kept_share, max_edit_ratio=self.max_edit_ratio,
                            max_chars=self.max_chars, max_tokens=self.max_response_tokens)

    def worker_processes(self) -> int:
        """--workers, or its default: with the openai reviser one per 64 calls in flight, at most one per CPU."""
        if self.workers is not None:
            return self.workers
        if self.reviser != "openai":
            return 1
        from tlcr.labeling.revision_processes import default_workers

        return default_workers(self.concurrency)

    def shard_index_count(self) -> tuple[int, int]:
        """(i, n) of --shard i/n; (0, 1) without it."""
        from tlcr.labeling.worker import parse_shard

        return parse_shard(self.shard) if self.shard else (0, 1)
