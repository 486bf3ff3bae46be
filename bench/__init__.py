"""Benchmarks of the service against a Flask reference of the same API (`python -m bench.run`)."""
