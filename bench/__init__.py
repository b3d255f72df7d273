"""Benchmarks: ``make bench`` runs every bench_*.py and prints `metric_name: value` lines."""
