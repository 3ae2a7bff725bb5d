"""The paper's comparison on the controlled task, every seed tuned on its own, with the tuning inside the intervals:
SFT, DPO, PPO_seq, TLCR_fixed, TLCR, TLCR w/o negative (positive rewards only), TLCR w/o positive (negative only).

Per seed, the `tlcr.pipeline` stages (the same as `tlcr demo`) build one SFT policy, chosen-reviser labels, one
discriminator and one sequence reward model, served by ONE reward service; every method starts from that SFT
policy.

Held out: the controlled task splits its questions once into train / validation / test
(`ControlledTask.question_split`: 144 / 48 / 48). Every SFT, reward-model and PPO prompt is a train question;
validation questions are used only to tune, test questions only for the final numbers.

Tuning, per seed and alike for every method (why: a single tuning seed's 2 × 2 pick decided the old headline,
and the bootstrap did not see that pick's variance; docs/results.md). Each seed trains every candidate of its
method's grid and picks the one with the best validation oracle:
- PPO_seq, TLCR_fixed, TLCR: lr × KL coefficient β, each run to the longest length with the policy kept at
  every checkpoint length, so training length is tuned too (full: 2 × 2 × {15, 30, 60} steps = 12 candidates);
- DPO: lr × β × epochs (2 × 2 × {0.5, 1} = 8 candidates);
- the ablations (w/o negative, w/o positive) change only the reward: they train at TLCR's chosen lr, β and
  length of the same seed (the paper's ablation), for the whole length so Fig. 7's curves line up.
Then each method's chosen candidate is evaluated once on the test questions. Because every seed repeats the
pick, the paired bootstrap over seeds and test prompts carries the pick's variance into every interval.

Reported: per method the test oracle and its parts, length and KL to SFT (mean over seeds), the chosen
candidate per seed; paired bootstrap 95 % intervals for the differences vs SFT and vs TLCR and for each
ordering the paper claims, with the number of seeds whose own difference has the claimed sign; the
validation oracle-vs-KL frontier per method and seed, compared at a common KL (mean over seeds); response length
over PPO steps (Fig. 7); reward sanity of each seed's discriminator; where the time went, against a 60-minute
budget.

    python benchmarks/compare_methods.py --seeds 0,1,2,3,4 --out runs/compare            # one run, 3 seeds at a time
    python benchmarks/compare_methods.py --seeds 0,1,2,3,4 --threads 1,2 --rerun-seeds 5,6,7,8,9 --out runs/repro
                                                         # twice (the second on other seeds) + the check

`--threads 1,2` runs the whole comparison once per thread count (`OMP_NUM_THREADS`: float sums in another
order, as on another machine) into `<out>/omp-N/` and writes `<out>/reproducibility.md`: per claim, whether it
keeps its sign and its significance in every run ("not robust" otherwise). With `--rerun-seeds` the runs after
the first train other seeds: on this machine 1 and 2 threads replay bit-identical numbers, so only new seeds (and
with them new tuning picks, as on the rerun that flipped the old verdict) can show a claim to be fragile.

Writes `<out>/comparison.json` (every number), `comparison.md`, `comparison.png`, `fig7_length.png`,
`oracle_vs_kl.png`. Finished work is reused (per seed `results.json`, per candidate `validation.json`, trained
policies), so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

# Run as a script, this folder comes first on sys.path, where benchmarks/service.py would hide the
# `service` package: drop it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tlcr.core.reward_modes import PolicyRewardMode  # noqa: E402
from tlcr.demo import DemoConfig, StageLog, quiet_libraries  # noqa: E402
from tlcr.evaluation.bootstrap import Interval, paired_bootstrap  # noqa: E402
from tlcr.pipeline import PER_RESPONSE  # noqa: E402

METHODS = ("sft", "dpo", "seq", "tlcr_fixed", "tlcr", "tlcr_positive_only", "tlcr_negative_only")
METHOD_NAMES = {"sft": "SFT", "dpo": "DPO", **{m.value: m.label for m in PolicyRewardMode}}
PPO_MODES = tuple(m.value for m in PolicyRewardMode)
ABLATIONS = ("tlcr_positive_only", "tlcr_negative_only")  # at TLCR's chosen candidate of the same seed
BUDGET_MINUTES = 60
# Fewer seeds than this: the intervals are printed but the run is called not final (a bootstrap over 2-3 seeds
# cannot see how much seeds differ), and no interval is computed over seeds alone (matched KL).
FINAL_SEEDS = 5
# (claim, method a, method b, metric): "a > b" on the test split
CLAIMS = (("PPO_seq > SFT", "seq", "sft", "oracle"), ("TLCR > SFT", "tlcr", "sft", "oracle"),
          ("TLCR > PPO_seq", "tlcr", "seq", "oracle"), ("TLCR_fixed > PPO_seq", "tlcr_fixed", "seq", "oracle"),
          ("TLCR ≥ TLCR_fixed", "tlcr", "tlcr_fixed", "oracle"), ("TLCR > DPO", "tlcr", "dpo", "oracle"),
          ("w/o negative longer than TLCR", "tlcr_positive_only", "tlcr", "length"),
          ("TLCR longer than w/o positive", "tlcr", "tlcr_negative_only", "length"),
          # the mechanisms behind the oracle: negative rewards remove inserted faults, positive ones add details
          ("TLCR: fewer style faults than SFT", "sft", "tlcr", "style faults"),
          ("TLCR: more details than w/o positive", "tlcr", "tlcr_negative_only", "details"))


@dataclass(frozen=True)
class Budget:
    """What one seed trains and evaluates: the tuning grids (the same size for every PPO mode) and the sizes."""

    ppo_grid: Mapping[str, Sequence[float]]
    ppo_checkpoints: Sequence[int]  # PPO steps at which a policy is kept (each a multiple of the first)
    dpo_grid: Mapping[str, Sequence[float]]
    dpo_epochs: Sequence[float]
    smoke: bool = False
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def config(self, seed: int) -> DemoConfig:
        values = {"seed": seed, "data_seed": 42 + seed, **self.overrides, "ppo_steps": max(self.ppo_checkpoints)}
        return DemoConfig.smoke(**values) if self.smoke else DemoConfig(**values)


# The full budget's lengths are what an estimate from measured unit costs fits into 60 minutes for 5 seeds on 2
# cores (docs/results.md, "Time"): {20, 40, 80} PPO steps and {1, 2} DPO epochs came to about 75.
BUDGETS = {
    "full": Budget(ppo_grid={"ppo_learning_rate": (5e-5, 1.5e-4), "ppo_kl_coef": (0.05, 0.2)},
                   ppo_checkpoints=(15, 30, 60),
                   dpo_grid={"dpo_learning_rate": (1e-5, 4e-5), "dpo_beta": (0.1, 0.3)}, dpo_epochs=(0.5, 1.0)),
    # CI: two candidates per method so the per-seed pick is exercised; numbers are meaningless
    "smoke": Budget(ppo_grid={"ppo_learning_rate": (5e-5, 1.5e-4), "ppo_kl_coef": (0.2,)}, ppo_checkpoints=(1, 2),
                    dpo_grid={"dpo_learning_rate": (4e-5,), "dpo_beta": (0.1,)}, dpo_epochs=(0.5, 1.0), smoke=True),
}


def budget_config(budget: str, seed: int) -> DemoConfig:
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}: choose {' or '.join(BUDGETS)}")
    return BUDGETS[budget].config(seed)


def product(space: Mapping[str, Sequence[float]]) -> list[dict[str, float]]:
    return [dict(zip(space, values, strict=True)) for values in itertools.product(*space.values())]


def grid(method: str, budget: Budget) -> list[dict[str, float]]:
    """The candidates a seed tunes `method` over (SFT and the ablations: none; they are not tuned)."""
    if method == "sft" or method in ABLATIONS:
        return []
    if method == "dpo":
        return [{**p, "dpo_epochs": e} for p in product(budget.dpo_grid) for e in budget.dpo_epochs]
    return [{**p, "ppo_steps": s} for p in product(budget.ppo_grid) for s in budget.ppo_checkpoints]


def point_name(point: Mapping[str, float]) -> str:
    return "-".join(f"{key.split('_', 1)[1]}{value:g}" for key, value in point.items()) or "base"


def run_name(point: Mapping[str, float]) -> str:
    """The training run a candidate comes from: PPO lengths are checkpoints of one run."""
    return point_name({k: v for k, v in point.items() if k != "ppo_steps"})


# ------------------------------------------------------------------------------------------------ one seed

@dataclass
class SeedBase:
    config: DemoConfig
    dir: Path
    data: Any
    sft: Path
    discriminator: Path
    reward_model: Path
    stages: dict[str, Any]


def build_seed(config: DemoConfig, seed_dir: Path, log: StageLog, sft_from: Path | None = None) -> SeedBase:
    """The seed's shared stages, or the ones an interrupted run of the same seed already finished.

    `sft_from`: a `benchmarks/tune_sft.py` output folder; its SFT policy of this seed and recipe, when there is
    one, is copied instead of trained again (the same seed, data and recipe train the same policy)."""
    import shutil

    from tlcr import pipeline

    done = seed_dir / "base.json"
    if done.exists():
        saved = json.loads(done.read_text())
        data = pipeline.PreparedData(Path(saved["base"]), {}, {k: Path(v) for k, v in saved["files"].items()})
        return SeedBase(config, seed_dir, data, Path(saved["sft"]), Path(saved["discriminator"]),
                        Path(saved["reward_model"]), saved["stages"])
    with log.stage("base: data, SFT, labels, discriminator, reward model"):
        data, _ = pipeline.prepare_data(config, seed_dir)
        trained = sft_from and sft_from / f"seed-{config.seed}" / tuned_sft_name(config) / "models" / "sft"
        if trained and (trained / "config.json").exists():
            sft = seed_dir / "models" / "sft"
            shutil.copytree(trained, sft, dirs_exist_ok=True)
            log.console.print(f"  SFT policy copied from {trained}")
        else:
            sft = pipeline.sft_stage(config, data, seed_dir)
        labels_path, labeling = pipeline.label_stage(data, sft, seed_dir)
        disc, disc_metrics = pipeline.discriminator_stage(config, labels_path, sft, seed_dir)
        rm, rm_metrics = pipeline.reward_model_stage(config, data, sft, seed_dir)
    stages = {"labeling": labeling, "discriminator": disc_metrics.get("eval", {}),
              "reward_model": rm_metrics.get("eval", {})}
    done.write_text(json.dumps({"base": str(data.base), "files": {k: str(v) for k, v in data.files.items()},
                                "sft": str(sft), "discriminator": str(disc), "reward_model": str(rm),
                                "stages": stages}, indent=1, default=str))
    return SeedBase(config, seed_dir, data, sft, disc, rm, stages)


def tuned_sft_name(config: DemoConfig) -> str:
    """The folder `benchmarks/tune_sft.py` gives this config's SFT recipe."""
    return f"epochs{config.sft_epochs:g}-learning_rate{config.sft_learning_rate:g}"


def train_method(base: SeedBase, method: str, point: Mapping[str, float], reward_url: str,
                 checkpoints: Sequence[int]) -> Path:
    """The policy of `method` at candidate `point` (SFT: the SFT policy itself). A PPO run is trained once to
    the longest length, keeping the policy at every checkpoint length; a later candidate of the same run reuses it."""
    import shutil

    from tlcr import pipeline

    if method == "sft":
        return base.sft
    out = base.dir / "runs" / method / run_name(point)
    if method == "dpo":
        trained = out / "models" / "dpo"
        if not (trained / "config.json").exists():
            pipeline.dpo_stage(replace(base.config, **point), base.sft, base.data, out)
        return trained
    steps = int(point["ppo_steps"])
    run = out / "ppo"
    if not (run / "policy" / "config.json").exists():
        shutil.rmtree(run, ignore_errors=True)  # an interrupted run's checkpoints: trained again from the start
        longest = max(checkpoints)
        training = {k: v for k, v in point.items() if k != "ppo_steps"}
        pipeline.ppo_stage(replace(base.config, **training, ppo_steps=longest), method, base.sft, reward_url,
                           base.discriminator, base.data.files["ppo"], run, save_steps=min(checkpoints))
        prune_checkpoints(run)
    return run / "policy" if steps == max(checkpoints) else run / f"checkpoint-{steps}" / "policy"


def prune_checkpoints(run: Path) -> None:
    """Keep only each checkpoint's exported policy: the optimiser and value states (about 4 times the policy's
    size) are not needed once the run is done, and 5 seeds × 14 runs × 4 checkpoints would fill gigabytes."""
    import shutil

    for checkpoint in run.glob("checkpoint-*"):
        for item in checkpoint.iterdir():
            if item.name != "policy":
                shutil.rmtree(item) if item.is_dir() else item.unlink()


def cached(path: Path, compute: Any) -> dict[str, Any]:
    if path.exists():
        return json.loads(path.read_text())
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str))
    return result


def choose(candidates: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The candidate with the best validation oracle (the first of equals)."""
    return dict(max(candidates, key=lambda r: r["oracle_score"])["point"])


def runs_of(points: Sequence[Mapping[str, float]]) -> list[list[dict[str, float]]]:
    """Candidates grouped by the training run they come from, in grid order."""
    groups: dict[str, list[dict[str, float]]] = {}
    for point in points:
        groups.setdefault(run_name(point), []).append(dict(point))
    return list(groups.values())


def pick_stability(names: Sequence[str], rows: Sequence[Sequence[Mapping[str, Any]]], *, n_resamples: int = 2000,
                   seed: int = 0) -> dict[str, Any]:
    """How firmly the validation questions pick one candidate: resample the questions (paired across candidates)
    and count how often the same candidate wins; and the best − runner-up gap with its paired bootstrap interval."""
    table = np.array([[v for _, v in sorted(per_prompt(r, "oracle_score").items())] for r in rows])  # [cand, q]
    means = table.mean(axis=1)
    order = np.argsort(-means, kind="stable")
    best = int(order[0])
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, table.shape[1], size=(n_resamples, table.shape[1]))
    winners = table[:, draws].mean(axis=2).argmax(axis=0)  # [resamples]
    out: dict[str, Any] = {"chosen": names[best], "same_pick": float((winners == best).mean())}
    if len(names) > 1:
        runner_up = int(order[1])
        out["runner_up"] = names[runner_up]
        out["gap"] = paired_bootstrap((table[best] - table[runner_up])[None, :]).to_dict()
    return out


def run_seed(seed: int, methods: Sequence[str], budget_name: str, seed_dir: Path, console: Console,
             sft_from: Path | None = None, max_candidates: int | None = None) -> dict[str, Any]:
    """Tune every method on validation questions, then evaluate each chosen candidate on test questions.

    Candidates are trained in turns across methods (each method's first run, then each one's second, ...), so a
    run stopped early has tuned every method over the same share of its grid; `max_candidates` keeps only the
    first N candidates of every grid (a reduced run, named in the report's title)."""
    from tlcr import pipeline
    from tlcr.core.models import load_tokenizer
    from tlcr.evaluation.reward_sanity import reward_sanity, sanity_rows
    from tlcr.service.client import TokenRewardClient

    budget = BUDGETS[budget_name]
    config = budget.config(seed)
    log = StageLog(console)
    base = build_seed(config, seed_dir, log, sft_from)
    validation = pipeline.held_out_prompts("validation", config.eval_samples_per_prompt, config.eval_prompts)
    test = pipeline.held_out_prompts("test", config.eval_samples_per_prompt, config.eval_prompts)

    def evaluate(method: str, point: Mapping[str, float], prompts: Sequence[str]) -> dict[str, Any]:
        policy = train_method(base, method, point, service.url, budget.ppo_checkpoints)
        return pipeline.evaluate_policy(policy, base.sft, prompts, config, do_sample=config.eval_do_sample,
                                        top_p=config.eval_top_p)

    tuning: dict[str, list[dict[str, Any]]] = {}
    chosen: dict[str, dict[str, float]] = {"sft": {}}
    stability: dict[str, dict[str, Any]] = {}
    service = pipeline.start_reward_service(base.discriminator, base.reward_model, seed_dir)
    try:
        with TokenRewardClient(service.url) as client:
            sanity = reward_sanity(client, load_tokenizer(base.discriminator), pipeline.controlled_task(),
                                   part="validation", seed=config.seed)
        for label, value in sanity_rows(sanity):
            console.print(f"  seed {seed} reward sanity — {label}: {value}")
        sft_val = cached(seed_dir / "runs" / "sft" / "validation.json",
                         lambda: evaluate("sft", {}, validation))
        tuning["sft"] = [{"point": {}, **sft_val["summary"]}]
        tuned = [m for m in methods if m != "sft" and m not in ABLATIONS]
        runs = {m: runs_of(grid(m, budget)[:max_candidates]) for m in tuned}
        for method in tuned:
            tuning[method] = []
        for turn in range(max((len(r) for r in runs.values()), default=0)):
            for method in tuned:
                if turn >= len(runs[method]):
                    continue
                points = runs[method][turn]  # a PPO run gives every length's candidate
                with log.stage(f"train {METHOD_NAMES[method]} {run_name(points[0])}"):
                    train_method(base, method, points[0], service.url, budget.ppo_checkpoints)
                for point in points:
                    path = seed_dir / "runs" / method / run_name(point) / f"validation-{point_name(point)}.json"
                    with log.stage(f"validate {METHOD_NAMES[method]} {point_name(point)}"):
                        result = cached(path, lambda m=method, p=point: evaluate(m, p, validation))
                    tuning[method].append({"point": point, **result["summary"]})
                    console.print(f"  seed {seed} {METHOD_NAMES[method]} {point_name(point)}: validation oracle "
                                  f"{result['summary']['oracle_score']:.3f}, KL {result['summary']['kl_to_sft']:.2f}")
        for method in tuned:
            chosen[method] = choose(tuning[method])
        for method in tuned:
            stability[method] = pick_stability(
                [point_name(c["point"]) for c in tuning[method]],
                [json.loads((seed_dir / "runs" / method / run_name(c["point"])
                             / f"validation-{point_name(c['point'])}.json").read_text())["rows"]
                 for c in tuning[method]])
            console.print(f"  seed {seed} {METHOD_NAMES[method]}: picked {point_name(chosen[method])}, the same pick "
                          f"in {stability[method]['same_pick']:.0%} of validation-question resamples")
        for method in methods:
            if method in ABLATIONS:
                chosen[method] = chosen["tlcr"]
                with log.stage(f"train {METHOD_NAMES[method]} {run_name(chosen[method])} (TLCR's candidate)"):
                    train_method(base, method, chosen[method], service.url, budget.ppo_checkpoints)
        test_results = {}
        for method in methods:
            point = chosen[method]
            with log.stage(f"test {METHOD_NAMES[method]} {point_name(point)}"):
                path = seed_dir / "runs" / method / run_name(point) / f"test-{point_name(point)}.json"
                test_results[method] = cached(path, lambda m=method, p=point: evaluate(m, p, test))
    finally:
        service.stop()
    return {"seed": seed, "chosen": chosen, "tuning": tuning, "pick_stability": stability, "test": test_results,
            "sanity": sanity,
            "stages": base.stages, "timings": log.timings, "config": asdict(config),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


# ------------------------------------------------------------------------------------------------ statistics

def per_prompt(rows: Sequence[Mapping[str, Any]], key: str) -> dict[str, float]:
    """Mean of `key` over the samples of each prompt."""
    groups: dict[str, list[float]] = {}
    for row in rows:
        groups.setdefault(row["prompt"], []).append(float(row[key]))
    return {prompt: statistics.fmean(values) for prompt, values in groups.items()}


def matrix(per_seed: Sequence[Mapping[str, Any]], method: str, key: str) -> np.ndarray:
    """[seeds, prompts] of per-prompt means, prompts in one shared order."""
    tables = [per_prompt(result["test"][method]["rows"], key) for result in per_seed]
    prompts = sorted(tables[0])
    return np.array([[table[p] for p in prompts] for table in tables])


def differences(per_seed: Sequence[Mapping[str, Any]], a: str, b: str, metric: str) -> Interval:
    key = PER_RESPONSE[metric]
    return paired_bootstrap(matrix(per_seed, a, key) - matrix(per_seed, b, key))


def seeds_agreeing(per_seed: Sequence[Mapping[str, Any]], a: str, b: str, metric: str) -> tuple[int, list[float]]:
    """How many seeds' own mean difference a − b is positive, and the per-seed differences."""
    key = PER_RESPONSE[metric]
    per = (matrix(per_seed, a, key) - matrix(per_seed, b, key)).mean(axis=1)
    return int((per > 0).sum()), [round(float(d), 4) for d in per]


def summary_table(per_seed: Sequence[Mapping[str, Any]], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for method in methods:
        cells = {}
        for key in (*PER_RESPONSE.values(), "kl_to_sft"):
            values = [r["test"][method]["summary"]["kl_to_sft"] if key == "kl_to_sft" else
                      statistics.fmean(row[key] for row in r["test"][method]["rows"]) for r in per_seed]
            cells[key] = {"mean": statistics.fmean(values), "per_seed": values}
        if method != "sft":
            cells["oracle_vs_sft"] = differences(per_seed, method, "sft", "oracle").to_dict()
        if method != "tlcr" and "tlcr" in methods:
            cells["oracle_vs_tlcr"] = differences(per_seed, method, "tlcr", "oracle").to_dict()
            cells["length_vs_tlcr"] = differences(per_seed, method, "tlcr", "length").to_dict()
        table[method] = cells
    return table


def verdict(interval: Mapping[str, Any], weak: bool) -> str:
    if interval["significant"]:
        return "holds (significant)" if interval["mean"] > 0 else "is reversed (significant)"
    return "not significant: the interval includes 0" + (", so it is not contradicted" if weak else "")


def claims(per_seed: Sequence[Mapping[str, Any]], methods: Sequence[str]) -> list[dict[str, Any]]:
    """Each ordering the paper claims: the paired difference, its interval, the seeds that agree, and a sentence."""
    out = []
    for claim, a, b, metric in CLAIMS:
        if a not in methods or b not in methods:
            continue
        interval = differences(per_seed, a, b, metric).to_dict()
        agree, per = seeds_agreeing(per_seed, a, b, metric)
        weak = claim.startswith("TLCR ≥")  # "≥": holds unless significantly reversed
        unit = {"oracle": "oracle", "length": "tokens", "details": "details per asked fact"}.get(metric, "per response")
        few = f" (only {len(per)} seed(s): not a final result)" if len(per) < FINAL_SEEDS else ""
        sentence = (f"{claim}: {METHOD_NAMES[a]} − {METHOD_NAMES[b]} = {interval['mean']:+.3f} {unit} "
                    f"[95 % CI {interval['low']:+.3f}, {interval['high']:+.3f}], {agree}/{len(per)} seeds > 0 — "
                    f"{verdict(interval, weak)}{few}.")
        out.append({"claim": claim, "a": a, "b": b, "metric": metric, **interval, "weak": weak,
                    "seeds_positive": agree, "per_seed": per, "sentence": sentence})
    return out


def frontier(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The upper oracle-vs-KL frontier: (KL, best oracle of any candidate with at most that KL), KL ascending."""
    out: list[tuple[float, float]] = []
    for kl, oracle in sorted(points):
        if not out or oracle > out[-1][1]:
            out.append((kl, oracle))
    return out


def matched_kl(per_seed: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Each method's validation frontier per seed (SFT at KL 0 and every candidate), read at one common KL.

    The common KL is the smallest frontier end over methods and seeds, so every curve reaches it; a seed's value
    is its frontier interpolated there. Mean over seeds, and per seed, so differences pair by seed."""
    curves: dict[str, list[list[tuple[float, float]]]] = {}
    for result in per_seed:
        tuning = result["tuning"]
        sft = tuning["sft"][0]["oracle_score"]
        for method, candidates in tuning.items():
            if method == "sft" or not candidates:
                continue
            points = [(0.0, sft)] + [(c["kl_to_sft"], c["oracle_score"]) for c in candidates
                                     if math.isfinite(c["kl_to_sft"])]
            curves.setdefault(method, []).append(frontier(points))
    if not curves:
        return {"kl": math.nan, "oracle": {}, "per_seed": {}, "curves": {}}
    common = min(max(k for k, _ in curve) for seed_curves in curves.values() for curve in seed_curves)
    per: dict[str, list[float]] = {
        m: [float(np.interp(common, [k for k, _ in c], [o for _, o in c])) for c in seed_curves]
        for m, seed_curves in curves.items()}
    return {"kl": common, "oracle": {m: statistics.fmean(v) for m, v in per.items()}, "per_seed": per,
            "curves": curves}


def time_breakdown(per_seed: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Seconds per kind of work, summed over seeds (each seed's worker runs on one core)."""
    kinds = {"base": 0.0, "train PPO": 0.0, "train DPO": 0.0, "validate": 0.0, "test": 0.0}
    for result in per_seed:
        for stage, seconds in result["timings"].items():
            if stage.startswith("base"):
                kinds["base"] += seconds
            elif stage.startswith("train DPO"):
                kinds["train DPO"] += seconds
            elif stage.startswith("train"):
                kinds["train PPO"] += seconds
            elif stage.startswith("validate"):
                kinds["validate"] += seconds
            elif stage.startswith("test"):
                kinds["test"] += seconds
    return {k: round(v, 1) for k, v in kinds.items()}


# ------------------------------------------------------------------------------------------------ reproducibility

def reproducibility(runs: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per claim, across whole runs of the comparison (e.g. OMP_NUM_THREADS=1 and 2): robust only when every run
    gives the same sign and the same significance. A claim significant in every run is a robust finding; one
    significant in none is a robust "no difference"; anything else is not robust."""
    names = list(runs)
    by_run = {name: {c["claim"]: c for c in run["claims"]} for name, run in runs.items()}
    out = []
    for claim in by_run[names[0]]:
        found = [by_run[n].get(claim) for n in names]
        if any(f is None for f in found):
            continue
        signs = {math.copysign(1, f["mean"]) for f in found}
        significant = {f["significant"] for f in found}
        if significant == {True} and len(signs) == 1:
            status = "robust: holds in every run" if signs == {1.0} else "robust: reversed in every run"
        elif significant == {False}:
            status = "robust: no significant difference in any run"
        else:
            status = "not robust"
        out.append({"claim": claim, "status": status,
                    "runs": {n: {k: f[k] for k in ("mean", "low", "high", "significant")}
                             for n, f in zip(names, found, strict=True)}})
    return out


def reproducibility_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    names = list(rows[0]["runs"]) if rows else []
    lines = ["| claim | " + " | ".join(names) + " | verdict |", "|" + " --- |" * (len(names) + 2)]
    for row in rows:
        cells = [fmt_interval(row["runs"][n]) for n in names]
        lines.append(f"| {row['claim']} | " + " | ".join(cells) + f" | {row['status']} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ output

def fmt_interval(cell: Mapping[str, Any] | None) -> str:
    if not cell:
        return "—"
    star = "*" if cell["significant"] else ""
    return f"{cell['mean']:+.3f} [{cell['low']:+.3f}, {cell['high']:+.3f}]{star}"


def table_rows(table: Mapping[str, Mapping[str, Any]], kl_match: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for method, cells in table.items():
        at_kl = kl_match["oracle"].get(method)
        rows.append([METHOD_NAMES[method], f"{cells['oracle_score']['mean']:.3f}",
                     fmt_interval(cells.get("oracle_vs_sft")), fmt_interval(cells.get("oracle_vs_tlcr")),
                     f"{cells['helpful']['mean']:.2f}", f"{cells['wrong']['mean']:.2f}",
                     f"{cells['style_faults']['mean']:.3f}", f"{cells['details']['mean']:.2f}",
                     f"{cells['tokens']['mean']:.1f}", fmt_interval(cells.get("length_vs_tlcr")),
                     f"{cells['kl_to_sft']['mean']:.2f}", "—" if at_kl is None else f"{at_kl:.3f}"])
    return rows


HEADERS = ["method", "oracle", "Δ oracle vs SFT", "Δ oracle vs TLCR", "helpful", "wrong facts", "style faults",
           "details", "length", "Δ length vs TLCR", "KL", "oracle @ common KL (val.)"]


def markdown(rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + " --- |" * len(HEADERS)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def chosen_markdown(per_seed: Sequence[Mapping[str, Any]], methods: Sequence[str]) -> str:
    lines = ["| method | " + " | ".join(f"seed {r['seed']}" for r in per_seed) + " |",
             "|" + " --- |" * (len(per_seed) + 1)]
    for method in methods:
        if method == "sft":
            continue
        lines.append(f"| {METHOD_NAMES[method]} | "
                     + " | ".join(point_name(r["chosen"][method]) for r in per_seed) + " |")
    return "\n".join(lines)


def plot_comparison(table: Mapping[str, Mapping[str, Any]], path: Path, title: str) -> None:
    """Test oracle and length per method, error bars = paired 95 % interval of the difference vs SFT."""
    from tlcr.evaluation.report import plt

    methods = list(table)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in ((axes[0], "oracle_score", "oracle (test)"), (axes[1], "tokens", "length (tokens)")):
        means = [table[m][key]["mean"] for m in methods]
        errs = None
        if key == "oracle_score":
            errs = np.array([[0.0, 0.0] if m == "sft" else
                             [table[m]["oracle_vs_sft"]["mean"] - table[m]["oracle_vs_sft"]["low"],
                              table[m]["oracle_vs_sft"]["high"] - table[m]["oracle_vs_sft"]["mean"]]
                             for m in methods]).T
        ax.bar(range(len(methods)), means, yerr=errs, capsize=3, color="tab:blue")
        ax.set_xticks(range(len(methods)), [METHOD_NAMES[m] for m in methods], rotation=45, ha="right", fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.axhline(0, color="black", linewidth=0.5)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_length_curves(per_seed: Sequence[Mapping[str, Any]], out_root: Path, path: Path) -> dict[str, list[float]]:
    """Fig. 7 (response length over PPO steps) per reward mode, mean over seeds, of each chosen candidate's run
    (TLCR and its ablations share TLCR's lr and β per seed, so their curves differ only by the reward)."""
    from tlcr.evaluation.report import plt
    from tlcr.trainer.metrics_log import read_metrics

    curves: dict[str, list[float]] = {}
    for method in per_seed[0]["chosen"]:
        if method not in PPO_MODES:
            continue
        runs = [read_metrics(out_root / f"seed-{r['seed']}" / "runs" / method / run_name(r["chosen"][method])
                             / "ppo") for r in per_seed]
        steps = min(len(rows) for rows in runs)
        curves[method] = [statistics.fmean(rows[i]["response_length"] for rows in runs) for i in range(steps)]
    if curves:
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for method, values in curves.items():
            ax.plot(range(1, len(values) + 1), values, label=METHOD_NAMES[method])
        ax.set_xlabel("PPO step")
        ax.set_ylabel("response length (tokens)")
        ax.set_title(f"Fig. 7 — response length, mean of {len(per_seed)} seed(s)", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return curves


def plot_oracle_vs_kl(kl_match: Mapping[str, Any], path: Path) -> None:
    from tlcr.evaluation.report import plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (method, seed_curves) in enumerate(kl_match["curves"].items()):
        for j, curve in enumerate(seed_curves):
            ax.plot([k for k, _ in curve], [o for _, o in curve], marker="o", markersize=3, alpha=0.7,
                    color=colors[i % len(colors)], label=METHOD_NAMES[method] if j == 0 else None)
    if not math.isnan(kl_match["kl"]):
        ax.axvline(kl_match["kl"], color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("KL to SFT (nats per response, validation)")
    ax.set_ylabel("best oracle at ≤ KL (validation)")
    ax.set_title("Oracle-vs-KL frontier of each method's candidates, one line per seed", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ main

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds, each tuned on its own "
                        "(default 0,1,2,3,4)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated, from {', '.join(METHODS)} (SFT is always evaluated)")
    parser.add_argument("--budget", default="full", choices=tuple(BUDGETS))
    parser.add_argument("--jobs", type=int, default=3,
                        help="seeds trained at once, one process each (default 3: 5 seeds run 3 then 2, so both "
                             "cores stay busy to the end; 2 at a time leaves one idle while the fifth seed runs)")
    parser.add_argument("--threads", default=None,
                        help="run the whole comparison once per OMP_NUM_THREADS value (e.g. 1,2) into <out>/omp-N "
                             "and check that each claim keeps its sign and significance")
    parser.add_argument("--rerun-seeds", default=None,
                        help="with --threads: every run after the first uses these seeds instead of --seeds, so the "
                             "rerun is an independent replicate (on one machine the same seeds at another thread "
                             "count were measured to replay bit-identical numbers, a check that cannot fail)")
    parser.add_argument("--out", type=Path, default=Path("runs/compare"))
    parser.add_argument("--sft-from", type=Path, default=None,
                        help="a benchmarks/tune_sft.py output folder: copy each seed's SFT policy of the same recipe "
                             "from it instead of training it again")
    parser.add_argument("--max-candidates", type=int, default=None,
                        help="tune over only the first N candidates of every method's grid (a reduced run; the "
                             "report's title says so)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one seed, in its own process
    args = parser.parse_args(argv)
    try:
        args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, not {args.seeds!r}")
    if not args.seed_list or len(set(args.seed_list)) != len(args.seed_list):
        parser.error(f"--seeds needs distinct seeds, got {args.seeds!r}")
    if args.max_candidates is not None and args.max_candidates < 1:
        parser.error(f"--max-candidates must be at least 1, got {args.max_candidates}")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    args.thread_list = None
    if args.threads is not None:
        try:
            args.thread_list = [int(t) for t in args.threads.split(",") if t.strip()]
        except ValueError:
            parser.error(f"--threads must be comma-separated integers, not {args.threads!r}")
        if len(args.thread_list) < 2 or min(args.thread_list) < 1 or len(set(args.thread_list)) != len(
                args.thread_list):
            parser.error(f"--threads needs at least two distinct positive thread counts, got {args.threads!r}")
    args.rerun_seed_list = None
    if args.rerun_seeds is not None:
        if args.thread_list is None:
            parser.error("--rerun-seeds needs --threads (it names the seeds of the runs after the first)")
        try:
            args.rerun_seed_list = [int(s) for s in args.rerun_seeds.split(",") if s.strip()]
        except ValueError:
            parser.error(f"--rerun-seeds must be comma-separated integers, not {args.rerun_seeds!r}")
        if len(args.rerun_seed_list) != len(args.seed_list) or len(set(args.rerun_seed_list)) != len(
                args.rerun_seed_list):
            parser.error(f"--rerun-seeds needs {len(args.seed_list)} distinct seeds (as many as --seeds), "
                         f"got {args.rerun_seeds!r}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    if any(m in ABLATIONS for m in methods) and "tlcr" not in methods:
        parser.error("the ablations train at TLCR's chosen candidate: add tlcr to --methods")
    args.method_list = ["sft", *(m for m in METHODS if m in methods and m != "sft")]
    return args


def run_processes(commands: Sequence[tuple[list[str], dict[str, str], Path]], jobs: int) -> None:
    """Run the commands, at most `jobs` at once, each in its own process group with its output in a log file;
    the first failure (or Ctrl-C) stops every group still running."""
    pending = list(commands)
    running: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        while pending or running:
            while pending and len(running) < jobs:
                command, env, log = pending.pop(0)
                log.parent.mkdir(parents=True, exist_ok=True)
                with log.open("ab") as handle:
                    running.append((subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                                     start_new_session=True), log))
            time.sleep(0.5)
            for process, log in list(running):
                if process.poll() is None:
                    continue
                running.remove((process, log))
                if process.returncode != 0:
                    tail = log.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{' '.join(process.args)} failed (exit {process.returncode}); "
                                       f"end of {log}:\n{tail}")
    finally:
        for process, _ in running:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process, _ in running:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def worker_env(**overrides: str) -> dict[str, str]:
    """The environment of a seed worker. OpenMP threads wait passively (sleep, not spin) at barriers unless told
    otherwise: on a shared machine a spinning thread burns the CPU its partner needs. Measured here with 2 threads
    per process while other processes kept both cores busy: the default (spinning) took 5.4× the wall-clock and
    5.3× the CPU time of PASSIVE for the same matmuls; with one thread the policy changes nothing. The price on an
    idle machine: `tlcr demo` (trainer and service, 2 threads each) took 1.20× the wall-clock with PASSIVE. The
    default workers have 1 thread; a 2-thread run risks the 5× loss only when something else runs, and this
    benchmark runs for an hour. It never changes results, only how idle threads wait."""
    return {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, **overrides}


def base_command(args: argparse.Namespace) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--methods", ",".join(args.method_list),
               "--budget", args.budget]
    command += ["--sft-from", str(args.sft_from)] if args.sft_from else []
    return command + (["--max-candidates", str(args.max_candidates)] if args.max_candidates else [])


def compare(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """One whole comparison: every seed (in parallel worker processes), then the statistics and the report."""
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    todo = [s for s in args.seed_list if not (args.out / f"seed-{s}" / "results.json").exists()]
    reused = len(args.seed_list) - len(todo)
    if reused:
        console.print(f"reusing {reused} finished seed(s) from {args.out}")
    commands = [([*base_command(args), "--worker", "--seeds", str(s), "--out", str(args.out)], worker_env(),
                 args.out / f"seed-{s}.log") for s in todo]
    if commands:
        console.print(f"training seed(s) {','.join(map(str, todo))}, {args.jobs} process(es) at a time "
                      f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}); logs: {args.out}/seed-N.log")
    run_processes(commands, args.jobs)
    per_seed = [json.loads((args.out / f"seed-{s}" / "results.json").read_text()) for s in args.seed_list]
    table = summary_table(per_seed, args.method_list)
    kl_match = matched_kl(per_seed)
    found = claims(per_seed, args.method_list)
    if {"tlcr", "seq"} <= set(kl_match["per_seed"]):
        diff = np.array(kl_match["per_seed"]["tlcr"]) - np.array(kl_match["per_seed"]["seq"])
        kl_match["tlcr_minus_seq_per_seed"] = [round(float(d), 4) for d in diff]
        if len(diff) >= FINAL_SEEDS:  # a bootstrap over 2-4 values is no interval
            kl_match["tlcr_minus_seq"] = paired_bootstrap(diff[:, None]).to_dict()
    wall = time.perf_counter() - started
    breakdown = time_breakdown(per_seed)
    seeds = ",".join(str(r["seed"]) for r in per_seed)
    reduced = f" (REDUCED: first {args.max_candidates} candidates of each grid)" if args.max_candidates else ""
    title = (f"controlled task, test questions — budget {args.budget}{reduced} — seeds {seeds}, each tuned on its "
             f"own validation questions — OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")

    rich_table = Table(title=title)
    for header in HEADERS:
        rich_table.add_column(header, justify="left" if header == "method" else "right")
    rows = table_rows(table, kl_match)
    for row in rows:
        rich_table.add_row(*row)
    console.print(rich_table)
    console.print("Δ: paired bootstrap over seeds (each with its own tuning pick) and test prompts, 95 % CI; "
                  f"* = interval excludes 0. Common KL of the matched column: {kl_match['kl']:.2f} nats.")
    chosen_md = chosen_markdown(per_seed, args.method_list)
    console.print("Chosen candidate per seed (validation oracle):\n" + chosen_md)
    for claim in found:
        console.print("  " + claim["sentence"])
    stability = {m: [r["pick_stability"][m]["same_pick"] for r in per_seed]
                 for m in args.method_list if all(m in r.get("pick_stability", {}) for r in per_seed)}
    for method, shares in stability.items():
        console.print(f"  {METHOD_NAMES[method]}: the seed's pick recurs in "
                      + ", ".join(f"{x:.0%}" for x in shares) + " of validation-question resamples (per seed)")
    if "tlcr_minus_seq_per_seed" in kl_match:
        interval = (f"{fmt_interval(kl_match['tlcr_minus_seq'])} (bootstrap over seeds)" if "tlcr_minus_seq" in kl_match
                    else f"no interval with fewer than {FINAL_SEEDS} seeds")
        console.print(f"  at matched KL {kl_match['kl']:.2f} (validation frontier): TLCR − PPO_seq per seed "
                      + ", ".join(f"{d:+.3f}" for d in kl_match["tlcr_minus_seq_per_seed"]) + f"; {interval}")
    plot_comparison(table, args.out / "comparison.png", title)
    curves = plot_length_curves(per_seed, args.out, args.out / "fig7_length.png")
    plot_oracle_vs_kl(kl_match, args.out / "oracle_vs_kl.png")
    work = sum(breakdown.values())
    console.print(f"time: {wall / 60:.1f} min wall, {args.jobs} seed(s) at a time; work per kind (seconds summed "
                  "over seeds): " + ", ".join(f"{k} {v:.0f}" for k, v in breakdown.items())
                  + f" (total {work / 60:.1f} min); budget {BUDGET_MINUTES} min → "
                  f"{'within' if wall <= BUDGET_MINUTES * 60 else 'OVER'} budget"
                  + (f" ({reused} seed(s) reused from disk, not re-timed)" if reused else ""))
    report = {"title": title, "args": {k: str(v) for k, v in vars(args).items()}, "table": table, "claims": found,
              "matched_kl": kl_match, "length_curves": curves,
              "chosen": {r["seed"]: r["chosen"] for r in per_seed},
              "sanity": {r["seed"]: r["sanity"] for r in per_seed}, "wall_s": round(wall, 1),
              "reused_seeds": reused, "time_breakdown_s": breakdown, "pick_stability": stability,
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "per_seed": [{k: v for k, v in r.items() if k != "test"} for r in per_seed]}
    (args.out / "comparison.json").write_text(json.dumps(report, indent=1, default=str))
    (args.out / "comparison.md").write_text(
        f"{title}\n\n{markdown(rows)}\n\nChosen candidate per seed:\n\n{chosen_md}\n\n"
        + "".join(f"- {METHOD_NAMES[m]}: the pick recurs in " + ", ".join(f"{x:.0%}" for x in v)
                  + " of validation-question resamples (per seed)\n" for m, v in stability.items()) + "\n"
        + "\n".join(f"- {c['sentence']}" for c in found) + "\n")
    console.print(f"→ {args.out / 'comparison.json'}, comparison.md, comparison.png, fig7_length.png, "
                  "oracle_vs_kl.png")
    return report


def check_reproducibility(args: argparse.Namespace, console: Console) -> int:
    """The whole comparison once per thread count, one after the other, then the per-claim verdicts. With
    --rerun-seeds every run after the first trains other seeds: an independent replicate as well."""
    runs = {}
    for index, threads in enumerate(args.thread_list):
        out = args.out / f"omp-{threads}"
        jobs = max(1, args.jobs // threads)  # threads × jobs stays within the cores the jobs were sized for
        seeds = args.rerun_seed_list if index and args.rerun_seed_list else args.seed_list
        command = [*base_command(args), "--seeds", ",".join(map(str, seeds)), "--jobs", str(jobs),
                   "--out", str(out)]
        console.print(f"comparison with OMP_NUM_THREADS={threads}, seeds {','.join(map(str, seeds))}, {jobs} "
                      f"seed(s) at a time → {out}")
        started = time.perf_counter()
        run_processes([(command, worker_env(OMP_NUM_THREADS=str(threads)), args.out / f"omp-{threads}.log")],
                      1)
        console.print(f"  done in {(time.perf_counter() - started) / 60:.1f} min")
        runs[f"OMP_NUM_THREADS={threads}, seeds {','.join(map(str, seeds))}"] = json.loads(
            (out / "comparison.json").read_text())
    rows = reproducibility(runs)
    text = reproducibility_markdown(rows)
    console.print(text)
    (args.out / "reproducibility.json").write_text(json.dumps(
        {"runs": {n: {"wall_s": r["wall_s"], "chosen": r["chosen"]} for n, r in runs.items()}, "claims": rows},
        indent=1, default=str))
    (args.out / "reproducibility.md").write_text(
        f"Reproducibility: the whole comparison (budget {args.budget}) once per thread count"
        + (f"; the first run trains seeds {args.seeds}, every later one seeds {args.rerun_seeds}" if args.rerun_seeds
           else f", seeds {args.seeds}") + ".\n\n"
        f"{text}\n")
    console.print(f"→ {args.out / 'reproducibility.md'}")
    return 0


def stop_on_sigterm() -> None:
    """SIGTERM ends the run as Ctrl-C does: `finally` blocks run, so seed workers and services are stopped."""
    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    console = Console(width=None if sys.stdout.isatty() else 200)  # a log file gets the whole table
    quiet_libraries(console)
    if args.worker:
        for seed in args.seed_list:
            seed_dir = args.out / f"seed-{seed}"
            cached(seed_dir / "results.json",
                   lambda s=seed, d=seed_dir: run_seed(s, args.method_list, args.budget, d, console, args.sft_from,
                                                          args.max_candidates))
        return 0
    if args.thread_list:
        return check_reproducibility(args, console)
    compare(args, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
