"""Runnable examples: `python -m examples.quickstart` from the repository root."""
