"""Evaluation of policies: generation, reward/oracle scoring, LLM judges, and the HTML report."""
