"""Test package (makes ``tests.sandbox_fixture_task`` importable in sandbox workers)."""
