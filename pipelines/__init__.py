"""Pipeline definitions, the local runner, compile and schedule (wiring only)."""
