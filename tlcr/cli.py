"""The `tlcr` console command: one entry point that reaches every stage.

Each stage package registers its own subcommands (``register(app)`` in its ``cli`` module); heavy
imports (torch, transformers) happen inside the commands so `tlcr --help` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import typer

from tlcr.core.config_cli import config_command
from tlcr.core.data.pair_options import PairsOptions
from tlcr.core.exit_codes import ExitCode
from tlcr.core.logs import VERBOSITY_KEY, setup_logging
from tlcr.core.presets import presets_dir
from tlcr.demo import DemoConfig
from tlcr.demo_model import DemoModelConfig

app = typer.Typer(
    name="tlcr",
    help="Token-level continuous rewards for RLHF: label, train the discriminator, serve, run PPO. "
         "Exit codes: 0 done, 1 unexpected error, 2 bad input, 3 a remote service stayed unavailable (README).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def global_options(
    ctx: typer.Context,
    verbose: Annotated[int, typer.Option(
        "--verbose", "-v", count=True, help="More log lines: -v our debug messages, -vv every library's too.")] = 0,
    quiet: Annotated[int, typer.Option(
        "--quiet", "-q", count=True, help="Fewer log lines: -q warnings and errors only, -qq errors only.")] = 0,
) -> None:
    """Logging for every subcommand (before the subcommand's name: `tlcr -q label ...`)."""
    if verbose and quiet:
        raise typer.BadParameter("give --verbose or --quiet, not both")
    if verbose or quiet:
        ctx.meta[VERBOSITY_KEY] = verbose - quiet
    setup_logging(verbose - quiet)


@dataclass(kw_only=True)
class DataOptions(PairsOptions):
    output_file: Path = field(metadata={"help": "Output .jsonl of {id, prompt, chosen, rejected, meta} records."})


@app.command("data")
@config_command(DataOptions)
def data_command(config: DataOptions) -> None:
    """Write preference pairs (optionally one part of the paper's 20/40/40 split) as JSONL."""
    from tlcr.core.data.jsonl import DataError, SkipReport, write_jsonl

    report = SkipReport()
    try:
        pairs = config.select_part(config.load_pairs(report))
    except DataError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(ExitCode.BAD_INPUT) from exc
    write_jsonl(config.output_file, [p.to_dict() for p in pairs])
    typer.echo(f"wrote {len(pairs)} pairs to {config.output_file}; {report.summary()}")


@dataclass
class TinyModelOptions:
    output_dir: Path = field(metadata={"help": "Directory for the tokenizer and model (save_pretrained)."})
    source: str = field(default="controlled", metadata={
        "help": "Text to train the tokenizer on: 'controlled' or a pairs file."})
    arch: Literal["llama", "gpt2"] = field(default="llama", metadata={"help": "Model architecture."})
    vocab_size: int = field(default=1024, metadata={"help": "Tokenizer vocabulary size."})
    hidden_size: int = field(default=64, metadata={"help": "Hidden size."})
    num_layers: int = field(default=2, metadata={"help": "Transformer layers."})
    seed: int = field(default=0, metadata={"help": "Seed of the weights and of the controlled task's corpus."})
    tokenizer: str | None = field(default=None, metadata={
        "help": "An existing tokenizer (folder or Hub id, e.g. ../shared/tokenizers/llama2) instead of training "
                "one; --source and --vocab-size are then unused."})


@app.command("tiny-model")
@config_command(TinyModelOptions)
def tiny_model_command(config: TinyModelOptions) -> None:
    """Build a tiny causal LM + byte-level BPE tokenizer for offline use (loaded later by path)."""
    from tlcr.core.models import ModelLoadError, build_tiny_model

    texts = tiny_model_corpus(config.source, config.seed) if config.tokenizer is None else []
    try:
        path = build_tiny_model(texts, config.output_dir, arch=config.arch, vocab_size=config.vocab_size,
                                hidden_size=config.hidden_size, num_layers=config.num_layers, seed=config.seed,
                                tokenizer=config.tokenizer)
    except ModelLoadError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(ExitCode.BAD_INPUT) from exc
    typer.echo(f"tiny {config.arch} model and tokenizer saved to {path}")


@app.command("demo")
@config_command(DemoConfig, yaml_only=["extra"], presets=presets_dir("demo"))
def demo_command(ctx: typer.Context, config: DemoConfig) -> None:
    """The whole pipeline offline: tiny models, SFT, labeling, discriminator + reward model, the service on
    loopback, PPO with TLCR rewards over HTTP, evaluation, and a report in runs/demo-*/ (`--preset smoke`:
    a tiny budget, about 15 s: checks every stage runs; numbers mean little)."""
    from tlcr.demo import run_demo

    try:
        run_demo(config, verbosity=ctx.meta.get(VERBOSITY_KEY, 0))
    except FileExistsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(ExitCode.BAD_INPUT) from exc


@app.command("bootstrap-model")
@config_command(DemoModelConfig, yaml_only=["extra"])
def bootstrap_model_command(
    output_dir: Annotated[Path, typer.Option(help="Folder to create: discriminator/, policy/ and ppo.yaml.")],
    config: DemoModelConfig,
) -> None:
    """Train the offline demo discriminator (what a fresh `docker compose up` serves): no network, about a
    minute on CPU. Does nothing when the output folder already holds a complete one."""
    from tlcr.demo_model import bootstrap_demo_model, is_complete

    if is_complete(output_dir):
        typer.echo(f"demo model already in {output_dir}: nothing to do")
        return
    if output_dir.exists():
        typer.echo(f"error: {output_dir} exists but is not a complete demo model: remove it first", err=True)
        raise typer.Exit(ExitCode.BAD_INPUT)
    typer.echo(f"training the offline demo discriminator into {output_dir} ({config.pairs} controlled-task pairs)")
    metrics = bootstrap_demo_model(output_dir, config)
    summary = {k: round(v, 3) for k, v in (metrics.get("eval") or {}).items() if isinstance(v, float)}
    typer.echo(f"demo discriminator saved to {output_dir / 'discriminator'}; held-out metrics: {summary}")


def tiny_model_corpus(source: str, seed: int = 0) -> list[str]:
    """Texts to train a tiny tokenizer on: the controlled task's corpus, or a pairs file's texts."""
    if source == "controlled":
        from tlcr.core.data.controlled import ControlledTask

        return ControlledTask().corpus()  # the same fixed KB every stage draws pairs from
    from tlcr.core.data.sources import load_preference_pairs

    pairs = load_preference_pairs(source, on_error="skip")
    return [t for p in pairs for t in (p.prompt + p.chosen, p.rejected)]


def _register_stages() -> None:
    # Each stage adds its commands here; a module is listed only once its commands work.
    for module in ("tlcr.labeling.cli", "tlcr.service.cli", "tlcr.service.ray_cli",
                   "tlcr.trainer.cli_rewards", "tlcr.trainer.cli_policy",
                   "tlcr.evaluation.cli"):
        __import__(module, fromlist=["register"]).register(app)


_register_stages()


if __name__ == "__main__":
    app()  # `python -m tlcr.cli`; the `tlcr` command itself is tlcr.entry:main (checks the extras first)
