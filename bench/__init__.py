"""Benchmarks of the connector: ``python -m bench.<name> [--quick]``; see docs/benchmarks.md."""
