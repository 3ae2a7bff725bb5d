"""What each optional extra of the `tlcr` package brings, and which extras each `tlcr` subcommand needs.

`pip install tlcr` is the light client (httpx, pydantic). Every stage is an extra (pyproject.toml); this table
is what the `tlcr` command checks before it imports a stage, so a missing extra is a one-line message with the
exact install command (exit 2), not a traceback. Only the standard library is imported here.
"""

from __future__ import annotations

from importlib.util import find_spec

# The modules each extra installs that its commands import (module names, not distribution names).
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "cli": ("typer", "yaml", "pydantic_settings"),
    "service": ("torch", "transformers", "fastapi", "uvicorn", "prometheus_client"),
    "label": ("openai", "Levenshtein", "transformers", "torch"),
    "train": ("torch", "transformers", "trl", "accelerate", "datasets"),
    "eval": ("torch", "transformers", "trl", "accelerate", "datasets", "matplotlib"),
    "ray": ("ray",),  # Ray Serve (tlcr serve-ray); not part of `all`
}
ALL = ("service", "label", "train", "eval")

# The extras each subcommand needs (every one also needs "cli", which each stage extra includes).
COMMAND_EXTRAS: dict[str, tuple[str, ...]] = {
    "data": ("train",),  # pairs from the Hub go through `datasets`
    "tiny-model": ("train",),
    "label": ("label",),
    "serve": ("service",),
    "serve-ray": ("service", "ray"),
    "train-discriminator": ("train",),
    "train-reward-model": ("train",),
    "sft": ("train",),
    "ppo": ("train",),
    "dpo": ("train",),
    "plot": ("eval",),
    "eval": ("eval",),
    "bootstrap-model": ("train", "label"),  # SFT, labels from the chosen reviser, the discriminator
    "demo": ALL,
}


def missing_modules(extras: tuple[str, ...]) -> list[str]:
    """The modules of `extras` (and of the command line itself) that are not installed."""
    wanted = dict.fromkeys(m for extra in ("cli", *extras) for m in EXTRA_MODULES[extra])
    return [module for module in wanted if find_spec(module) is None]


def extra_of_module(module: str) -> str | None:
    """The first extra that installs top-level `module` (None: not one of ours)."""
    top = module.split(".")[0]
    for extra in (*ALL, "cli"):
        if top in EXTRA_MODULES[extra]:
            return extra
    return None


def install_line(extras: tuple[str, ...]) -> str:
    """The exact command that installs `extras`: `pip install 'tlcr[service]'`; every stage: `tlcr[all]`."""
    name = "all" if set(ALL) <= set(extras) else ",".join(extras)
    return f"pip install 'tlcr[{name}]'"


def missing_extra_message(command: str, extras: tuple[str, ...], missing: list[str]) -> str:
    what = "the extras " + ", ".join(extras) if len(extras) > 1 else f"the '{extras[0]}' extra"
    return (f"error: `tlcr {command}` needs {what} (not installed: {', '.join(missing)}). "
            f"Install it with: {install_line(extras)}")
