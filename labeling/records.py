"""Building one labelled record (the model and its validation: `tlcr.core.data.labelled`)."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedTokenizerBase

from tlcr.core.data.labelled import LabelledRecord
from tlcr.core.data.pairs import PreferencePair
from tlcr.core.tokenization import encode_prompt_response, encode_prompt_response_batch
from tlcr.labeling.token_labels import label_tokens


def build_labelled_record(pair: PreferencePair, revision: str, tokenizer: PreTrainedTokenizerBase, *,
                          reviser: str, instruction_version: str, tokenizer_name: str) -> dict[str, Any]:
    """Tokenize rejected and revised responses after the prompt, diff them, and return a status-"ok" record.

    Token ids are the responses' tokens in the joint prompt + response encoding (`tlcr.core.tokenization`), the
    ids the discriminator trains on and the service scores.

    Filters (edit ratio, refusal, unchanged...) are applied by the caller and may change status/reason.
    """
    if tokenizer.is_fast:  # both in one tokenizer call: ~0.07 ms less per pair than two
        rejected, revised = encode_prompt_response_batch(tokenizer, [pair.prompt] * 2, [pair.rejected, revision])
        rejected_ids, revised_ids = rejected.response_ids, revised.response_ids
    else:
        rejected_ids = encode_prompt_response(tokenizer, pair.prompt, pair.rejected)[1]
        revised_ids = encode_prompt_response(tokenizer, pair.prompt, revision)[1]
    labels = label_tokens(rejected_ids, revised_ids)
    return LabelledRecord(
        id=pair.id, prompt=pair.prompt, chosen=pair.chosen, rejected=pair.rejected, revision=revision,
        tokenizer=tokenizer_name, rejected_token_ids=rejected_ids, rejected_labels=labels.rejected_labels,
        revised_token_ids=revised_ids, revised_labels=labels.revised_labels, status="ok", reason=None,
        reviser=reviser, instruction_version=instruction_version,
        ops={"insert": labels.inserts, "delete": labels.deletes, "replace": labels.replaces},
        edit_distance=labels.edit_distance, edit_ratio=labels.edit_distance / max(len(rejected_ids), 1),
        meta=dict(pair.meta)).to_dict()
