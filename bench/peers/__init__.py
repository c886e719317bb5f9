"""Peers of the importer for the comparison benchmark (bench/bench_compare.py)."""
