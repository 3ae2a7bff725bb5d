"""`tlcr label`: revise rejected responses and write token-labelled records (docs/labeling.md)."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from labeling.revisers import GivenRevision, OpenAIReviser, Reviser
    from labeling.usage import LedgerFile
    from labeling.worker import RunResult
    from tlcr.data.jsonl import OnError, SkipReport
    from tlcr.data.pairs import PreferencePair

REVISERS = ("chosen", "given", "openai")


def register(app: typer.Typer) -> None:
    app.command("label")(label_command)


def label_command(
    out: Annotated[Path, typer.Option(help="Output JSONL of labelled records (appended to and resumed if it exists).")],
    tokenizer: Annotated[str, typer.Option(
        help="The discriminator's tokenizer (Hub name or local path); token ids and labels use it.")],
    source: Annotated[str, typer.Option(
        help="Pairs: 'controlled', a local .jsonl/.jsonl.gz (HH-RLHF or {prompt, chosen, rejected}), or a Hub "
             "id. With --reviser given: a .jsonl/.jsonl.gz/.json file carrying revisions.")] = "controlled",
    reviser: Annotated[str, typer.Option(
        help="chosen (offline: revision = chosen response), given (revisions in --source), or openai "
             "(an OpenAI-compatible endpoint).")] = "chosen",
    split: Annotated[str, typer.Option(help="Hub dataset split.")] = "train",
    data_dir: Annotated[str, typer.Option(help="Hub dataset subset (HH-RLHF: harmless-base, ...).")] = "harmless-base",
    part: Annotated[str, typer.Option(help="Paper split part to label: all, sft, rm or ppo.")] = "all",
    limit: Annotated[int | None, typer.Option(
        help="Label at most this many pairs (controlled: how many to make).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the controlled task and of the 20/40/40 split.")] = 42,
    model: Annotated[str | None, typer.Option(help="openai: model name at the endpoint.")] = None,
    base_url: Annotated[str | None, typer.Option(
        help="openai: endpoint base URL, e.g. http://localhost:8000/v1 (default: $OPENAI_BASE_URL or OpenAI).")] = None,
    api_key_env: Annotated[str, typer.Option(
        help="openai: environment variable holding the API key.")] = "OPENAI_API_KEY",
    concurrency: Annotated[int, typer.Option(help="Reviser calls in flight at once.")] = 8,
    timeout: Annotated[float, typer.Option(help="openai: deadline of one call, seconds.")] = 120.0,
    max_retries: Annotated[int, typer.Option(help="openai: retries on 429 / 5xx / timeouts per pair.")] = 6,
    backoff: Annotated[float, typer.Option(help="openai: first backoff in seconds, doubled each retry.")] = 1.0,
    max_backoff: Annotated[float, typer.Option(help="openai: longest backoff, seconds.")] = 60.0,
    temperature: Annotated[float, typer.Option(help="openai: sampling temperature.")] = 0.0,
    max_tokens: Annotated[int | None, typer.Option(
        help="openai: completion token limit (default: the endpoint's).")] = None,
    cache: Annotated[Path | None, typer.Option(help="openai: answer cache (default: <out>.cache.sqlite).")] = None,
    no_cache: Annotated[bool, typer.Option(
        "--no-cache", help="openai: do not read or write the answer cache.")] = False,
    shard: Annotated[str | None, typer.Option(
        help="Label only shard i of n (i/n, by id hash); give each shard its own --out.")] = None,
    min_kept_share: Annotated[float, typer.Option(
        help="Filter rewrites: revisions keeping less than this share of the rejected tokens and made of less "
             "than this share of kept tokens (an unrelated answer, not a minimal edit).")] = 0.5,
    max_edit_ratio: Annotated[float | None, typer.Option(
        help="Also filter revisions whose edit distance / rejected tokens exceeds this (default: off).")] = None,
    max_chars: Annotated[int, typer.Option(
        help="Skip (filter as too_long) pairs whose prompt, chosen, rejected or revised text is longer.")] = 20_000,
    max_response_tokens: Annotated[int, typer.Option(
        help="Skip (filter as too_long) pairs whose rejected or revised response has more tokens.")] = 4_096,
    on_error: Annotated[str, typer.Option(
        help="Bad input records: raise (stop, naming file:line) or skip (count and report).")] = "raise",
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Revise rejected responses minimally, label tokens by a Levenshtein diff, write records as JSONL."""
    from labeling.filters import FilterConfig
    from labeling.revisers import ReviserError
    from labeling.worker import WorkerConfig, label_pairs, parse_shard, run_event_loop
    from tlcr.data.jsonl import DataError, SkipReport
    from tlcr.models import ModelLoadError, load_tokenizer

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if reviser not in REVISERS:
        raise typer.BadParameter(f"--reviser must be one of {', '.join(REVISERS)}, not {reviser!r}")
    if part not in ("all", "sft", "rm", "ppo"):
        raise typer.BadParameter(f"--part must be all, sft, rm or ppo, not {part!r}")
    if on_error not in ("raise", "skip"):
        raise typer.BadParameter(f"--on-error must be raise or skip, not {on_error!r}")
    if concurrency < 1:
        raise typer.BadParameter(f"--concurrency must be >= 1, not {concurrency}")
    if reviser == "openai" and not model:
        raise typer.BadParameter("--reviser openai needs --model")
    if reviser == "openai":
        from labeling.revisers import MAX_CONCURRENCY

        if concurrency > MAX_CONCURRENCY:
            raise typer.BadParameter(f"--concurrency must be <= {MAX_CONCURRENCY} with --reviser openai (the HTTP "
                                     f"client's connection limit), not {concurrency}")
    try:
        shard_index, shard_count = parse_shard(shard) if shard else (0, 1)
        filters = FilterConfig(min_kept_share=min_kept_share, max_edit_ratio=max_edit_ratio, max_chars=max_chars,
                               max_tokens=max_response_tokens)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc

    report = SkipReport()
    try:
        pairs, given_revisions = _load_input(source, reviser, split=split, data_dir=data_dir, limit=limit,
                                             seed=seed, on_error=on_error, report=report)  # type: ignore[arg-type]
    except DataError as exc:
        _fail(f"error: {exc}")
    if not pairs:
        skipped = f"; {report.summary()}" if report.skipped else ""
        _fail(f"error: no usable pairs in {source}: nothing to label{skipped}")
    if part != "all":
        from tlcr.data.pairs import paper_split

        pairs = paper_split(pairs, seed=seed)[part]
        if not pairs:
            _fail(f"error: --part {part} of the {source} pairs is empty: nothing to label")
    if shard_count > 1:
        from labeling.worker import select_shard

        pairs = select_shard(pairs, shard_index, shard_count)
        if not pairs:
            _fail(f"error: shard {shard} of the {source} pairs is empty: nothing to label (use fewer shards)")
    try:
        tok = load_tokenizer(tokenizer)
    except ModelLoadError as exc:
        _fail(f"error: {exc}")
    # Labelling tokenizes whole responses and feeds no model: the model's length limit (and its warning)
    # is for the discriminator's training, which truncates.
    tok.model_max_length = sys.maxsize

    ledger_file: LedgerFile | None = None
    rev: Reviser
    if reviser == "chosen":
        from labeling.revisers import ChosenReviser

        rev = ChosenReviser()
    elif reviser == "given":
        from labeling.revisers import GivenReviser

        rev = GivenReviser(given_revisions)
    else:
        rev, ledger_file = _openai_reviser(out, model or "", base_url, api_key_env, timeout, max_retries, backoff,
                                           max_backoff, temperature, max_tokens, cache, no_cache, concurrency)

    config = WorkerConfig(out=out, tokenizer_name=tokenizer, concurrency=concurrency,
                          filters=filters, progress=progress)

    async def run() -> RunResult:
        try:
            return await label_pairs(pairs, rev, tok, config, ledger_file)
        finally:
            await rev.aclose()

    try:
        result = run_event_loop(run())
    except ReviserError as exc:
        _fail(f"error: {exc}", code=3)
    except (DataError, RuntimeError, ValueError) as exc:
        _fail(f"error: {exc}")

    summary = result.summary
    summary_path = out.with_name(out.name + ".summary.json")
    summary_path.write_text(json.dumps({**summary.to_dict(), "input_skipped": report.skipped,
                                        "input_duplicates": result.duplicates_dropped,
                                        "unfinished": len(result.unfinished)}, indent=1), encoding="utf-8")
    notes = [f"{result.written} records written now", f"{result.already_done} already there"]
    if result.cut_partial_line:
        notes.append("cut a partial last line left by an interrupted run")
    if result.duplicates_dropped:
        notes.append(f"{result.duplicates_dropped} duplicate input pairs dropped")
    typer.echo(f"{out}: {'; '.join(notes)}")
    typer.echo(summary.format())
    typer.echo(f"input: {report.summary()}")
    if ledger_file is not None:
        typer.echo(f"usage ({ledger_file.path}):\n{ledger_file.ledger.summary()}")
    if result.unfinished:
        _fail(f"{len(result.unfinished)} pairs left unlabelled after retries (e.g. {result.unfinished[0]}); "
              "rerun the same command to retry them", code=1)


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(code)


def _load_input(source: str, reviser: str, *, split: str, data_dir: str, limit: int | None, seed: int,
                on_error: OnError, report: SkipReport) -> tuple[list[PreferencePair], dict[str, GivenRevision]]:
    if reviser == "given":
        from labeling.given_input import load_given_input

        given = load_given_input(source, on_error=on_error, report=report, limit=limit)
        return given.pairs, given.revisions
    from tlcr.data.pairs import load_preference_pairs

    pairs = load_preference_pairs(source, split=split, data_dir=data_dir, limit=limit, seed=seed,
                                  on_error=on_error, report=report)
    return pairs, {}


def _openai_reviser(out: Path, model: str, base_url: str | None, api_key_env: str, timeout: float,
                    max_retries: int, backoff: float, max_backoff: float, temperature: float,
                    max_tokens: int | None, cache_path: Path | None, no_cache: bool,
                    concurrency: int) -> tuple[OpenAIReviser, LedgerFile]:
    from labeling.cache import RevisionCache
    from labeling.revisers import OpenAIReviser
    from labeling.usage import LedgerFile, UsageLedger
    from tlcr.retry import RetryPolicy

    api_key = os.environ.get(api_key_env)
    if not api_key:
        if base_url is None and not os.environ.get("OPENAI_BASE_URL"):
            _fail(f"error: --reviser openai needs an API key in ${api_key_env} (or --api-key-env NAME)")
        api_key = "unused"  # local servers (vLLM, Ollama) accept any key, but the client needs one
    cache = None
    if not no_cache:
        try:
            cache = RevisionCache(cache_path or out.with_name(out.name + ".cache.sqlite"))
        except ValueError as exc:
            _fail(f"error: {exc}")
    ledger = UsageLedger()
    try:
        ledger_file = LedgerFile(out.with_name(out.name + ".usage.json"), ledger,
                                 {"model": model, "base_url": base_url or os.environ.get("OPENAI_BASE_URL")})
    except ValueError as exc:
        _fail(f"error: {exc}")
    reviser = OpenAIReviser(model, api_key=api_key, base_url=base_url, timeout_s=timeout,
                            retry=RetryPolicy(max_retries=max_retries, backoff_s=backoff, max_backoff_s=max_backoff),
                            temperature=temperature, max_tokens=max_tokens, cache=cache, ledger=ledger,
                            concurrency=concurrency)
    return reviser, ledger_file
