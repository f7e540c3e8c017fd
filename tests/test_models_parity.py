"""Real weights: our JAX models against transformers' PyTorch model loaded from the same GGUF file.

Marked `weights` (they load the built-in GGUF files installed by `make setup`); CI runs them.
"""

import os

import numpy as np
import pytest
import torch

from calib.decode import generate
from calib.models import load_model
from calib.models.builtin import BUILTIN_GGUF

pytestmark = pytest.mark.weights

TWO_SHOT = "Q: What is the capital of France?\nA: Paris\nQ: What is the capital of Japan?\nA: Tokyo\nQ: What is the capital of {country}?\nA:"
COUNTRIES = [
    "Germany",
    "Italy",
    "Spain",
    "Canada",
    "Brazil",
    "Egypt",
    "Australia",
    "India",
    "China",
    "Russia",
    "Mexico",
    "Argentina",
    "Kenya",
    "Nigeria",
    "Turkey",
    "Greece",
    "Sweden",
    "Norway",
    "Poland",
    "Portugal",
    "Thailand",
    "Vietnam",
    "Peru",
    "Chile",
    "Ireland",
    "Austria",
    "Switzerland",
    "Netherlands",
    "South Korea",
    "Indonesia",
]
CAPITALS = [
    "Berlin",
    "Rome",
    "Madrid",
    "Ottawa",
    "Brasília",
    "Cairo",
    "Canberra",
    "New Delhi",
    "Beijing",
    "Moscow",
    "Mexico City",
    "Buenos Aires",
    "Nairobi",
    "Abuja",
    "Ankara",
    "Athens",
    "Stockholm",
    "Oslo",
    "Warsaw",
    "Lisbon",
    "Bangkok",
    "Hanoi",
    "Lima",
    "Santiago",
    "Dublin",
    "Vienna",
    "Bern",
    "Amsterdam",
    "Seoul",
    "Jakarta",
]
LONG_TEXT = " ".join(
    f"Item {i}: the {['red', 'blue', 'green', 'small'][i % 4]} box number {i * 7 % 13} sits next to shelf {i % 5}."
    for i in range(60)
)  # ~1000 tokens; the test keeps its first 620 so Gemma's 512-token sliding window is exercised
LONG_TOKENS = 620
# Why not all ~1000: at positions ~640-800 of this repetitive text the model is ill-conditioned in float32. A
# float64 transformers run with exact RoPE angles differs there by 1.8e-2 from our float32 run, and a 1-ulp change
# of one RoPE frequency moves transformers' own float32 output by 2e-2. Up to 640 tokens every position agrees to ~2e-4.
PROMPTS = [
    "The history of the Roman Empire spans many centuries, beginning with the legendary founding of the city of Rome and ending",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n\nprint(",
    LONG_TEXT,
]


def _reference(name):
    from transformers import AutoModelForCausalLM

    path = BUILTIN_GGUF[name]()
    return AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32
    ).eval()


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _reference_greedy(ref, lm, prompt, steps=8):
    ids = torch.tensor([lm.encode(prompt)])
    with torch.no_grad():
        out = ref.generate(ids, max_new_tokens=steps, do_sample=False, pad_token_id=lm.config.pad_id)
    return lm.decode(out[0, ids.shape[1] :]).split("\n")[0].strip()


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("smollm2-135m-instruct", marks=pytest.mark.xdist_group("smollm2")),
        pytest.param("gemma3-270m", marks=pytest.mark.xdist_group("gemma3")),
    ],
)
def test_logits_and_greedy_capitals_match_transformers(name):
    lm, ref = load_model(name), _reference(name)
    for prompt in PROMPTS:
        ids = lm.encode(prompt)[:LONG_TOKENS]
        assert len(ids) >= 20
        with torch.no_grad():
            expected = ref(torch.tensor([ids])).logits[0].float().numpy()
        diff = np.abs(_log_softmax(lm.logits([ids])[0]) - _log_softmax(expected)).max()
        print(f"{name}: {len(ids)} tokens, max |log-softmax diff| = {diff:.2e}")
        assert diff < 1e-3
    assert len(lm.encode(LONG_TEXT)[:LONG_TOKENS]) > 600

    prompts = [TWO_SHOT.format(country=c) for c in COUNTRIES]
    ours = generate(lm, prompts, greedy=True, max_new_tokens=8, stop=("\n",)).texts
    theirs = [_reference_greedy(ref, lm, p) for p in prompts]
    assert [row[0] for row in ours] == theirs
    correct = sum(cap.lower() in row[0].lower() for cap, row in zip(CAPITALS, ours))
    print(f"{name}: {correct}/30 capitals correct; Australia -> {ours[COUNTRIES.index('Australia')][0]!r}")
