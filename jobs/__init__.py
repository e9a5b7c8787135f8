"""Thin job entry points (read -> transform -> write), the engine factory and table I/O."""
