"""Delta-tuning combination experiments (prompt, BitFit, adapters) on prompt-based masked LMs."""
