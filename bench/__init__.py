"""`python -m bench`: the service against its baselines, side by side in one run.

Absolute times drift on shared machines, so every figure that has a baseline is reported as a
ratio measured in the same run. See bench/README.md for how to read the table.
"""
