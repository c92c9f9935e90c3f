"""The benchmark runner's parts: /proc sampling, processes, cases and the report."""
