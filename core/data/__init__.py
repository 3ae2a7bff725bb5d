"""Preference data: the pair record, where pairs come from (HH-RLHF files or the Hub, the offline controlled task)
and the paper's 20/40/40 split."""
