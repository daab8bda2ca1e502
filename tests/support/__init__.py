"""Test infrastructure that is not a test and not part of the product (e.g. throwaway PostgreSQL).

It lives under ``tests/`` so the installed ``mlbench`` package carries no test harness; the
benchmarks that need it (``benchmarks/ingest.py``) import it from the checkout.
"""
