"""The foundation every stage stands on: data, models, tokenization, scoring and the shared contracts.

Nothing here imports a stage (labeling, service, trainer, evaluation) or the application (tlcr); the
import-linter contracts in pyproject.toml enforce it.
"""
