"""Pure functions, DataFrame transforms and batch UDFs (readers, rules, cleaning, PII, LLM I/O)."""
