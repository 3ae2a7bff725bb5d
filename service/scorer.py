"""The models behind the service: load through `tlcr.core.models`, run batched forwards, return numbers.

`TokenScorer.probabilities` gives D = sigmoid(logit) = P(token is positive) at each response token's own
position, for input prompt_ids + response_ids. Forwards go through `tlcr.core.scoring` (explicit position ids
from the attention mask, as in training), so a sequence's result does not depend on its batch companions
(tested to 1e-5 in fp32). These methods block: the batcher calls them in a worker thread.

Prefix sharing (on by default, `--no-prefix-sharing` turns it off): items of one batch with token-for-token
equal prompts get the prompt forwarded once, its KV cache read by each of their responses
(`tlcr.core.scoring.prefix_shared_token_probabilities`); the other items go through the ordinary forward.
At load a probe batch is scored both ways: a model whose attention or cache cannot do it, or whose
results differ, is served the ordinary way, with one log line saying why.

Packing (on by default, `--no-packing` turns it off): a batch's items are laid end to end in one row without
padding, shared prompts once (`tlcr.core.packing`), so the forward computes only real tokens. It is checked
the same way at load and falls back to padded batches (with sharing through the KV cache) with one log line.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tlcr.core.allocator import keep_freed_memory
from tlcr.core.models import (
    DISCRIMINATOR_KIND,
    load_sequence_classifier,
    load_token_classifier,
    load_tokenizer,
)
from tlcr.core.packing import PackingUnsupported, packed_token_logits, packing_problem
from tlcr.core.scoring import (
    PrefixSharingUnsupported,
    pad_sequences,
    prefix_shared_token_probabilities,
    prefix_sharing_problem,
    sequence_scores,
    shared_prompt_rows,
    token_probabilities,
)

logger = logging.getLogger(__name__)

TokenIds = Sequence[int]


@dataclass(frozen=True)
class Encoded:
    """One item in the discriminator's vocabulary, ready for the model."""

    prompt_ids: list[int]
    response_ids: list[int]

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)

    def prompt_share(self) -> tuple[tuple[int, ...], int] | None:
        """(prompt key, prompt length) for the batcher's prefix sharing; None for an empty prompt."""
        return (tuple(self.prompt_ids), len(self.prompt_ids)) if self.prompt_ids else None


def checkpoint_revision(name_or_path: str, config: Any) -> str | None:
    """The Hub commit when loaded from the Hub; for a local directory, a content fingerprint.

    The fingerprint hashes config.json and each weight file's size plus its first and last MiB: cheap
    for 7B checkpoints, and it changes when the weights are retrained.
    """
    commit = getattr(config, "_commit_hash", None)
    path = Path(name_or_path)
    if not path.is_dir():
        return commit
    digest = hashlib.sha256()
    config_file = path / "config.json"
    if config_file.exists():
        digest.update(config_file.read_bytes())
    chunk = 1 << 20
    for weights in sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin")):
        size = weights.stat().st_size
        digest.update(f"{weights.name}:{size}".encode())
        with weights.open("rb") as f:
            digest.update(f.read(chunk))
            f.seek(max(0, size - chunk))
            digest.update(f.read(chunk))
    return "sha256:" + digest.hexdigest()[:16]


def _max_length(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, override: int | None) -> int:
    if override is not None:
        return override
    meta = getattr(model.config, "tlcr", None)
    if isinstance(meta, dict) and isinstance(meta.get("max_length"), int):
        return int(meta["max_length"])
    limits = [getattr(model.config, "max_position_embeddings", None),
              getattr(model.config, "n_positions", None), tokenizer.model_max_length]
    usable = [int(x) for x in limits if isinstance(x, int) and 0 < x < 1_000_000]
    if not usable:
        raise ValueError("cannot tell the model's maximum length; pass --max-length")
    return min(usable)


class _Loaded:
    """What the token and sequence scorers share: tokenizer, model, device, name, revision."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str,
                 revision: str | None, max_length: int | None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.revision = revision
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.vocab_size = int(model.get_input_embeddings().num_embeddings)
        self.max_length = _max_length(model, tokenizer, max_length)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else 0)

    @property
    def config(self) -> Any:
        """The model's configuration (transformers `PretrainedConfig`)."""
        return self.model.config

    def encode(self, prompt: str, response: str) -> Encoded:
        from tlcr.core.models import encode_prompt_response

        prompt_ids, response_ids = encode_prompt_response(self.tokenizer, prompt, response)
        return Encoded(prompt_ids, response_ids)


class TokenScorer(_Loaded):
    """The token discriminator: D(token | prompt, response prefix) for every response token."""

    @classmethod
    def load(cls, model: str, *, device: str | None = None, dtype: str = "auto", max_length: int | None = None,
             name: str | None = None, revision: str | None = None) -> TokenScorer:
        tokenizer = load_tokenizer(model)
        loaded = load_token_classifier(model, device=device, dtype=dtype)
        meta = getattr(loaded.config, "tlcr", None)
        if loaded.config.num_labels != 1:
            raise ValueError(f"{model!r} has {loaded.config.num_labels} labels; a TLCR discriminator has one logit")
        if not (isinstance(meta, dict) and meta.get("kind") == DISCRIMINATOR_KIND):
            logger.warning("%s has no tlcr discriminator metadata in config.json; serving it anyway", model)
        return cls(loaded, tokenizer, name or model, revision or checkpoint_revision(model, loaded.config),
                   max_length)

    prefix_sharing = False  # set by enable_prefix_sharing once the model is checked
    packing = False  # set by enable_packing once the model is checked

    @torch.inference_mode()
    def probabilities(self, batch: Sequence[Encoded]) -> list[np.ndarray]:
        """P(positive) per response token, float32 numpy, one array per item in `batch`."""
        if not batch:
            return []
        if self.packing:
            try:
                logits = packed_token_logits(self.model, [(e.prompt_ids, e.response_ids) for e in batch],
                                             share_prompts=self.prefix_sharing)
                return [torch.sigmoid(row).cpu().numpy() for row in logits]
            except PackingUnsupported as exc:
                self._disable_packing(str(exc))
        return self._padded_probabilities(batch)

    def _padded_probabilities(self, batch: Sequence[Encoded]) -> list[np.ndarray]:
        groups = shared_prompt_rows([e.prompt_ids for e in batch]) if self.prefix_sharing else {}
        out: list[np.ndarray | None] = [None] * len(batch)
        if groups:
            try:
                self._shared_probabilities(batch, groups, out)
            except PrefixSharingUnsupported as exc:
                self._disable_sharing(str(exc))
                out = [None] * len(batch)
        rest = [row for row, value in enumerate(out) if value is None]
        if rest:
            items = [batch[row] for row in rest]
            input_ids, attention_mask = pad_sequences([e.prompt_ids + e.response_ids for e in items], self.pad_id)
            probs = token_probabilities(self.model, input_ids, attention_mask).cpu().numpy()
            for k, (row, e) in enumerate(zip(rest, items, strict=True)):
                out[row] = probs[k, len(e.prompt_ids): e.length].copy()
        return [value for value in out if value is not None]

    def _shared_probabilities(self, batch: Sequence[Encoded], groups: dict[tuple[int, ...], list[int]],
                              out: list[np.ndarray | None]) -> None:
        prompts = [list(key) for key in groups]
        rows = [row for members in groups.values() for row in members]
        prompt_of_row = [g for g, members in enumerate(groups.values()) for _ in members]
        probs = prefix_shared_token_probabilities(self.model, self.pad_id, prompts, prompt_of_row,
                                                  [batch[row].response_ids for row in rows]).cpu().numpy()
        for k, row in enumerate(rows):
            out[row] = probs[k, :len(batch[row].response_ids)].copy()

    def _disable_sharing(self, reason: str) -> None:
        if self.prefix_sharing:
            logger.warning("prefix sharing is off for %s: %s; scoring every item whole", self.name, reason)
        self.prefix_sharing = False

    def _disable_packing(self, reason: str) -> None:
        if self.packing:
            logger.warning("packing is off for %s: %s; scoring padded batches", self.name, reason)
        self.packing = False

    def enable_packing(self) -> bool:
        """Turn packing on if the model can do it: its configuration allows it and a probe batch scores the
        same packed and padded. Otherwise one warning names why, and batches are padded."""
        return self._enable("packing", packing_problem, (PackingUnsupported, KeyError), self._disable_packing)

    def enable_prefix_sharing(self) -> bool:
        """Turn prefix sharing on if the model can do it: its configuration allows it and a probe batch
        scores the same both ways. Otherwise one warning names why, and batches are scored whole."""
        return self._enable("prefix_sharing", prefix_sharing_problem, (PrefixSharingUnsupported,),
                            self._disable_sharing)

    def _enable(self, switch: str, configuration_problem: Callable[[PreTrainedModel], str | None],
                unsupported: tuple[type[Exception], ...], disable: Callable[[str], None]) -> bool:
        setattr(self, switch, True)
        problem = configuration_problem(self.model)
        if problem is None:
            try:
                problem = self._probe(switch)
            except (*unsupported, RuntimeError, ValueError, TypeError) as exc:
                problem = f"a probe forward failed ({type(exc).__name__}: {exc})"
        if problem is not None:
            disable(problem)
        return bool(getattr(self, switch))

    def _probe(self, switch: str) -> str | None:
        """None if a probe batch (two shared prompts of different lengths, responses of different lengths, an
        item alone) scores the same with the `switch` attribute on and off; else what differs."""
        ids = [t % self.vocab_size for t in range(3, 48)]
        probe = [Encoded(ids[:7], ids[7:12]), Encoded(ids[:7], ids[20:22]), Encoded(ids[:3], ids[12:30]),
                 Encoded(ids[:3], ids[30:31]), Encoded(ids[31:35], ids[35:45])]
        shared = self.probabilities(probe)
        if not getattr(self, switch):  # fell back during the probe (already logged)
            return None
        setattr(self, switch, False)
        try:
            whole = self.probabilities(probe)
        finally:
            setattr(self, switch, True)
        # fp32 agrees to ~1e-7 (tested); half precision rounds each path differently.
        tolerance = 1e-4 if self.dtype == torch.float32 else 5e-2
        worst = max(float(np.abs(a - b).max()) for a, b in zip(shared, whole, strict=True))
        return None if worst <= tolerance else f"a probe batch differs by {worst:.2g} with {switch} on and off"

    def warm_up(self) -> None:
        self.probabilities([Encoded([self.pad_id], [self.pad_id])])


class SequenceScorer(_Loaded):
    """A one-label sequence reward model (the PPO_seq baseline): one scalar per (prompt, response)."""

    @classmethod
    def load(cls, model: str, *, device: str | None = None, dtype: str = "auto",
             max_length: int | None = None, name: str | None = None) -> SequenceScorer:
        tokenizer = load_tokenizer(model)
        loaded = load_sequence_classifier(model, device=device, dtype=dtype)
        if loaded.config.num_labels != 1:
            raise ValueError(f"{model!r} has {loaded.config.num_labels} labels; a sequence reward model has one")
        return cls(loaded, tokenizer, name or model, checkpoint_revision(model, loaded.config), max_length)

    @torch.inference_mode()
    def scores(self, batch: Sequence[Encoded]) -> list[float]:
        if not batch:
            return []
        # transformers pools at the last token that is not pad_token_id: a sequence that itself ends
        # with that id would be pooled too early in a padded batch, so it runs alone, unpadded.
        out: list[float | None] = [None] * len(batch)
        ends_with_pad = [(e.prompt_ids + e.response_ids)[-1] == self.pad_id for e in batch]
        padded_rows = [i for i, alone in enumerate(ends_with_pad) if not alone]
        alone_rows = [i for i, alone in enumerate(ends_with_pad) if alone]
        for rows in ([padded_rows] if padded_rows else []) + [[i] for i in alone_rows]:
            input_ids, attention_mask = pad_sequences([batch[i].prompt_ids + batch[i].response_ids for i in rows],
                                                      self.pad_id)
            scores = sequence_scores(self.model, input_ids, attention_mask).cpu().tolist()
            for i, value in zip(rows, scores, strict=True):
                out[i] = float(value)
        return [float(v) for v in out if v is not None]

    def warm_up(self) -> None:
        self.scores([Encoded([self.pad_id + 1 if self.pad_id + 1 < self.vocab_size else 0], [0])])


@dataclass(frozen=True)
class LoadSpec:
    """How the service loads its discriminator: the arguments of `TokenScorer.load` and the service's switches."""

    model: str
    device: str | None
    dtype: str
    max_length: int | None
    name: str | None
    revision: str | None
    torch_threads: int | None
    warmup: bool
    packing: bool
    prefix_sharing: bool
    log_level: int = logging.INFO  # the service's level for tlcr's loggers, so the child logs alike
    keep_freed_memory: bool = True  # tlcr.core.allocator, in the process that runs the forwards


def load_token_scorer(spec: LoadSpec) -> TokenScorer:
    """The discriminator as the service serves it: loaded, warmed up, packing and prefix sharing probed."""
    if spec.keep_freed_memory:
        keep_freed_memory()
    scorer = TokenScorer.load(spec.model, device=spec.device, dtype=spec.dtype, max_length=spec.max_length,
                              name=spec.name, revision=spec.revision)
    if spec.warmup:
        scorer.warm_up()
    if spec.packing:
        scorer.enable_packing()
    if spec.prefix_sharing:
        scorer.enable_prefix_sharing()
    return scorer


def describe(scorer: Any) -> dict[str, Any]:
    """A loggable summary of what is served."""
    return {"model": scorer.name, "revision": scorer.revision, "device": str(scorer.device),
            "dtype": str(scorer.dtype).removeprefix("torch."), "max_length": scorer.max_length,
            "vocab_size": scorer.vocab_size, "tokenizer": scorer.tokenizer.name_or_path}
