"""The benchmark scripts (``python benchmarks/<script>.py``) and their library, :mod:`benchmarks.lib`.

A package so that benchmark-only code has an importable home outside ``aad_kit`` (sandbox
workers and one-shot interpreters import it by name: the repository root is on their path).
"""
