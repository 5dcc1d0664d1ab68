"""The tests' fixtures and helpers, loaded as pytest plugins by ``tests/conftest.py``."""
