"""LoRA calibration-tuning: zero adapters reproduce the base model exactly, a step lowers the loss on a fixed batch,
training is deterministic for a seed and a resumed run ends with the same weights as an uninterrupted one."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from calib.errors import CalibError
from calib.tuning.lora import LoraConfig, init_adapters, merged_lm
from calib.tuning.train import (
    TrainConfig,
    build_examples,
    choice_ids,
    loss_parts,
    make_optimizer,
    pad_batch,
    train_lora,
)

QUESTIONS = [f"What is {i} plus {i + 1}?" for i in range(12)]
ANSWERS = [str(2 * i + 1) if i % 3 else str(2 * i) for i in range(12)]
LABELS = [1.0 if i % 3 else 0.0 for i in range(12)]


def _nonzero(adapters, key=1):
    """Adapters with B drawn at random too, so the delta is not zero."""
    keys = iter(jax.random.split(jax.random.key(key), len(adapters)))
    return {
        k: (v if k.endswith(".a") else 0.05 * jax.random.normal(next(keys), v.shape))
        for k, v in adapters.items()
    }


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gemma3"])
def test_zero_adapters_reproduce_the_base_logits_exactly(name, request):
    lm = request.getfixturevalue(name)
    adapters = init_adapters(lm.model, LoraConfig(rank=4), jax.random.key(0))
    ids = np.asarray([lm.encode("Question: what is two plus two?")])
    tuned = merged_lm(lm, {k: np.asarray(v) for k, v in adapters.items()}, 2.0, "zero")
    np.testing.assert_array_equal(tuned.logits(ids), lm.logits(ids))
    # and the training pass (frozen blocks below, adapted above) gives the base model's decision logit
    examples = build_examples(lm, QUESTIONS[:4], ANSWERS[:4], LABELS[:4])
    batch = pad_batch(examples, 4)
    graphdef, state = lm.graphdef_and_state
    a, b = choice_ids(lm)
    for layers in (None, 1):
        cfg = LoraConfig(rank=4, layers=layers)
        start = cfg.first_layer(len(lm.model.blocks))
        adapters = init_adapters(lm.model, cfg, jax.random.key(0))
        _, (bce, kl, z) = loss_parts(
            adapters, graphdef, state, batch, scale=cfg.scale, start=start, choices=(a, b), kl_weight=1.0
        )
        for i, ex in enumerate(examples):
            logits = lm.logits(np.asarray([ex.ids]))[0, -1]
            assert abs(float(z[i]) - (logits[a] - logits[b])) < 1e-4
        assert float(kl) == pytest.approx(0.0, abs=1e-6)
        p = 1 / (1 + np.exp(-np.asarray(z, np.float64)))
        y = np.asarray(LABELS[:4])
        assert float(bce) == pytest.approx(
            float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)))), rel=1e-4
        )


def test_merged_weights_are_w_plus_ab_and_leave_the_base_alone(tiny_gemma3):
    lm = tiny_gemma3
    cfg = LoraConfig(rank=3, alpha=6.0, layers=1)
    adapters = {
        k: np.asarray(v) for k, v in _nonzero(init_adapters(lm.model, cfg, jax.random.key(0))).items()
    }
    before = np.asarray(lm.model.blocks[-1].attn.o[...]).copy()
    tuned = merged_lm(lm, adapters, cfg.scale, "t")
    last = len(lm.model.blocks) - 1
    expected = before + (adapters[f"{last}.attn.o.a"] @ adapters[f"{last}.attn.o.b"] * 2.0).reshape(
        before.shape
    )
    np.testing.assert_allclose(np.asarray(tuned.model.blocks[-1].attn.o[...]), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(np.asarray(lm.model.blocks[-1].attn.o[...]), before)
    np.testing.assert_array_equal(
        np.asarray(tuned.model.blocks[0].attn.o[...]), np.asarray(lm.model.blocks[0].attn.o[...])
    )
    ids = np.asarray([lm.encode("hello there")])
    assert np.abs(tuned.logits(ids) - lm.logits(ids)).max() > 1e-4
    with pytest.raises(CalibError, match="no matching weight"):
        merged_lm(lm, {"99.attn.q.a": adapters[f"{last}.attn.q.a"]}, 1.0, "bad")


def test_one_step_lowers_the_loss_on_a_fixed_batch(tiny_llama):
    lm = tiny_llama
    cfg = TrainConfig(lora=LoraConfig(rank=4), learning_rate=1e-3, batch_size=12)
    examples = build_examples(lm, QUESTIONS, ANSWERS, LABELS)
    batch = pad_batch(examples, 12)
    graphdef, state = lm.graphdef_and_state
    adapters = _nonzero(init_adapters(lm.model, cfg.lora, jax.random.key(0)))
    opts = dict(scale=cfg.lora.scale, start=0, choices=choice_ids(lm), kl_weight=cfg.kl_weight)
    before, _ = loss_parts(adapters, graphdef, state, batch, **opts)
    grads = jax.grad(lambda a: loss_parts(a, graphdef, state, batch, **opts)[0])(adapters)
    optimizer = make_optimizer(cfg)
    updates, _ = optimizer.update(grads, optimizer.init(adapters), adapters)
    after, _ = loss_parts(jax.tree.map(jnp.add, adapters, updates), graphdef, state, batch, **opts)
    assert float(after) < float(before)


def test_deterministic_and_resume_gives_the_same_weights(tiny_llama, tmp_path):
    lm = tiny_llama
    cfg = TrainConfig(
        lora=LoraConfig(rank=2, layers=1), batch_size=4, epochs=2, save_every=2, learning_rate=1e-2
    )
    examples = build_examples(lm, QUESTIONS, ANSWERS, LABELS)  # 3 steps an epoch, 6 in all
    straight, record = train_lora(lm, examples, cfg, progress=False)
    again, _ = train_lora(lm, examples, cfg, progress=False)
    assert record["steps"] == 6 and record["finished"]
    for k in straight:
        np.testing.assert_array_equal(straight[k], again[k])
    assert any(np.abs(v).max() > 0 for k, v in straight.items() if k.endswith(".b"))  # it did train
    _, rec1 = train_lora(lm, examples, cfg, checkpoint_dir=tmp_path / "ckpt", progress=False, max_steps=3)
    assert not rec1["finished"]
    resumed, rec2 = train_lora(lm, examples, cfg, checkpoint_dir=tmp_path / "ckpt", progress=False)
    assert rec2["first_step"] == 3 and rec2["finished"]
    for k in straight:
        np.testing.assert_array_equal(resumed[k], straight[k])
    other, _ = train_lora(lm, examples, TrainConfig(**{**cfg.__dict__, "seed": 1}), progress=False)
    assert any(not np.array_equal(other[k], straight[k]) for k in straight)


def test_bad_config():
    with pytest.raises(CalibError, match=r"lora\.rank"):
        LoraConfig(rank=0)
    with pytest.raises(CalibError, match=r"lora\.targets"):
        LoraConfig(targets=("attn.x",))
    with pytest.raises(CalibError, match=r"lora\.layers"):
        LoraConfig(layers=5).first_layer(2)
