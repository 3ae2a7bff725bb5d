"""Character offsets of a policy's generated tokens: the incremental (sliding-window) decoding that
`tlcr.core.tokenization.decode_with_offsets` uses, against decoding every prefix, side by side in one run.

    python benchmarks/decode_offsets.py --tokenizer ../shared/tokenizers/qwen2 --lengths 128 512 1024
"""

from __future__ import annotations

import argparse
import random
import time

from tlcr.core import tokenization
from tlcr.core.models import load_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 1024])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tok = load_tokenizer(args.tokenizer)
    rng = random.Random(args.seed)
    context = tok("\n\nHuman: Hi!\n\nAssistant:", add_special_tokens=False)["input_ids"]
    # the text of a real-looking response, re-tokenized, at each length
    words = "the policy writes a response with emoji 😁 and CJK 你好 and accents café".split()
    print(f"{'tokens':>7} {'incremental s':>14} {'every prefix s':>15} {'ratio':>7}")
    for n in args.lengths:
        text = " " + " ".join(rng.choice(words) for _ in range(n))
        ids = tok(text, add_special_tokens=False)["input_ids"][:n]
        started = time.perf_counter()
        fast = tokenization.decode_with_offsets(tok, ids, context)
        incremental = time.perf_counter() - started
        started = time.perf_counter()
        ctx = context[-tokenization.CONTEXT_TOKENS:]
        slow = tokenization._spans(*tokenization._prefix_progress(tok, ctx, ids), len(fast[0]))
        prefixes = time.perf_counter() - started
        assert slow == fast[1]
        print(f"{len(ids):>7} {incremental:>14.4f} {prefixes:>15.4f} {prefixes / incremental:>7.1f}")


if __name__ == "__main__":
    main()
