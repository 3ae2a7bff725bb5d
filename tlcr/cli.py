"""The `tlcr` console command: one entry point that reaches every stage.

Each stage package registers its own subcommands (``register(app)`` in its ``cli`` module); heavy
imports (torch, transformers) happen inside the commands so `tlcr --help` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import typer

from core.config_cli import config_command
from core.exit_codes import ExitCode
from core.logs import VERBOSITY_KEY, setup_logging
from tlcr.data.pair_options import PairsOptions

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
    from tlcr.data.jsonl import DataError, SkipReport, write_jsonl

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
    from tlcr.models import ModelLoadError, build_tiny_model

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
def demo_command(
    ctx: typer.Context,
    out_root: Annotated[Path, typer.Option(help="Folder that receives runs/demo-<time>/.")] = Path("runs"),
    run_name: Annotated[str | None, typer.Option(help="Run folder name (default demo-<timestamp>).")] = None,
    modes: Annotated[str, typer.Option(help="PPO reward modes, comma-separated: tlcr, tlcr_fixed, seq, "
                                            "tlcr_positive_only, tlcr_negative_only.")] = "tlcr",
    ppo_steps: Annotated[int | None, typer.Option(help="PPO steps per mode (default: the budget's).")] = None,
    smoke: Annotated[bool, typer.Option(help="Tiny budget (~2 min): checks every stage runs; numbers mean little.")]
    = False,
    tokenizer: Annotated[str | None, typer.Option(
        help="Build the tiny models on an existing tokenizer (folder or Hub id, e.g. ../shared/tokenizers/llama2, "
             "as in the paper) instead of one trained on the task's text.")] = None,
) -> None:
    """The whole pipeline offline: tiny models, SFT, labeling, discriminator + reward model, the service on
    loopback, PPO with TLCR rewards over HTTP, evaluation, and a report in runs/demo-*/."""
    from tlcr.demo import MODE_NAMES, DemoConfig, run_demo

    mode_list = tuple(m.strip() for m in modes.split(",") if m.strip())
    unknown = [m for m in mode_list if m not in MODE_NAMES]
    if not mode_list or unknown:
        raise typer.BadParameter(f"unknown reward mode(s) {unknown or modes!r}; choose from {', '.join(MODE_NAMES)}")
    overrides: dict[str, object] = {"out_root": out_root, "run_name": run_name, "modes": mode_list}
    if ppo_steps is not None:
        overrides["ppo_steps"] = ppo_steps
    if tokenizer is not None:
        overrides["tokenizer"] = tokenizer
    config = DemoConfig.smoke(**overrides) if smoke else DemoConfig(**overrides)  # type: ignore[arg-type]
    try:
        run_demo(config, verbosity=ctx.meta.get(VERBOSITY_KEY, 0))
    except FileExistsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(ExitCode.BAD_INPUT) from exc


@app.command("bootstrap-model")
def bootstrap_model_command(
    out: Annotated[Path, typer.Option(help="Folder to create: discriminator/, policy/ and ppo.yaml.")],
    pairs: Annotated[int | None, typer.Option(
        help="Controlled-task pairs, split 20/40/40 into SFT / labels / PPO prompts (default 1500).")] = None,
    epochs: Annotated[float | None, typer.Option(help="Discriminator training epochs (default 4).")] = None,
) -> None:
    """Train the offline demo discriminator (what a fresh `docker compose up` serves): no network, about a
    minute on CPU. Does nothing when OUT already holds a complete one."""
    from tlcr.demo_model import DemoModelConfig, bootstrap_demo_model, is_complete

    if is_complete(out):
        typer.echo(f"demo model already in {out}: nothing to do")
        return
    if out.exists():
        typer.echo(f"error: {out} exists but is not a complete demo model: remove it first", err=True)
        raise typer.Exit(ExitCode.BAD_INPUT)
    overrides = {key: value for key, value in (("pairs", pairs), ("discriminator_epochs", epochs)) if value is not None}
    config = DemoModelConfig(**overrides)  # type: ignore[arg-type]
    typer.echo(f"training the offline demo discriminator into {out} ({config.pairs} controlled-task pairs)")
    metrics = bootstrap_demo_model(out, config)
    summary = {k: round(v, 3) for k, v in (metrics.get("eval") or {}).items() if isinstance(v, float)}
    typer.echo(f"demo discriminator saved to {out / 'discriminator'}; held-out metrics: {summary}")


def tiny_model_corpus(source: str, seed: int = 0) -> list[str]:
    """Texts to train a tiny tokenizer on: the controlled task's corpus, or a pairs file's texts."""
    if source == "controlled":
        from tlcr.data.controlled import ControlledTask

        return ControlledTask().corpus()  # the same fixed KB every stage draws pairs from
    from tlcr.data.pairs import load_preference_pairs

    pairs = load_preference_pairs(source, on_error="skip")
    return [t for p in pairs for t in (p.prompt + p.chosen, p.rejected)]


def _register_stages() -> None:
    # Each stage adds its commands here; a module is listed only once its commands work.
    for module in ("labeling.cli", "service.cli", "trainer.cli_rewards", "trainer.cli_policy", "tlcr.evaluation.cli"):
        __import__(module, fromlist=["register"]).register(app)


_register_stages()


if __name__ == "__main__":
    app()
