"""The HTTP contract of the reward service, defined once and used by both the service and its client.

Keep this module free of torch / transformers imports: trainers and external callers import it.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, model_validator

from tlcr.core.reward_modes import RewardMode

API_VERSION = "1"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Hard caps of the contract (the service's own limits, e.g. --max-items-per-request, may be lower). They
# bound what one request can make the server parse and hold.
MAX_ITEMS = 4096
MAX_TOKEN_IDS = 65_536  # per id list of one item
MAX_OFFSETS = 65_536  # caller token spans per item


def _valid_unicode(text: str) -> str:
    """Refuse lone surrogates ("\\ud800" in JSON): not Unicode text, and not encodable as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"character {exc.start} is a lone surrogate (U+{ord(text[exc.start]):04X}), "
                         "which is not valid Unicode text") from None
    return text


Text = Annotated[str, AfterValidator(_valid_unicode)]
TokenId = StrictInt  # "1", true and 1.0 are refused, not coerced
CharSpan = tuple[Annotated[StrictInt, Field(ge=0)], Annotated[StrictInt, Field(ge=0)]]


class TokenRewardItem(_Strict):
    """One (prompt, response) to score, given in exactly one of three ways:

    (a) ``prompt`` + ``response`` text, tokenized by the service with the discriminator's tokenizer;
    (b) ``prompt_token_ids`` + ``response_token_ids`` in the discriminator's vocabulary;
    (c) ``prompt`` + ``response`` text plus ``response_offsets``: the caller's own response tokens as
        [start, end) character spans into ``response`` (a policy whose tokenizer differs). Rewards are
        re-aligned to those tokens by character overlap, preserving the sum over the response.
    """

    prompt: Text | None = None
    response: Text | None = None
    prompt_token_ids: Annotated[list[TokenId], Field(max_length=MAX_TOKEN_IDS)] | None = None
    response_token_ids: Annotated[list[TokenId], Field(max_length=MAX_TOKEN_IDS)] | None = None
    response_offsets: Annotated[list[CharSpan], Field(max_length=MAX_OFFSETS)] | None = None

    @model_validator(mode="after")
    def _one_input_form(self) -> TokenRewardItem:
        has_text = self.prompt is not None or self.response is not None
        has_ids = self.prompt_token_ids is not None or self.response_token_ids is not None
        if has_text and has_ids:
            raise ValueError("give either prompt/response text or prompt_token_ids/response_token_ids, not both")
        if has_ids:
            if self.prompt_token_ids is None or self.response_token_ids is None:
                raise ValueError("token-id input needs both prompt_token_ids and response_token_ids")
            if not self.response_token_ids:
                raise ValueError("response_token_ids is empty: there is no response token to reward")
            if self.response_offsets is not None:
                raise ValueError("response_offsets go with text input, not with token ids")
        elif has_text:
            if self.prompt is None or self.response is None:
                raise ValueError("text input needs both prompt and response")
            if not self.response:
                raise ValueError("response is empty: there is no response token to reward")
            if self.response_offsets is not None:
                if not self.response_offsets:
                    raise ValueError("response_offsets is empty")
                for i, (start, end) in enumerate(self.response_offsets):
                    if start > end or end > len(self.response):
                        raise ValueError(
                            f"response_offsets[{i}] = [{start}, {end}) is not a span of the "
                            f"{len(self.response)}-character response")
        else:
            raise ValueError("an item needs prompt + response text or prompt_token_ids + response_token_ids")
        return self


class TokenRewardsRequest(_Strict):
    items: Annotated[list[TokenRewardItem], Field(min_length=1, max_length=MAX_ITEMS)]
    mode: RewardMode = RewardMode.continuous
    threshold: Annotated[float, Field(gt=0.5, le=1.0)] = 0.6  # tau of the fixed mode
    return_probabilities: bool = False
    return_tokens: bool = False


class TokenRewardResult(BaseModel):
    rewards: list[float]  # one per response token (the caller's tokens when offsets were given)
    probabilities: list[float] | None = None
    tokens: list[str] | None = None


class TokenRewardsResponse(BaseModel):
    model: str
    revision: str | None = None
    mode: RewardMode
    results: list[TokenRewardResult]


class SequenceRewardItem(_Strict):
    prompt: Text
    response: Annotated[str, Field(min_length=1), AfterValidator(_valid_unicode)]


class SequenceRewardsRequest(_Strict):
    items: Annotated[list[SequenceRewardItem], Field(min_length=1, max_length=MAX_ITEMS)]


class SequenceRewardsResponse(BaseModel):
    model: str
    revision: str | None = None
    rewards: list[float]


class GetRewardRequest(BaseModel):
    """OpenRLHF's remote reward model request: ``query`` holds full prompt+response texts."""

    model_config = ConfigDict(extra="allow")  # OpenRLHF also sends labels and other fields
    query: Annotated[list[Text], Field(min_length=1, max_length=MAX_ITEMS)]
    prompts: Annotated[list[Text], Field(max_length=MAX_ITEMS)] | None = None


class GetRewardResponse(BaseModel):
    """One scalar per query (OpenRLHF adds it on the last response token: a sequence-level reward)."""

    rewards: list[float]  # sum or mean of the token rewards (the service's get_reward_reduction)
    scores: list[float]  # mean P(token is good) of each response, in [0, 1] (OpenRLHF's dynamic filtering)
    extra_logs: dict[str, list[float]]  # token-reward statistics per query (core.tokens.token_reward_summary)


class InfoResponse(BaseModel):
    model: str
    revision: str | None = None
    tokenizer: str
    max_length: int
    modes: list[RewardMode]
    device: str
    dtype: str
    sequence_model: str | None = None
    demo: str | None = None  # set when serving the offline demo discriminator (`tlcr bootstrap-model`)
    # `tlcr.core.tokenization.tokenizer_fingerprint` of the discriminator's tokenizer: a trainer whose tokenizer has
    # the same fingerprint sends token ids, any other sends text + offsets.
    tokenizer_fingerprint: str | None = None
    api_version: str = API_VERSION


class ErrorResponse(BaseModel):
    detail: str
