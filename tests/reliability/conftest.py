"""The reliability tests reuse the serve tests' tiny trained run (one per session) and demo-data cache."""

from tests.serve.conftest import _serve_state, cache_dir, tiny_gin, trained_run  # noqa: F401
