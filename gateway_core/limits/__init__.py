"""Rate limits and token budgets per token, JWT subject and model (SPEC §11, docs/LIMITS.md)."""
