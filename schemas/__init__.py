"""Schemas as code: every table's ``StructType`` and the typed (pydantic) config."""
