"""The TLCR pipeline's stages as reusable functions: `tlcr demo` and `benchmarks/compare_methods.py` both call them.

Each stage takes the sizes it needs from one `PipelineConfig` and the paths of what earlier stages wrote,
writes its outputs under a run folder and returns their paths (or metrics). `policy_kl` measures a policy's
KL to its SFT reference on held-out prompts, the KL column of the comparison; `evaluate_policy` scores a
policy's sampled responses to held-out questions with the oracle (tuning on validation, final numbers on test).
"""

from __future__ import annotations

import asyncio
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlcr.core.data.pairs import PreferencePair


@dataclass
class PipelineConfig:
    """Sizes and learning settings of every stage (defaults: the demo's recipe for 2 CPU cores)."""

    pairs: int = field(default=3000, metadata={
        "help": "Controlled-task pairs, split 20/40/40 into SFT / reward models / PPO prompts."})
    data_seed: int = field(default=42, metadata={"help": "Seed of the controlled task's pairs and of the split."})
    hidden_size: int = field(default=128, metadata={"help": "Hidden size of the tiny models."})
    num_layers: int = field(default=2, metadata={"help": "Transformer layers of the tiny models."})
    vocab_size: int = field(default=1024, metadata={"help": "Vocabulary of the tokenizer trained on the task's text."})
    tokenizer: str | None = field(default=None, metadata={
        "help": "Build the tiny models on an existing tokenizer (folder or Hub id, e.g. ../shared/tokenizers/llama2, "
                "as in the paper) instead of one trained on the task's text."})
    sft_noisy_fraction: float = field(default=0.6, metadata={
        "help": "Share of SFT targets that are the faulty rejected response (gives PPO something to fix)."})
    # tuned on validation questions, worst seed of 0-2 (benchmarks/tune_sft.py, docs/results.md)
    sft_epochs: float = field(default=24.0, metadata={"help": "SFT epochs."})
    sft_learning_rate: float = field(default=3e-3, metadata={"help": "SFT learning rate."})
    sft_batch_size: int = field(default=16, metadata={"help": "SFT batch size."})
    discriminator_epochs: float = field(default=4.0, metadata={"help": "Token discriminator epochs."})
    reward_model_epochs: float = field(default=4.0, metadata={"help": "Sequence reward model epochs."})
    # the demo's length; benchmarks/compare_methods.py tunes the length per seed (15, 30 or 60 steps)
    ppo_steps: int = field(default=50, metadata={"help": "PPO steps per reward mode."})
    ppo_rollout_batch: int = field(default=32, metadata={"help": "PPO rollouts per step."})
    # a point of compare_methods' lr × β grid, from which each seed there picks its own on validation questions
    ppo_learning_rate: float = field(default=5e-5, metadata={"help": "PPO policy learning rate."})
    ppo_value_learning_rate: float | None = field(default=1e-3, metadata={
        "help": "PPO value-model learning rate."})
    ppo_epochs: int = field(default=2, metadata={"help": "PPO epochs over each rollout batch."})
    ppo_kl_coef: float = field(default=0.2, metadata={"help": "PPO KL coefficient β."})
    ppo_value_init: str = field(default="discriminator", metadata={
        "help": "What PPO's value model starts from: discriminator or sft."})
    max_new_tokens: int = field(default=40, metadata={"help": "Most tokens of a sampled response."})
    dpo_epochs: float = field(default=1.0, metadata={"help": "DPO epochs (compare_methods)."})
    # 1e-4 diverged (KL to SFT 11-98 nats, longer responses) on 3 seeds
    dpo_learning_rate: float = field(default=2e-5, metadata={"help": "DPO learning rate (compare_methods)."})
    dpo_beta: float = field(default=0.1, metadata={"help": "DPO β (compare_methods)."})
    seed: int = field(default=0, metadata={"help": "Seed of the models' initialisation, training and sampling."})
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class PreparedData:
    base: Path  # tokenizer + untrained tiny model
    split: dict[str, list[PreferencePair]]  # "sft", "rm", "ppo"
    files: dict[str, Path]  # the split parts as .jsonl files, same keys


def controlled_task() -> Any:
    """The controlled task with the one fixed knowledge base every stage (and PPO's oracle metric) uses."""
    from tlcr.core.data.controlled import ControlledTask

    return ControlledTask()


def held_out_prompts(part: str, samples_per_prompt: int, limit: int | None = None) -> list[str]:
    """The controlled task's validation or test questions (never a training prompt), each repeated
    `samples_per_prompt` times in a row so sampled evaluation sees several responses per question."""
    if samples_per_prompt < 1:
        raise ValueError(f"samples_per_prompt must be at least 1, got {samples_per_prompt}")
    prompts = controlled_task().prompts(part)[:limit]
    return [p for p in prompts for _ in range(samples_per_prompt)]


def prepare_data(config: PipelineConfig, run_dir: Path, source: str = "controlled", *,
                 holdout: int = 0) -> tuple[PreparedData, list[PreferencePair]]:
    """Tokenizer + tiny model trained on the source's text, and the 20/40/40 split written as .jsonl.

    `holdout` pairs are kept out of the split (for another source than "controlled", whose held-out
    prompts are drawn fresh); returns (prepared data, held-out pairs).
    """
    from tlcr.core.data.jsonl import write_jsonl
    from tlcr.core.data.sources import load_preference_pairs
    from tlcr.core.data.splits import paper_split
    from tlcr.core.models import build_tiny_model

    if source == "controlled":
        task = controlled_task()
        pairs = task.pairs(config.pairs, seed=config.data_seed)
        corpus = task.corpus()
    else:
        pairs = load_preference_pairs(source, on_error="skip")
        if len(pairs) <= holdout:
            raise ValueError(f"{source}: {len(pairs)} usable pairs, fewer than the {holdout} held out")
        pairs = list(pairs)
        # a fixed tail is held out, the rest shuffled by the split's seed
        held_out, pairs = pairs[len(pairs) - holdout:], pairs[: len(pairs) - holdout][: config.pairs]
        corpus = [t for p in pairs for t in (p.prompt + p.chosen, p.rejected)]
    held = [] if source == "controlled" else held_out
    base = build_tiny_model(corpus, run_dir / "models" / "base", vocab_size=config.vocab_size,
                            hidden_size=config.hidden_size, num_layers=config.num_layers, seed=config.seed,
                            tokenizer=config.tokenizer)
    split = paper_split(pairs, seed=config.data_seed)
    files = {}
    for part, part_pairs in split.items():
        files[part] = run_dir / "data" / f"{part}.jsonl"
        write_jsonl(files[part], [p.to_dict() for p in part_pairs])
    return PreparedData(base, split, files), held


def sft_stage(config: PipelineConfig, data: PreparedData, run_dir: Path) -> Path:
    from tlcr.trainer.policy_options import SFTOptions
    from tlcr.trainer.sft import train_sft

    return train_sft(SFTOptions(
        model=str(data.base), output_dir=str(run_dir / "models" / "sft"), source=str(data.files["sft"]),
        split_part="all", noisy_fraction=config.sft_noisy_fraction, epochs=config.sft_epochs,
        learning_rate=config.sft_learning_rate, batch_size=config.sft_batch_size, max_length=256, seed=config.seed,
        dtype="float32", logging_steps=50, report_to="none", data_seed=config.data_seed))


def label_stage(data: PreparedData, sft: Path, run_dir: Path) -> tuple[Path, dict[str, Any]]:
    """Labels of the reward-model part with the chosen reviser (revision := chosen)."""
    from tlcr.core.models import load_tokenizer
    from tlcr.labeling.revisers import ChosenReviser
    from tlcr.labeling.worker import WorkerConfig, label_pairs

    labels_path = run_dir / "data" / "labels.jsonl"
    result = asyncio.run(label_pairs(data.split["rm"], ChosenReviser(), load_tokenizer(sft),
                                     WorkerConfig(out=labels_path, tokenizer_name=str(sft), progress=False)))
    return labels_path, {"status": dict(result.summary.by_status), "labels": dict(result.summary.label_counts)}


def discriminator_stage(config: PipelineConfig, labels_path: Path, sft: Path, run_dir: Path,
                        ) -> tuple[Path, dict[str, Any]]:
    from tlcr.core.presets import load_preset
    from tlcr.trainer.discriminator import train_discriminator
    from tlcr.trainer.reward_options import DiscriminatorOptions

    out = run_dir / "models" / "discriminator"
    options = load_preset(DiscriminatorOptions, "discriminator", "tiny", {
        "model": str(sft), "source": str(labels_path), "output_dir": str(out),
        "epochs": config.discriminator_epochs, "seed": config.seed, "report_to": "none"})
    metrics = train_discriminator(options.source, options.model, options.training_config(), dtype=options.dtype)
    return out, metrics


def reward_model_stage(config: PipelineConfig, data: PreparedData, sft: Path, run_dir: Path,
                       ) -> tuple[Path, dict[str, Any]]:
    from tlcr.core.presets import load_preset
    from tlcr.trainer.reward_model import train_reward_model
    from tlcr.trainer.reward_options import RewardModelOptions

    out = run_dir / "models" / "reward_model"
    options = load_preset(RewardModelOptions, "reward_model", "tiny", {
        "model": str(sft), "source": str(data.files["rm"]), "output_dir": str(out),
        "epochs": config.reward_model_epochs, "seed": config.seed, "report_to": "none"})
    metrics = train_reward_model(options.source, options.model, options.training_config(), dtype=options.dtype,
                                 limit=options.data_limit, data_seed=options.data_seed, part=options.split_part)
    return out, metrics


def start_reward_service(discriminator: Path, reward_model: Path | None, run_dir: Path) -> Any:
    """The reward service on a free loopback port (a `ServiceProcess`: `.url`, `.stop()`)."""
    from tlcr.service.launcher import start_service

    return start_service(discriminator, sequence_model=reward_model, log_path=run_dir / "service.log",
                         # seq mode sends decoded text, which can re-tokenize longer than sampled (docs/trainer.md)
                         extra_args=["--torch-threads", "1", "--truncation", "prompt_left"])


def ppo_stage(config: PipelineConfig, mode: str, sft: Path, reward_url: str, discriminator: Path,
              prompts_file: Path, out: Path, *, save_steps: int | None = None) -> tuple[Path, dict[str, Any]]:
    """PPO from the SFT policy with rewards of `mode` fetched from the service; returns (run dir, summary).

    `save_steps`: also keep every save_steps-th step's checkpoint (`out/checkpoint-N/policy`), so one run
    gives the policies of several training lengths; default: only the last step's."""
    from tlcr.core.presets import preset_values
    from tlcr.trainer.ppo import PPOTrainer
    from tlcr.trainer.ppo_config import PPOConfig
    from tlcr.trainer.reward_options import DiscriminatorOptions

    batch = config.ppo_rollout_batch
    # The service refuses items longer than the discriminator's max_length, on /sequence_rewards too, and
    # PPOTrainer drops such prompts only in the token modes: keep every prompt that fits a full response.
    discriminator_max_length = preset_values(DiscriminatorOptions, "discriminator", "tiny")["max_length"]
    max_prompt_length = discriminator_max_length - config.max_new_tokens
    ppo_config = PPOConfig(
        policy=str(sft), reward_url=reward_url, reward_mode=mode, value_init=config.ppo_value_init,
        value_model=str(discriminator) if config.ppo_value_init == "discriminator" else None,
        source=str(prompts_file), split_part="all", data_seed=config.data_seed, max_prompt_length=max_prompt_length,
        max_new_tokens=config.max_new_tokens, num_steps=config.ppo_steps, rollout_batch_size=batch,
        mini_batch_size=max(batch // 2, 1), micro_batch_size=max(batch // 2, 1), forward_batch_size=batch,
        ppo_epochs=config.ppo_epochs, learning_rate=config.ppo_learning_rate,
        value_learning_rate=config.ppo_value_learning_rate, kl_coef=config.ppo_kl_coef, output_dir=str(out),
        seed=config.seed, dtype="float32", save_steps=save_steps or max(config.ppo_steps, 1),
        save_total_limit=None if save_steps else 2, report_to="none")
    summary = PPOTrainer(ppo_config).train()
    return out, summary


def dpo_stage(config: PipelineConfig, sft: Path, data: PreparedData, run_dir: Path) -> Path:
    """DPO from the SFT policy on the reward models' preference part (the paper's DPO row)."""
    from tlcr.trainer.dpo import train_dpo
    from tlcr.trainer.policy_options import DPOOptions

    return train_dpo(DPOOptions(
        model=str(sft), output_dir=str(run_dir / "models" / "dpo"), source=str(data.files["rm"]), split_part="all",
        beta=config.dpo_beta, epochs=config.dpo_epochs, learning_rate=config.dpo_learning_rate, batch_size=16,
        max_length=256, seed=config.seed, dtype="float32", logging_steps=50, report_to="none",
        data_seed=config.data_seed))


def policy_kl(policy: str | Path, reference: str | Path, prompts: Sequence[str], *, max_new_tokens: int,
              seed: int = 0, batch_size: int = 32) -> float:
    """Monte-Carlo KL(π ‖ π_ref) per response: responses sampled from π (temperature 1, no top-p cut),
    Σ_t log π(y_t) − log π_ref(y_t) over response tokens (EOS included), averaged over prompts."""
    import torch

    from tlcr.core.models import encode_prompt_response, load_causal_lm, load_tokenizer
    from tlcr.trainer.rollout import forward_rollout, generate_rollout, sampling_config

    if not prompts:
        return math.nan
    tokenizer = load_tokenizer(policy)
    model = load_causal_lm(policy).eval()
    ref_model = load_causal_lm(reference).eval()
    torch.manual_seed(seed)
    generation = sampling_config(tokenizer, max_new_tokens=max_new_tokens, temperature=1.0, top_p=1.0)
    prompt_ids = [encode_prompt_response(tokenizer, p, "")[0] for p in prompts]
    rollout = generate_rollout(model, prompts, prompt_ids, generation, pad_token_id=tokenizer.pad_token_id,
                               eos_token_ids=tokenizer.eos_token_id, batch_size=batch_size)
    kwargs: dict[str, Any] = dict(temperature=1.0, batch_size=batch_size, with_values=False, with_entropy=False)
    logprobs = forward_rollout(model, rollout, **kwargs).logprobs
    ref_logprobs = forward_rollout(ref_model, rollout, **kwargs).logprobs
    per_response = ((logprobs - ref_logprobs) * rollout.mask.float()).sum(dim=1)
    return float(per_response.mean())


# metric name -> key of a response row
PER_RESPONSE = {"oracle": "oracle_score", "helpful": "helpful", "complete": "complete", "length": "tokens",
                "wrong facts": "wrong", "style faults": "style_faults", "details": "details"}


def response_row(task: Any, prompt: str, text: str, length: float) -> dict[str, Any]:
    """One evaluated response: the oracle's score and the parts it is made of, and the length in policy tokens."""
    score = task.oracle(prompt, text)
    return {"prompt": prompt, "response": text, "oracle_score": score.score, "helpful": float(score.helpful),
            "complete": float(score.complete), "tokens": float(length), "wrong": float(score.wrong),
            "style_faults": float(score.rude + score.repetitions + score.hedges),
            "details": score.details / score.asked}


def evaluate_policy(policy: Path, sft: Path, prompts: Sequence[str], config: PipelineConfig, *,
                    do_sample: bool = True, top_p: float = 0.9, with_kl: bool = True) -> dict[str, Any]:
    """Per response: oracle score and parts, length in policy tokens; the means; and the policy's KL to SFT
    (0 for the SFT policy itself, NaN when `with_kl` is off)."""
    from tlcr.evaluation.evaluate import EvalConfig, generate_responses_with_lengths

    task = controlled_task()
    eval_config = EvalConfig(max_new_tokens=config.max_new_tokens, batch_size=64, do_sample=do_sample,
                             top_p=top_p, seed=config.seed)
    texts, lengths = generate_responses_with_lengths(policy, prompts, eval_config)
    rows = [response_row(task, prompt, text, length)
            for prompt, text, length in zip(prompts, texts, lengths, strict=True)]
    if policy == sft:
        kl = 0.0
    elif with_kl:
        kl = policy_kl(policy, sft, prompts, max_new_tokens=config.max_new_tokens, seed=config.seed)
    else:
        kl = math.nan
    summary = {key: statistics.fmean(r[key] for r in rows) for key in PER_RESPONSE.values()}
    return {"rows": rows, "summary": {**summary, "kl_to_sft": kl}}
