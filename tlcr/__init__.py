"""tlcr: token-level continuous rewards for RLHF (Yoon et al., ACL 2024 Findings)."""

__version__ = "0.1.0"
