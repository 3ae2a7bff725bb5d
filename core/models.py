"""The one place that loads and builds models and tokenizers.

Every stage loads checkpoints through these functions, by Hub name or local path, with Auto classes.
For offline use and tests, `build_tiny_model` trains a byte-level BPE tokenizer on the data's text and
builds a small causal LM from a transformers config, saved with `save_pretrained`: later stages load
it by path exactly like a real checkpoint.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    GPT2Config,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from tlcr.core.tokenization import (  # encode_prompt_response is re-exported: the one convention
    TokenizationError,
    encode_prompt_response,  # noqa: F401
    require_special_tokens,
)

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"

# Keys recorded in a discriminator's config.json so the service needs no other metadata.
DISCRIMINATOR_KIND = "tlcr_token_discriminator"
SEQUENCE_RM_KIND = "tlcr_sequence_reward_model"


class ModelLoadError(RuntimeError):
    """A checkpoint or tokenizer could not be loaded; the message names the path or Hub id."""


def resolve_device(device: str | None = None) -> torch.device:
    """`device` if given, else CUDA when present, else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """'auto' → bf16 on CUDA with bf16 support, fp16 on other CUDA, fp32 on CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of auto, {', '.join(names)}")
    return names[dtype]


# Files any Hugging Face tokenizer folder holds at least one of.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")


def _check_tokenizer_folder(name_or_path: str | os.PathLike[str]) -> None:
    path = Path(name_or_path)
    if path.is_dir() and not any((path / name).exists() for name in TOKENIZER_FILES):
        raise ModelLoadError(f"folder {str(name_or_path)!r} holds no tokenizer: none of "
                             f"{', '.join(TOKENIZER_FILES)} is in it")
    if not path.exists() and (path.is_absolute() or str(name_or_path).startswith((".", "~"))):
        raise ModelLoadError(f"cannot load tokenizer from {str(name_or_path)!r}: no such folder")


def load_tokenizer(name_or_path: str | os.PathLike[str], padding_side: str = "right") -> PreTrainedTokenizerBase:
    """AutoTokenizer with a pad token guaranteed (falls back to EOS, as is usual for causal LMs)."""
    _check_tokenizer_folder(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
    except Exception as exc:  # transformers raises OSError, ValueError, HF hub errors...
        raise ModelLoadError(f"cannot load tokenizer from {str(name_or_path)!r}: {exc}") from exc
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(f"tokenizer {str(name_or_path)!r} has neither a pad nor an EOS token; set "
                                 "pad_token or eos_token in its tokenizer_config.json")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def _load(auto_cls: Any, name_or_path: str | os.PathLike[str], device: str | None, dtype: str | None,
          **kwargs: Any) -> PreTrainedModel:
    dev = resolve_device(device)
    try:
        model = auto_cls.from_pretrained(str(name_or_path), dtype=resolve_dtype(dtype, dev), **kwargs)
    except Exception as exc:
        raise ModelLoadError(f"cannot load {auto_cls.__name__} from {str(name_or_path)!r}: {exc}") from exc
    return model.to(dev)


def load_causal_lm(name_or_path: str | os.PathLike[str], *, device: str | None = None,
                   dtype: str | None = "auto", **kwargs: Any) -> PreTrainedModel:
    return _load(AutoModelForCausalLM, name_or_path, device, dtype, **kwargs)


def _load_classifier(auto_cls: Any, name_or_path: str | os.PathLike[str], num_labels: int | None,
                     device: str | None, dtype: str | None, **kwargs: Any) -> PreTrainedModel:
    if num_labels is not None:
        kwargs["num_labels"] = num_labels
    model = _load(auto_cls, name_or_path, device, dtype, **kwargs)
    _sync_pad_token_id(model, name_or_path)
    return model


def load_token_classifier(name_or_path: str | os.PathLike[str], *, num_labels: int | None = None,
                          device: str | None = None, dtype: str | None = "auto",
                          **kwargs: Any) -> PreTrainedModel:
    """A token-classification model; from a causal-LM checkpoint the head is freshly initialised."""
    return _load_classifier(AutoModelForTokenClassification, name_or_path, num_labels, device, dtype, **kwargs)


def load_sequence_classifier(name_or_path: str | os.PathLike[str], *, num_labels: int | None = None,
                             device: str | None = None, dtype: str | None = "auto",
                             **kwargs: Any) -> PreTrainedModel:
    """A sequence-classification model (reward model); from a causal-LM checkpoint the head is freshly initialised."""
    return _load_classifier(AutoModelForSequenceClassification, name_or_path, num_labels, device, dtype, **kwargs)


def _sync_pad_token_id(model: PreTrainedModel, name_or_path: str | os.PathLike[str]) -> None:
    # Sequence/token classification heads need pad_token_id to find the last real token.
    if getattr(model.config, "pad_token_id", None) is None:
        try:
            model.config.pad_token_id = load_tokenizer(name_or_path).pad_token_id
        except ModelLoadError:
            pass


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained with the `tokenizers` library, wrapped as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN, unk_token=EOS_TOKEN,
        pad_token=PAD_TOKEN, model_max_length=1024, clean_up_tokenization_spaces=False,
    )


TinyArch = Literal["llama", "gpt2"]


def build_tiny_model(texts: Iterable[str], out_dir: str | os.PathLike[str], *, arch: TinyArch = "llama",
                     vocab_size: int = 1024, hidden_size: int = 64, num_layers: int = 2,
                     num_heads: int = 4, max_positions: int = 512, seed: int = 0,
                     tokenizer: str | os.PathLike[str] | None = None) -> Path:
    """Build a small causal LM from config on a tokenizer and save both to `out_dir`.

    The tokenizer is trained on `texts` (byte-level BPE of `vocab_size`), or, with `tokenizer`, an existing
    one (a local folder or Hub id, e.g. the real Llama 2 tokenizer) whose whole vocabulary the model gets.
    """
    out = Path(out_dir)
    if tokenizer is None:
        tok: PreTrainedTokenizerBase = train_bpe_tokenizer(texts, vocab_size=vocab_size)
    else:
        tok = load_tokenizer(tokenizer)
        try:
            require_special_tokens(tok, str(tokenizer), eos=True, purpose="a causal LM ending its responses")
        except TokenizationError as exc:
            raise ModelLoadError(str(exc)) from exc
    out.mkdir(parents=True, exist_ok=True)
    common = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                  pad_token_id=tok.pad_token_id)
    if arch == "llama":
        config: Any = LlamaConfig(hidden_size=hidden_size, intermediate_size=4 * hidden_size,
                                  num_hidden_layers=num_layers, num_attention_heads=num_heads,
                                  num_key_value_heads=num_heads, max_position_embeddings=max_positions,
                                  tie_word_embeddings=True, **common)
    elif arch == "gpt2":
        config = GPT2Config(n_embd=hidden_size, n_layer=num_layers, n_head=num_heads,
                            n_positions=max_positions, **common)
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}; expected 'llama' or 'gpt2'")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "tlcr_tiny.json").write_text(json.dumps({"arch": arch, "hidden_size": hidden_size,
                                                    "num_layers": num_layers, "seed": seed,
                                                    "tokenizer": "trained" if tokenizer is None else str(tokenizer)}))
    return out


def _mark_reward_config(config: Any, *, label: str, kind: str, output: str, max_length: int, base_model: str,
                        input_format: str) -> None:
    config.num_labels = 1
    config.id2label = {0: label}
    config.label2id = {label: 0}
    config.tlcr = {"kind": kind, "output": output, "max_length": max_length, "base_model": base_model,
                   "input_format": input_format}


def mark_discriminator_config(config: Any, *, max_length: int, base_model: str) -> None:
    """Record in a token-classifier's config what the reward service needs to serve it."""
    _mark_reward_config(
        config, label="positive", kind=DISCRIMINATOR_KIND, max_length=max_length, base_model=base_model,
        output="logit; sigmoid(logit) = P(token is positive | prompt, response prefix including token)",
        input_format="prompt + response tokenized jointly (add_special_tokens=False), split at the boundary")


def mark_sequence_reward_model_config(config: Any, *, max_length: int, base_model: str) -> None:
    """Record in a sequence reward model's config what the reward service needs to serve it."""
    _mark_reward_config(
        config, label="reward", kind=SEQUENCE_RM_KIND, max_length=max_length, base_model=base_model,
        output="logit at the last non-padding token = Bradley–Terry reward of the whole response",
        input_format="prompt + response tokenized jointly (add_special_tokens=False), split at the boundary; "
                     "no EOS appended")


def mark_demo_config(config: Any, note: str) -> None:
    """Record in a checkpoint's config that it is an offline demo model, and what it is (`demo_note` reads it)."""
    config.tlcr = {**(getattr(config, "tlcr", None) or {}), "demo": note}


def demo_note(config: Any) -> str | None:
    """What an offline demo checkpoint (`tlcr bootstrap-model` writes `tlcr.demo` into its config) is; else None."""
    meta = getattr(config, "tlcr", None)
    note = meta.get("demo") if isinstance(meta, dict) else None
    return str(note) if note else None


def check_max_length(model: PreTrainedModel, max_length: int, base_model: str) -> None:
    """Refuse a max_length beyond the base model's position embeddings, before any training step."""
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    if limit is not None and max_length > limit:
        raise ValueError(f"max_length {max_length} exceeds the {limit} positions of base model {base_model!r}")


def is_discriminator_config(name_or_path: str | os.PathLike[str]) -> bool:
    try:
        config = AutoConfig.from_pretrained(str(name_or_path))
    except Exception:
        return False
    meta = getattr(config, "tlcr", None)
    return isinstance(meta, dict) and meta.get("kind") == DISCRIMINATOR_KIND
