"""int8 vs float32 on the built-in models: max |log-softmax diff| on the parity prompts and greedy answers to all 30
capitals questions of tests/test_models_parity.py (the test suite checks 10 of them).

Run: .venv/bin/python benchmarks/bench_int8_parity.py    (prints one row per model)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))


def main() -> None:
    from test_models_parity import CAPITALS, COUNTRIES, LONG_TOKENS, PROMPTS, TWO_SHOT, _log_softmax

    from calib.decode import generate
    from calib.models import load_model
    from calib.models.builtin import BUILTIN_GGUF

    prompts = [TWO_SHOT.format(country=c) for c in COUNTRIES]
    for name in BUILTIN_GGUF:
        full, int8 = load_model(name), load_model(name, weights="int8")
        diffs = []
        for prompt in PROMPTS:
            ids = [full.encode(prompt)[:LONG_TOKENS]]
            diffs.append(np.abs(_log_softmax(int8.logits(ids)[0]) - _log_softmax(full.logits(ids)[0])).max())
        a, b = (
            generate(lm, prompts, greedy=True, max_new_tokens=8, stop=("\n",)).texts for lm in (full, int8)
        )
        same = sum(x[0] == y[0] for x, y in zip(a, b, strict=True))
        correct = [sum(c.lower() in r[0].lower() for c, r in zip(CAPITALS, t, strict=True)) for t in (a, b)]
        print(
            f"{name:<24} max |log-softmax diff| {max(diffs):.1e}   greedy answers equal {same}/30   "
            f"capitals correct f32 {correct[0]}/30, int8 {correct[1]}/30"
        )


if __name__ == "__main__":
    main()
