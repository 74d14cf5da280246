"""Tabular benchmarks (NAS-Bench-201 accuracies, latency tables) and their lookups."""
