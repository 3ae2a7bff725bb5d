"""The `tlcr` console command: one entry point that reaches every stage.

Each stage package registers its own subcommands (``register(app)`` in its ``cli`` module); heavy
imports (torch, transformers) happen inside the commands so `tlcr --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from core.exit_codes import ExitCode
from core.logs import VERBOSITY_KEY, setup_logging

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


@app.command("data")
def data_command(
    out: Annotated[Path, typer.Option(help="Output .jsonl of {id, prompt, chosen, rejected, meta} records.")],
    source: Annotated[str, typer.Option(
        help="'controlled' (offline task), a local .jsonl/.jsonl.gz, or a Hub id like Anthropic/hh-rlhf."
    )] = "controlled",
    split: Annotated[str, typer.Option(help="Hub dataset split.")] = "train",
    data_dir: Annotated[str, typer.Option(help="Hub dataset subset (HH-RLHF: harmless-base, ...).")] = "harmless-base",
    part: Annotated[str, typer.Option(help="Paper split part to keep: all, sft, rm or ppo.")] = "all",
    limit: Annotated[int | None, typer.Option(
        help="Keep at most this many pairs (controlled: how many to make).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the controlled task and of the 20/40/40 split.")] = 42,
    on_error: Annotated[str, typer.Option(help="raise: stop at the first bad record; skip: count and skip.")] = "raise",
) -> None:
    """Write preference pairs (optionally one part of the paper's 20/40/40 split) as JSONL."""
    from tlcr.data.jsonl import DataError, SkipReport, write_jsonl
    from tlcr.data.pairs import load_preference_pairs, paper_split

    if part not in ("all", "sft", "rm", "ppo"):
        raise typer.BadParameter(f"--part must be all, sft, rm or ppo, not {part!r}")
    if on_error not in ("raise", "skip"):
        raise typer.BadParameter(f"--on-error must be raise or skip, not {on_error!r}")
    report = SkipReport()
    try:
        pairs = load_preference_pairs(source, split=split, data_dir=data_dir, limit=limit, seed=seed,
                                      on_error=on_error, report=report)  # type: ignore[arg-type]
    except DataError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(ExitCode.BAD_INPUT) from exc
    if part != "all":
        pairs = paper_split(pairs, seed=seed)[part]
    write_jsonl(out, [p.to_dict() for p in pairs])
    typer.echo(f"wrote {len(pairs)} pairs to {out}; {report.summary()}")


@app.command("tiny-model")
def tiny_model_command(
    out: Annotated[Path, typer.Option(help="Directory for the tokenizer and model (save_pretrained).")],
    source: Annotated[str, typer.Option(
        help="Text to train the tokenizer on: 'controlled' or a pairs file.")] = "controlled",
    arch: Annotated[str, typer.Option(help="llama or gpt2.")] = "llama",
    vocab_size: int = 1024,
    hidden_size: int = 64,
    num_layers: int = 2,
    seed: int = 0,
    tokenizer: Annotated[str | None, typer.Option(
        help="An existing tokenizer (folder or Hub id, e.g. ../shared/tokenizers/llama2) instead of training "
             "one; --source and --vocab-size are then unused.")] = None,
) -> None:
    """Build a tiny causal LM + byte-level BPE tokenizer for offline use (loaded later by path)."""
    from tlcr.models import ModelLoadError, build_tiny_model

    texts = tiny_model_corpus(source, seed) if tokenizer is None else []
    try:
        path = build_tiny_model(texts, out, arch=arch, vocab_size=vocab_size,  # type: ignore[arg-type]
                                hidden_size=hidden_size, num_layers=num_layers, seed=seed, tokenizer=tokenizer)
    except ModelLoadError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(ExitCode.BAD_INPUT) from exc
    typer.echo(f"tiny {arch} model and tokenizer saved to {path}")


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
