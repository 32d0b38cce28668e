"""Benchmarks run by `make bench`: each prints a table and writes it as JSON."""
