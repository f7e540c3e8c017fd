"""Shared fixtures: offline hub, a private cache dir per test session, the built-in models loaded once per worker."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

from calib.cache import enable_compilation_cache

# The test session is an entry point: like `calib`, it keeps compiled programs for the next run (calib's library
# functions no longer switch the cache on themselves).
enable_compilation_cache()


@pytest.fixture(scope="session")
def tiny_llama():
    from calib.models import load_model

    return load_model("tiny-llama")


@pytest.fixture(scope="session")
def tiny_gemma3():
    from calib.models import load_model

    return load_model("tiny-gemma3")


@pytest.fixture(autouse=True, scope="session")
def _hydra_must_not_reconfigure_logging():
    """Tests run `calib` (Hydra) in-process. Hydra's logging setup calls logging.config.dictConfig, which closes every
    existing handler, pytest's log-capture handlers included, and every later test on that worker then errors with
    "I/O operation on closed file". In tests, logging configuration is skipped; the CLI itself is unchanged."""
    import logging.config

    original = logging.config.dictConfig
    logging.config.dictConfig = lambda config: None
    yield
    logging.config.dictConfig = original


# Loader fuzz tests (`@pytest.mark.fuzz` + hypothesis @given without max_examples): a few hundred examples each in
# `make test`; `make fuzz` (CALIB_FUZZ=1) runs 10,000 per test.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "calib-test", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "calib-fuzz", max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("calib-fuzz" if os.environ.get("CALIB_FUZZ") else "calib-test")
