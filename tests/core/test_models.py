from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tlcr.core.models import (
    ModelLoadError,
    build_tiny_model,
    encode_prompt_response,
    load_causal_lm,
    load_tokenizer,
    resolve_dtype,
)


def test_tokenizer_roundtrip_and_special_tokens(tiny_model_dir: Path) -> None:
    tok = load_tokenizer(tiny_model_dir)
    text = "\n\nHuman: What is the capital of Kalo?\n\nAssistant: The capital is Ven. Ünïcode ✓"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id


def test_encode_prompt_response_splits_the_joint_encoding(tiny_model_dir: Path) -> None:
    tok = load_tokenizer(tiny_model_dir)
    prompt_ids, response_ids = encode_prompt_response(tok, "\n\nHuman: hi\n\nAssistant:", " hello there.")
    assert tok.decode(prompt_ids) == "\n\nHuman: hi\n\nAssistant:"
    assert tok.decode(response_ids) == " hello there."


def test_gpt2_tiny_model_generates(tiny_gpt2_dir: Path) -> None:
    tok = load_tokenizer(tiny_gpt2_dir)
    model = load_causal_lm(tiny_gpt2_dir, device="cpu")
    ids = torch.tensor([tok("Hello", add_special_tokens=False)["input_ids"]])
    out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] <= ids.shape[1] + 3


def test_build_is_deterministic(tmp_path: Path) -> None:
    texts = ["alpha beta gamma", "beta gamma delta"] * 20
    a = load_causal_lm(build_tiny_model(texts, tmp_path / "a", vocab_size=300, seed=7), device="cpu")
    b = load_causal_lm(build_tiny_model(texts, tmp_path / "b", vocab_size=300, seed=7), device="cpu")
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_unknown_architecture(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown tiny architecture"):
        build_tiny_model(["a b"], tmp_path, arch="mamba")  # type: ignore[arg-type]


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="nope"):
        load_causal_lm(tmp_path / "nope")
    with pytest.raises(ModelLoadError, match="tokenizer"):
        load_tokenizer(tmp_path / "nope")


def test_resolve_dtype() -> None:
    assert resolve_dtype("auto", torch.device("cpu")) is torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("int3", torch.device("cpu"))


@pytest.mark.parametrize("name", ["llama2", "gpt2", "qwen2"])
def test_tiny_model_on_a_real_tokenizers_whole_vocabulary(name: str, tiny_real_model_dir: Callable[[str], Path],
                                                          real_tokenizer_dir: Callable[[str], Path]) -> None:
    path = tiny_real_model_dir(name)
    original, saved = load_tokenizer(real_tokenizer_dir(name)), load_tokenizer(path)
    text = "\n\nHuman: 我想 😶\u200d🌫\ufe0f\n\nAssistant: Cửa Việt"
    assert saved(text, add_special_tokens=False)["input_ids"] == original(text, add_special_tokens=False)["input_ids"]
    model = load_causal_lm(path, device="cpu")
    assert model.config.vocab_size == len(original)
    assert model.generation_config.eos_token_id == original.eos_token_id is not None
    ids = torch.tensor([original(text, add_special_tokens=False)["input_ids"]])
    out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=saved.pad_token_id)
    assert out.shape[1] <= ids.shape[1] + 3
