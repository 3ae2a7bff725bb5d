"""Dense TLCR rewards inside RL engines (docs/integrations.md).

- `tlcr.integrations.trl`: an async reward function for any TRL `reward_funcs` user, and `TLCRGRPOTrainer`
  (GRPO with TLCR's per-token rewards added to its advantages).
- `tlcr.integrations.verl`: `TLCRAgentLoop`, a verl agent loop emitting dense `rm_scores` (`pip install tlcr[verl]`).
- `integrations/openrlhf_reward_func.py`: the file for OpenRLHF's `--reward.remote_url` (sequence-level).

Each adapter imports its engine only when used; this package depends on tlcr/ and the service client.
"""
