"""`tlcr label`: revise rejected responses and write token-labelled records (docs/labeling.md)."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, NoReturn

import typer

from tlcr.core.config_cli import config_command
from tlcr.core.exit_codes import ExitCode
from tlcr.labeling.options import LabelOptions

if TYPE_CHECKING:
    from tlcr.core.data.jsonl import SkipReport
    from tlcr.core.data.pairs import PreferencePair
    from tlcr.labeling.revisers import GivenRevision, OpenAIReviser, Reviser
    from tlcr.labeling.usage import LedgerFile
    from tlcr.labeling.worker import RunResult

def register(app: typer.Typer) -> None:
    app.command("label")(label_command)


@config_command(LabelOptions)
def label_command(config: LabelOptions) -> None:
    """Revise rejected responses minimally, label tokens by a Levenshtein diff, write records as JSONL."""
    from tlcr.core.data.jsonl import DataError, SkipReport
    from tlcr.core.models import ModelLoadError, load_tokenizer
    from tlcr.labeling.revisers import ReviserError
    from tlcr.labeling.worker import WorkerConfig, label_pairs, run_event_loop

    source, out = config.source, config.output_file
    shard_index, shard_count = config.shard_index_count()
    report = SkipReport()
    try:
        pairs, given_revisions = _load_input(config, report)
    except DataError as exc:
        _fail(f"error: {exc}")
    if not pairs:
        skipped = f"; {report.summary()}" if report.skipped else ""
        _fail(f"error: no usable pairs in {source}: nothing to label{skipped}")
    if config.split_part != "all":
        pairs = config.select_part(pairs)
        if not pairs:
            _fail(f"error: --split-part {config.split_part} of the {source} pairs is empty: nothing to label")
    if shard_count > 1:
        from tlcr.labeling.worker import select_shard

        pairs = select_shard(pairs, shard_index, shard_count)
        if not pairs:
            _fail(f"error: shard {config.shard} of the {source} pairs is empty: nothing to label (use fewer shards)")
    try:
        tok = load_tokenizer(config.tokenizer)
    except ModelLoadError as exc:
        _fail(f"error: {exc}")
    # Labelling tokenizes whole responses and feeds no model: the model's length limit (and its warning)
    # is for the discriminator's training, which truncates.
    tok.model_max_length = sys.maxsize

    ledger_file: LedgerFile | None = None
    rev: Reviser
    openai_rev: OpenAIReviser | None = None
    if config.reviser == "chosen":
        from tlcr.labeling.revisers import ChosenReviser

        rev = ChosenReviser()
    elif config.reviser == "given":
        from tlcr.labeling.revisers import GivenReviser

        rev = GivenReviser(given_revisions)
    else:
        openai_rev, ledger_file = _openai_reviser(config)
        rev = openai_rev

    worker_config = WorkerConfig(out=out, tokenizer_name=config.tokenizer, concurrency=config.concurrency,
                                 filters=config.filters(), progress=config.progress,
                                 workers=config.worker_processes(), worker_start=config.worker_start)

    async def run() -> RunResult:
        try:
            if openai_rev is not None:  # the context length, before any pair is sent
                await openai_rev.find_budget(config.reviser_context_length, config.reviser_tokenizer)
            return await label_pairs(pairs, rev, tok, worker_config, ledger_file)
        finally:
            await rev.aclose()

    try:
        result = run_event_loop(run())
    except ReviserError as exc:
        _fail(f"error: {exc}")  # refused: a bad API key or model name, as bad as a bad option
    except (DataError, RuntimeError, ValueError) as exc:
        _fail(f"error: {exc}")

    summary = result.summary
    summary_path = out.with_name(out.name + ".summary.json")
    summary_path.write_text(json.dumps({**summary.to_dict(), "input_skipped": report.skipped,
                                        "input_duplicates": result.duplicates_dropped,
                                        "unfinished": len(result.unfinished)}, indent=1), encoding="utf-8")
    notes = [f"{result.written} records written now", f"{result.already_done} already there"]
    if worker_config.workers > 1:
        notes.insert(1, f"{result.by_workers} of them labelled in {worker_config.workers} worker processes")
    if result.not_sent:
        notes.append(f"{result.not_sent} not sent: too long for the reviser's context")
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
              "rerun the same command to retry them", code=ExitCode.UNAVAILABLE)
    failed, total = summary.by_status["failed"], summary.total
    if not failed:
        return
    why = ", ".join(f"{reason} {n}" for reason, n in summary.by_failed_reason.most_common())
    above = "; their messages above" if summary.by_message else ""
    share = f"{failed} of {total} records in {out} failed ({why}{above})"
    if failed / total > config.max_failure_share:
        _fail(f"error: {share}: more than --max-failure-share {config.max_failure_share:g}. Failed records are "
              "final: after fixing the cause, label into another --output-file (with --cache pointing to this run's "
              "cache, answers already paid for are reused)")
    typer.echo(f"note: {share}; within --max-failure-share {config.max_failure_share:g}")


def _fail(message: str, code: ExitCode = ExitCode.BAD_INPUT) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(code)


def _load_input(config: LabelOptions, report: SkipReport) -> tuple[list[PreferencePair], dict[str, GivenRevision]]:
    if config.reviser == "given":
        from tlcr.labeling.given_input import load_given_input

        given = load_given_input(config.source, on_error=config.on_error, report=report, limit=config.data_limit)
        return given.pairs, given.revisions
    return config.load_pairs(report), {}


def _openai_reviser(config: LabelOptions) -> tuple[OpenAIReviser, LedgerFile]:
    from tlcr.core.retry import RetryPolicy
    from tlcr.labeling.cache import RevisionCache
    from tlcr.labeling.revisers import OpenAIReviser
    from tlcr.labeling.usage import LedgerFile, UsageLedger

    out, model, base_url = config.output_file, config.reviser_model or "", config.base_url
    api_key = os.environ.get(config.api_key_env)
    if not api_key:
        if base_url is None and not os.environ.get("OPENAI_BASE_URL"):
            _fail(f"error: --reviser openai needs an API key in ${config.api_key_env} (or --api-key-env NAME)")
        api_key = "unused"  # local servers (vLLM, Ollama) accept any key, but the client needs one
    cache = None
    if not config.no_cache:
        try:
            cache = RevisionCache(config.cache or out.with_name(out.name + ".cache.sqlite"))
        except ValueError as exc:
            _fail(f"error: {exc}")
    ledger = UsageLedger()
    try:
        ledger_file = LedgerFile(out.with_name(out.name + ".usage.json"), ledger,
                                 {"model": model, "base_url": base_url or os.environ.get("OPENAI_BASE_URL")})
    except ValueError as exc:
        _fail(f"error: {exc}")
    retry = RetryPolicy(max_retries=config.max_retries, backoff_s=config.backoff, max_backoff_s=config.max_backoff)
    reviser = OpenAIReviser(model, api_key=api_key, base_url=base_url, timeout_s=config.timeout, retry=retry,
                            temperature=config.temperature, max_tokens=config.max_tokens, cache=cache, ledger=ledger,
                            concurrency=config.concurrency)
    return reviser, ledger_file
