"""Benchmarks: each measured claim is a script that prints a table and writes JSON to results/bench/."""
