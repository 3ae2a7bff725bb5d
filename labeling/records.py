"""One labelled record (the output schema of `tlcr label`, input of `tlcr train-discriminator`)."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedTokenizerBase

from labeling.token_labels import label_tokens
from tlcr.data.pairs import PreferencePair
from tlcr.tokenization import encode_prompt_response


def build_labelled_record(pair: PreferencePair, revision: str, tokenizer: PreTrainedTokenizerBase, *,
                          reviser: str, instruction_version: str, tokenizer_name: str) -> dict[str, Any]:
    """Tokenize rejected and revised responses after the prompt, diff them, and return a status-"ok" record.

    Token ids are the responses' tokens in the joint prompt + response encoding (`tlcr.tokenization`), the
    ids the discriminator trains on and the service scores.

    Filters (edit ratio, refusal, unchanged...) are applied by the caller and may change status/reason.
    """
    rejected_ids = encode_prompt_response(tokenizer, pair.prompt, pair.rejected)[1]
    revised_ids = encode_prompt_response(tokenizer, pair.prompt, revision)[1]
    labels = label_tokens(rejected_ids, revised_ids)
    return {
        "id": pair.id, "prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected,
        "revision": revision, "status": "ok", "reason": None, "reviser": reviser,
        "instruction_version": instruction_version, "tokenizer": tokenizer_name,
        "rejected_token_ids": rejected_ids, "rejected_labels": labels.rejected_labels,
        "revised_token_ids": revised_ids, "revised_labels": labels.revised_labels,
        "ops": {"insert": labels.inserts, "delete": labels.deletes, "replace": labels.replaces},
        "edit_distance": labels.edit_distance,
        "edit_ratio": labels.edit_distance / max(len(rejected_ids), 1),
        "meta": dict(pair.meta),
    }
