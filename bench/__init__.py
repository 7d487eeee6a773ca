"""Benchmarks (SPEC §10). Run from the repository root; see bench/README.md."""
