"""The attention pass run in batches gives each sequence the numbers it gets alone (causal attention: the padding
after a row's real tokens never reaches them), across length buckets, with a suffix and a short last batch, up to
float32 reduction order: a batched matmul sums in another order, ~1e-6 on these weights in [0, 1] (rtol 1e-5)."""

from __future__ import annotations

import numpy as np
import pytest

from calib.estimators.attention import attention_statistics, batch_size

PROMPTS = [
    "Q: 2+2?\nA:",
    "Question: What is the capital of France?\nAnswer:",
    "Q: Name a prime between 10 and 20.\nA:",
    "A longer prompt, so that this sequence falls in another length bucket than the short ones above: "
    "Question: Which river flows through Vienna, Budapest and Belgrade?\nAnswer:",
    "Q: 7*6?\nA:",
]
ANSWERS = [[52, 10, 33], [40], [11, 12, 13, 14, 15, 16], [70, 71], [5, 6, 7, 8]]


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gemma3"])  # GQA; QK-norm, sliding window, local RoPE
@pytest.mark.parametrize("suffix", ["", "\n\nDecision:"])
def test_batched_equals_one_at_a_time(name, suffix, request):
    lm = request.getfixturevalue(name)
    alone = attention_statistics(lm, PROMPTS, ANSWERS, suffix, batch=1)
    for batch in (None, 4):  # 4 fills the two-sequence buckets with copies (a short last batch)
        together = attention_statistics(lm, PROMPTS, ANSWERS, suffix, batch=batch)
        for a, b, prompt, answer in zip(alone, together, PROMPTS, ANSWERS):
            assert b.shape == a.shape == (*a.shape[:3], len(lm.encode(prompt)) + len(answer))
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_batch_size_is_a_power_of_two_within_the_memory_budget():
    assert batch_size(64, 9) == 32
    assert batch_size(1024, 9) == 4  # 4 · 9 · 1024² · 4 bytes = 151 MB ≤ 256 MB; 8 would be 302 MB
    assert batch_size(8192, 32) == 1
    for length, heads in ((48, 4), (320, 9), (2048, 16)):
        b = batch_size(length, heads)
        assert b & (b - 1) == 0 and (b == 1 or 4 * heads * length * length * b <= 256 << 20)
