"""Shared fixtures: offline hub, a private cache dir per test session, the built-in models loaded once per worker."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest


@pytest.fixture(scope="session")
def tiny_llama():
    from calib.models import load_model

    return load_model("tiny-llama")


@pytest.fixture(scope="session")
def tiny_gemma3():
    from calib.models import load_model

    return load_model("tiny-gemma3")
