"""towerd's benchmark suite: the figures a tower budget is planned on.

Run ``bash scripts/bench`` (or ``.venv/bin/python -m benchmarks``; ``--quick`` for a
run under a minute). Each figure is the median of several runs with its spread, beside
a reference measured in the same run. Never part of the tests.
"""
