"""Benchmarks. Run from the repository root; see bench/README.md."""
