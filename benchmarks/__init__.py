"""Benchmarks of tap-analytics (not tests): `python -m benchmarks` runs them all.

See benchmarks/README.md for what is measured, the goals and the latest results.
"""
