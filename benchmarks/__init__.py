"""Benchmarks (``make bench``): timing and memory targets live here, not in tests."""
