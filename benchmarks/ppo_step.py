"""PPO step-time breakdown on tiny CPU models against a real reward service on loopback.

    python benchmarks/ppo_step.py [--steps 8] [--warmup 2] [--rounds 2] [--rollout-batch-size 16] [--max-new-tokens 48]

Builds a tiny policy and discriminator (or takes --policy / --discriminator), starts the service as a
subprocess, then runs PPO in this process with the same settings, alternating two variants: reward fetch
overlapped with the reference/value forwards (the default), and fetched before them (serial). Prints mean seconds per
phase and their share of the step. Target: reward fetch ≤ 10 % of step time, i.e. the time the step
actually spends on rewards (the wait after the forwards when overlapped) ≤ 10 %.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PHASES = [("generate", "time/generate"), ("ref + value forward", "time/forward"),
          ("reward fetch (request latency)", "time/reward_fetch"),
          ("reward wait (on the step's path)", "time/reward_wait"), ("PPO update", "time/update"),
          ("whole step", "time/step")]
TARGET = 0.10


def build_models(workdir: Path) -> tuple[Path, Path]:
    from tlcr.core.data.controlled import ControlledTask
    from tlcr.core.models import build_tiny_model, load_token_classifier, load_tokenizer, mark_discriminator_config

    policy = build_tiny_model(ControlledTask().corpus(), workdir / "policy", vocab_size=1024, hidden_size=64,
                              num_layers=2, num_heads=4)
    discriminator = workdir / "discriminator"
    model = load_token_classifier(policy, num_labels=1, device="cpu", dtype="float32")
    mark_discriminator_config(model.config, max_length=512, base_model=str(policy))
    model.save_pretrained(discriminator)
    load_tokenizer(policy).save_pretrained(discriminator)
    return policy, discriminator


def run(args: argparse.Namespace, policy: Path, url: str, out: Path, overlap: bool) -> list[dict[str, float]]:
    import torch

    from tlcr.trainer.metrics_log import read_metrics
    from tlcr.trainer.ppo import train_ppo
    from tlcr.trainer.ppo_config import PPOConfig

    torch.set_num_threads(1)
    config = PPOConfig(policy=str(policy), output_dir=str(out), reward_url=url, num_steps=args.warmup + args.steps,
                       rollout_batch_size=args.rollout_batch_size, mini_batch_size=args.rollout_batch_size // 2,
                       micro_batch_size=args.rollout_batch_size // 2, forward_batch_size=args.rollout_batch_size,
                       ppo_epochs=2, max_new_tokens=args.max_new_tokens, learning_rate=1e-4, data_limit=400,
                       save_steps=10_000, report_to="none", overlap_reward_fetch=overlap, overwrite=True,
                       value_model=str(args.discriminator_dir))
    train_ppo(config)
    return [row for row in read_metrics(out) if row["step"] > args.warmup]


def summarize(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.fmean(row[key] for row in rows) for _, key in PHASES}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="measured PPO steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="steps run first and not measured")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of each variant")
    parser.add_argument("--rollout-batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--policy", type=Path, help="policy checkpoint (default: build a tiny one)")
    parser.add_argument("--discriminator", type=Path, help="discriminator checkpoint (default: build a tiny one)")
    args = parser.parse_args()

    from tlcr.service.launcher import start_service

    with tempfile.TemporaryDirectory(prefix="tlcr-bench-") as tmp:
        workdir = Path(tmp)
        if args.policy and args.discriminator:
            policy, discriminator = args.policy, args.discriminator
        else:
            policy, discriminator = build_models(workdir)
        args.discriminator_dir = discriminator
        with start_service(discriminator, log_path=workdir / "service.log",
                           extra_args=["--torch-threads", "1", "--max-wait-ms", "2"]) as service:
            # Variants alternate (A B A B) so drift in a shared machine's load hits both alike.
            rows: dict[str, list[dict[str, float]]] = {"overlapped": [], "serial": []}
            for round_ in range(args.rounds):
                for name, overlap in (("overlapped", True), ("serial", False)):
                    rows[name] += run(args, policy, service.url, workdir / f"{name}-{round_}", overlap)
            results = {name: summarize(variant_rows) for name, variant_rows in rows.items()}

    print(f"\nPPO step breakdown: {args.rollout_batch_size} prompts x up to {args.max_new_tokens} new tokens, "
          f"tiny Llama on CPU, mean of {args.rounds} x {args.steps} steps (each run after {args.warmup} warm-up) "
          "per variant\n")
    header = f"{'phase':<34}" + "".join(f"{name + ' s':>14}{'%':>7}" for name in results)
    print(header)
    print("-" * len(header))
    for label, key in PHASES:
        cells = "".join(f"{r[key]:>14.4f}{100 * r[key] / r['time/step']:>6.1f}%" for r in results.values())
        print(f"{label:<34}{cells}")
    overlapped, serial = results["overlapped"], results["serial"]
    on_path = overlapped["time/reward_wait"] / overlapped["time/step"]
    serial_on_path = serial["time/reward_wait"] / serial["time/step"]
    latency_share = overlapped["time/reward_fetch"] / overlapped["time/step"]
    print(f"\nreward time on the step's path: overlapped {100 * on_path:.1f}% of step "
          f"(target <= {100 * TARGET:.0f}%: {'PASS' if on_path <= TARGET else 'FAIL'}); "
          f"serial {100 * serial_on_path:.1f}%")
    print(f"reward request latency / step (overlapped): {100 * latency_share:.1f}% "
          f"(<= {100 * TARGET:.0f}%: {'yes' if latency_share <= TARGET else 'no'})")
    print(f"step time serial / overlapped: {serial['time/step'] / overlapped['time/step']:.2f}x "
          "(the service shares this machine's cores, so overlapping also slows the forwards here)")
    return 0 if on_path <= TARGET else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
