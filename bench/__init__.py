"""Reproducible benchmarks: every figure comes with a baseline measured in the same run."""
