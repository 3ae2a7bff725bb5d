"""The one tokenization convention on the real Llama 2, GPT-2 and Qwen2 tokenizers (../shared/tokenizers),
on real HH-RLHF text and on emoji, CJK and combining marks."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from tlcr.core.data.pairs import PreferencePair
from tlcr.core.models import ModelLoadError, build_tiny_model, load_tokenizer
from tlcr.core.tokenization import (
    TokenizationError,
    decode_with_offsets,
    encode_prompt_response,
    encode_prompt_response_batch,
    encode_prompt_response_spans,
    require_special_tokens,
)
from tlcr.service.alignment import realign_sum

PROMPT = "\n\nHuman: Say something in several scripts.\n\nAssistant:"
# Emoji (a ZWJ sequence with a variation selector), CJK, Vietnamese, combining marks (NFD), mixed.
HARD_RESPONSES = (
    " 😶\u200d🌫\ufe0f and 🦙🦙!",
    " 我想在apple工作1314151天～",
    " Cửa Việt, e\u0301te\u0301 n\u0303o\u0308",
    " ok 😁 ?你好 e\u0301",
)


def hh_items(pairs: list[PreferencePair]) -> list[tuple[str, str]]:
    return [(p.prompt, r) for p in pairs for r in (p.chosen, p.rejected)]


def test_joint_split_on_hh_text_keeps_every_token_and_the_policys_prompt(
        named_tokenizer: tuple[str, PreTrainedTokenizerBase], hh_pairs: list[PreferencePair]) -> None:
    name, tok = named_tokenizer
    for prompt, response in hh_items(hh_pairs):
        prompt_ids, response_ids = encode_prompt_response(tok, prompt, response)
        assert prompt_ids + response_ids == tok(prompt + response, add_special_tokens=False)["input_ids"]
        # the ids a policy conditions on: the prompt alone (so the policy's next token is a response token)
        assert prompt_ids == tok(prompt, add_special_tokens=False)["input_ids"]
        alone = tok(response, add_special_tokens=False)["input_ids"]
        assert response.startswith(" ") and not response[1:2].isspace()
        if name == "llama2":  # alone, a response starting with a space gets a spurious "▁" (29871) first
            assert alone == [29871, *response_ids]
            assert response_ids[0] != 29871
        else:
            assert alone == response_ids


def test_decoded_offsets_match_the_tokenizers_own_on_hh_text(
        named_tokenizer: tuple[str, PreTrainedTokenizerBase], hh_pairs: list[PreferencePair]) -> None:
    """Generated = canonical tokens: decoding after the prompt gives back the text and the same spans."""
    _, tok = named_tokenizer
    items = hh_items(hh_pairs)
    encoded = encode_prompt_response_batch(tok, [p for p, _ in items], [r for _, r in items])
    for (prompt, response), pair in zip(items, encoded, strict=True):
        text, spans = decode_with_offsets(tok, pair.response_ids, pair.prompt_ids)
        assert text == response
        assert spans == pair.response_spans
        # the text sent to a service sharing the tokenizer comes back as the same ids: one reward per token
        assert encode_prompt_response(tok, prompt, text)[1] == pair.response_ids


@pytest.mark.parametrize("response", HARD_RESPONSES)
def test_offsets_on_emoji_cjk_and_combining_marks(named_tokenizer: tuple[str, PreTrainedTokenizerBase],
                                                 response: str) -> None:
    name, tok = named_tokenizer
    pair = encode_prompt_response_spans(tok, PROMPT, response)
    assert pair.prompt_ids == tok(PROMPT, add_special_tokens=False)["input_ids"]
    text, spans = decode_with_offsets(tok, pair.response_ids, pair.prompt_ids)
    if name == "qwen2":  # Qwen2 normalizes to NFC: "e" + U+0301 comes back as "é"
        import unicodedata

        assert text == unicodedata.normalize("NFC", response)
        pair = encode_prompt_response_spans(tok, PROMPT, text)
    else:
        assert text == response
    assert len(spans) == len(pair.response_ids)
    assert spans == pair.response_spans  # the fast tokenizer's own offsets, byte tokens included
    starts, ends = [s for s, _ in spans], [e for _, e in spans]
    assert starts == sorted(starts) and ends == sorted(ends) and starts[0] == 0 and ends[-1] == len(text)
    covered = set(itertools.chain.from_iterable(range(s, e) for s, e in spans))
    assert covered == set(range(len(text)))


def byte_tokens(tok: PreTrainedTokenizerBase, name: str, text: str) -> list[int]:
    """One token per UTF-8 byte: a split a policy may sample though the tokenizer would never produce it."""
    if name == "llama2":
        pieces = [f"<0x{b:02X}>" for b in text.encode()]
    else:
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        table = bytes_to_unicode()
        pieces = [table[b] for b in text.encode()]
    ids = tok.convert_tokens_to_ids(pieces)
    assert tok.unk_token_id not in ids
    return ids


def test_a_multibyte_character_split_byte_by_byte_is_shared_by_its_tokens(
        named_tokenizer: tuple[str, PreTrainedTokenizerBase]) -> None:
    name, tok = named_tokenizer
    prompt_ids = tok(PROMPT, add_special_tokens=False)["input_ids"]
    ids = byte_tokens(tok, name, "你😁é")  # 3 + 4 + 2 bytes
    text, spans = decode_with_offsets(tok, ids, prompt_ids)
    assert text == "你😁é"
    assert spans == [(0, 1)] * 3 + [(1, 2)] * 4 + [(2, 3)] * 2


def test_special_tokens_get_empty_spans_and_context_keeps_the_leading_space(
        named_tokenizer: tuple[str, PreTrainedTokenizerBase]) -> None:
    _, tok = named_tokenizer
    prompt_ids, response_ids = encode_prompt_response(tok, PROMPT, " Hi there")
    eos = tok.eos_token_id
    text, spans = decode_with_offsets(tok, [*response_ids[:1], eos, *response_ids[1:]], prompt_ids)
    assert text == " Hi there"
    assert spans[1][0] == spans[1][1]
    assert decode_with_offsets(tok, [], prompt_ids) == ("", [])


@pytest.mark.parametrize("policy_name", ["qwen2", "gpt2"])
def test_cross_tokenizer_realignment_gives_one_reward_per_policy_token_and_keeps_the_sum(
        policy_name: str, hh_pairs: list[PreferencePair], real_tokenizer_dir: Callable[[str], Path]) -> None:
    """A Qwen2 / GPT-2 policy's tokens against a Llama 2 discriminator's, through text + offsets."""
    policy = load_tokenizer(real_tokenizer_dir(policy_name))
    disc = load_tokenizer(real_tokenizer_dir("llama2"))
    rng = np.random.default_rng(0)
    responses = [r for _, r in hh_items(hh_pairs[:10])] + list(HARD_RESPONSES)
    for response in responses:
        prompt_ids, ids = encode_prompt_response(policy, PROMPT, response)
        text, policy_spans = decode_with_offsets(policy, ids, prompt_ids)
        disc_pair = encode_prompt_response_spans(disc, PROMPT, text)
        rewards = rng.uniform(-1, 1, len(disc_pair.response_ids))
        realigned = realign_sum(rewards, disc_pair.response_spans, policy_spans)
        assert len(realigned) == len(ids)
        assert realigned.sum() == pytest.approx(rewards.sum(), abs=1e-9)


def test_a_token_straddling_the_boundary_belongs_to_the_response(real_tokenizer_dir: Callable[[str], Path]) -> None:
    """Qwen2 merges ":\\n" — the only way the joint prompt ids can differ from the prompt's own."""
    tok = load_tokenizer(real_tokenizer_dir("qwen2"))
    pair = encode_prompt_response_spans(tok, "Assistant:", "\nHi")
    assert tok.convert_ids_to_tokens(pair.response_ids) == [":Ċ", "Hi"]
    assert pair.response_spans == [(0, 1), (1, 3)]
    assert pair.prompt_ids == tok("Assistant", add_special_tokens=False)["input_ids"]


def test_empty_response_and_batch_mismatch(named_tokenizer: tuple[str, PreTrainedTokenizerBase]) -> None:
    _, tok = named_tokenizer
    assert encode_prompt_response(tok, PROMPT, "") == (tok(PROMPT, add_special_tokens=False)["input_ids"], [])
    with pytest.raises(ValueError, match="2 prompts for 1 responses"):
        encode_prompt_response_batch(tok, ["a", "b"], ["c"])


def test_a_folder_without_a_tokenizer_is_named(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match=r"holds no tokenizer: none of tokenizer\.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(ModelLoadError, match="no such folder"):
        load_tokenizer(tmp_path / "missing")


def tokenizer_without_eos(gpt2: Path, tmp_path: Path) -> Path:
    """The real GPT-2 tokenizer saved without any special token."""
    tok = load_tokenizer(gpt2)
    bare = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer)
    bare.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config.get("eos_token") is None and config.get("pad_token") is None
    return tmp_path


def test_missing_special_tokens_are_named(tmp_path: Path, real_tokenizer_dir: Callable[[str], Path]) -> None:
    path = tokenizer_without_eos(real_tokenizer_dir("gpt2"), tmp_path / "tok")
    with pytest.raises(ModelLoadError, match="has neither a pad nor an EOS token; set pad_token or eos_token"):
        load_tokenizer(path)
    bare = PreTrainedTokenizerFast.from_pretrained(str(path))
    with pytest.raises(TokenizationError, match=r"has no EOS and no pad token, which PPO needs; set eos_token and "
                                                r"pad_token"):
        require_special_tokens(bare, str(path), eos=True, pad=True, purpose="PPO")
    with pytest.raises(ModelLoadError, match="neither a pad nor an EOS token"):
        build_tiny_model([], tmp_path / "model", tokenizer=path)
    bare.pad_token = "!"  # a pad token but still no EOS: a causal LM could never end a response
    bare.save_pretrained(tmp_path / "pad-only")
    with pytest.raises(ModelLoadError, match=r"has no EOS token, which a causal LM ending its responses needs; "
                                             r"set eos_token"):
        build_tiny_model([], tmp_path / "model", tokenizer=tmp_path / "pad-only")
    assert not (tmp_path / "model").exists()


def test_incremental_offsets_equal_decoding_every_prefix_on_random_tokens(
        named_tokenizer: tuple[str, PreTrainedTokenizerBase]) -> None:
    """Random sequences heavy in single-byte tokens and EOS, as a tiny random policy samples them."""
    from tlcr.core import tokenization

    name, tok = named_tokenizer
    rng = np.random.default_rng(0)
    singles = byte_tokens(tok, name, "".join(chr(c) for c in range(0x20, 0x7f)) + "é你😁")
    context = tok(PROMPT, add_special_tokens=False)["input_ids"][-tokenization.CONTEXT_TOKENS:]
    incremental = 0
    for _ in range(100):
        n = int(rng.integers(1, 30))
        ids = [int(rng.choice(singles)) if rng.random() < 0.5 else
               tok.eos_token_id if rng.random() < 0.1 else int(rng.integers(len(tok))) for _ in range(n)]
        text, spans = decode_with_offsets(tok, ids, context)
        progress = tokenization._prefix_progress(tok, context, ids)
        assert spans == tokenization._spans(*progress, len(text))
        incremental += tokenization._incremental_progress(tok, context, ids, text) is not None
    # Llama 2's byte fallback turns a run of byte tokens that is not valid UTF-8 into one "\ufffd" per byte,
    # which decoding piece by piece cannot reproduce; those sequences take the prefix path
    assert incremental == 100 or (name == "llama2" and incremental > 0)


def test_fingerprint_tells_tokenizers_apart_without_a_path(tiny_model_dir: Path, tiny_gpt2_dir: Path,
                                                           tmp_path: Path) -> None:
    from tlcr.core.models import load_tokenizer
    from tlcr.core.tokenization import tokenizer_fingerprint

    load_tokenizer(tiny_model_dir).save_pretrained(tmp_path / "copy")  # same tokenizer, another folder
    assert tokenizer_fingerprint(load_tokenizer(tmp_path / "copy")) == tokenizer_fingerprint(
        load_tokenizer(tiny_model_dir))
    assert tokenizer_fingerprint(load_tokenizer(tiny_gpt2_dir)) != tokenizer_fingerprint(
        load_tokenizer(tiny_model_dir))
