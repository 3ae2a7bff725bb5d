"""Side-by-side statistics of labelled files (`tlcr label` output), e.g. one per tokenizer.

    python benchmarks/label_stats.py runs/hh-labels.jsonl runs/hh-llama2-labels.jsonl

Prints, per file: records by status, response lengths in tokens (rejected and revised, status "ok"),
the label balance over ok records' tokens, and edit ratios (edit distance / rejected length); and, on the
records `tlcr train-discriminator` holds out (same seed and fraction), the trivial baseline its pairwise
accuracy is read against: the shorter response (in the file's tokenizer's tokens) preferred. (The
every-token-negative baseline is the negative support / edited tokens in discriminator_metrics.json.)
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any


def held_out_baselines(path: Path, eval_fraction: float, seed: int) -> dict[str, Any]:
    from tlcr.core.models import load_tokenizer
    from tlcr.core.tokenization import encode_prompt_response_batch
    from tlcr.trainer.discriminator import load_labelled_records, split_records

    records = load_labelled_records(path, vocab_size=10**9).records
    _, held_out = split_records(records, eval_fraction, seed)
    tokenizer = load_tokenizer(held_out[0].tokenizer)
    prompts = [r.prompt for r in held_out]
    chosen = encode_prompt_response_batch(tokenizer, prompts, [r.chosen for r in held_out])
    rejected = encode_prompt_response_batch(tokenizer, prompts, [r.rejected for r in held_out])
    shorter = [1.0 if len(c.response_ids) < len(j.response_ids) else 0.5 if len(c.response_ids) == len(j.response_ids)
               else 0.0 for c, j in zip(chosen, rejected, strict=True)]
    return {"held_out_records": len(held_out),
            "baseline_shorter_wins": statistics.fmean(shorter)}


def label_stats(path: Path) -> dict[str, Any]:
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    ok = [r for r in records if r["status"] == "ok"]
    labels = Counter(x for r in ok for key in ("rejected_labels", "revised_labels") for x in r[key])
    total = sum(labels.values()) or 1
    rejected = [len(r["rejected_token_ids"]) for r in ok]
    revised = [len(r["revised_token_ids"]) for r in ok]
    ratios = [r["edit_ratio"] for r in records if r.get("edit_ratio") is not None]
    return {
        "file": str(path), "tokenizer": ok[0]["tokenizer"] if ok else None,
        "status": dict(Counter(r["status"] for r in records)),
        "rejected_tokens_mean": statistics.fmean(rejected) if rejected else None,
        "rejected_tokens_median": statistics.median(rejected) if rejected else None,
        "revised_tokens_mean": statistics.fmean(revised) if revised else None,
        "label_negative": labels[0.0] / total, "label_neutral": labels[0.5] / total,
        "label_positive": labels[1.0] / total, "tokens_labelled": sum(labels.values()),
        "edit_ratio_mean_all": statistics.fmean(ratios) if ratios else None,
        "edit_ratio_median_all": statistics.median(ratios) if ratios else None,
        "edit_ratio_mean_ok": statistics.fmean(r["edit_ratio"] for r in ok) if ok else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--eval-fraction", type=float, default=0.1, help="as given to train-discriminator")
    parser.add_argument("--seed", type=int, default=42, help="as given to train-discriminator")
    args = parser.parse_args()
    stats = [{**label_stats(f), **held_out_baselines(f, args.eval_fraction, args.seed)} for f in args.files]
    for key in stats[0]:
        values = [s[key] for s in stats]
        shown = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in values]
        print(f"{key:24s} " + "  |  ".join(shown))


if __name__ == "__main__":
    main()
