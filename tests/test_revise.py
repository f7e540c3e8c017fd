"""Pause-and-revise on tiny-llama: a revised continuation is what decoding the whole history from scratch gives,
pass 0 is generate(), smaller K are prefixes, a gate revises only its questions, cues come from the chat template."""

import numpy as np
import pytest

from calib.decode import generate
from calib.decode.revise import CUES, Cue, CueTokens, chat_turn_suffix, get_cue, revise
from calib.errors import CalibError

PROMPTS = ["hello there", "what is the capital of France?", "x"]
SETTINGS = dict(max_new_tokens=6, stop=(), seed=5)  # one set of compiled shapes for most tests


@pytest.fixture(scope="module")
def run(tiny_llama):
    """Greedy + 2 samples, 2 revise passes with the self-check cue in a new chat turn."""
    return revise(tiny_llama, PROMPTS, num_samples=2, passes=2, cue="self_check", **SETTINGS)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.mark.parametrize(("style", "cue"), [("chat", "self_check"), ("completion", "wait")])
def test_revised_passes_equal_decoding_the_whole_history_from_scratch(tiny_llama, run, style, cue):
    if (style, cue) == ("chat", "self_check"):
        rv = run
    else:
        rv = revise(tiny_llama, PROMPTS, num_samples=2, passes=2, cue=cue, style=style, **SETTINGS)
    cue_text = CUES[cue].chat if style == "chat" else CUES[cue].completion
    checked = 0
    for r in range(3):
        for i in range(len(PROMPTS)):
            for s in range(3):
                history, start = rv.histories[i][s], int(rv.offsets[r, i, s])
                ids = [int(t) for t in rv.passes[r].token_ids[i][s]]
                assert history[start : start + len(ids)] == ids  # the pass's answer sits where it says
                logp = _log_softmax(tiny_llama.logits([history[: start + len(ids)]])[0])
                expected = logp[np.arange(start - 1, start - 1 + len(ids)), ids]
                np.testing.assert_allclose(rv.passes[r].token_logprobs[i][s], expected, atol=1e-4)
                checked += len(ids)
                if r:  # the cue really sits in the history, right before this pass
                    fed = int(rv.fed[r, i, s])
                    assert cue_text in tiny_llama.tokenizer.decode(history[start - fed : start])
    assert checked >= 3 * 9 * 3


def test_no_revise_pass_is_generate_bit_for_bit(tiny_llama):
    plain = generate(tiny_llama, PROMPTS, num_samples=2, include_greedy=True, **SETTINGS)
    rv = revise(tiny_llama, PROMPTS, num_samples=2, passes=0, **SETTINGS)
    assert len(rv.passes) == 1 and rv.passes[0].texts == plain.texts
    for name in ("token_ids", "token_logprobs", "token_entropies", "top_ids"):
        for a_row, b_row in zip(getattr(rv.passes[0], name), getattr(plain, name)):
            assert all(np.array_equal(a, b) for a, b in zip(a_row, b_row)), name
    greedy = generate(tiny_llama, PROMPTS, greedy=True, **SETTINGS)
    assert revise(tiny_llama, PROMPTS, num_samples=0, passes=0, **SETTINGS).passes[0].texts == greedy.texts


def test_fewer_samples_are_a_prefix_of_more_on_every_pass(tiny_llama, run):
    small, large = revise(tiny_llama, PROMPTS, num_samples=1, passes=2, **SETTINGS), run
    for r in range(3):
        for i in range(len(PROMPTS)):
            assert large.passes[r].texts[i][:2] == small.passes[r].texts[i]
            for a, b in zip(large.passes[r].token_logprobs[i][:2], small.passes[r].token_logprobs[i]):
                np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_array_equal(large.decoded[:, :, :2], small.decoded)
    assert large.samples(1, 1).texts == small.samples(1).texts
    assert large.answers(1, 2)[2].texts == small.passes[2].texts


def test_a_gate_revises_only_its_questions_exactly_as_a_full_run_would(tiny_llama, run):
    prompts, full = PROMPTS, run
    chosen = np.array([1, 0, 1], bool)
    calls = []

    def gate(pass0, start):
        calls.append((start, pass0.num_prompts, pass0.num_samples))
        return chosen[start : start + pass0.num_prompts]

    gated = revise(tiny_llama, prompts, num_samples=2, passes=2, gate=gate, **SETTINGS)
    assert calls and all(k == 3 for _, _, k in calls)  # the gate sees the greedy answer and the samples
    np.testing.assert_array_equal(gated.revised, chosen)
    for r in range(3):
        for i in range(len(prompts)):
            if chosen[i] or r == 0:
                assert gated.passes[r].texts[i] == full.passes[r].texts[i]
                np.testing.assert_array_equal(gated.decoded[r, i], full.decoded[r, i])
            else:  # not revised: the pass-0 answer is carried and nothing more is spent
                assert gated.passes[r].texts[i] == full.passes[0].texts[i]
                assert gated.decoded[r, i].sum() == 0 and gated.fed[r, i].sum() == 0
    spent, everything = gated.tokens()["processed"], full.tokens()["processed"]
    assert (spent[chosen] == everything[chosen]).all() and (spent[~chosen] < everything[~chosen]).all()


def test_token_counts_add_up(tiny_llama, run):
    rv = run
    kept = np.array([[[len(t) for t in row] for row in gens.token_ids] for gens in rv.passes])
    assert (rv.decoded >= kept).all() and (rv.decoded <= 6).all() and (rv.fed[0] == 0).all()
    assert (rv.fed[1:] > 10).all()  # a whole chat turn
    t = rv.tokens(k=1, r=1)
    np.testing.assert_array_equal(t["generated"], rv.decoded[:2, :, :2].sum(axis=(0, 2)))
    np.testing.assert_array_equal(
        t["processed"], rv.prompt_tokens + rv.fed[:2, :, :2].sum(axis=(0, 2)) + t["generated"]
    )
    assert rv.prompt_tokens.tolist() == [len(tiny_llama.encode(p)) for p in PROMPTS]
    assert rv.tokens(0, 0)["generated"].tolist() == rv.decoded[0, :, 0].tolist()


def test_chat_cue_is_a_new_user_turn_rendered_by_the_template(tiny_llama):
    tok = tiny_llama.tokenizer
    suffix = chat_turn_suffix(tok, "Is that correct?")
    assert suffix == "<|eos|>\n<|bos|>user\nIs that correct?<|eos|>\n<|bos|>assistant\n"
    cues = CueTokens(tiny_llama, get_cue("self_check"), "chat")
    end, cue = cues.for_row([65, 66], tok.eos_token_id)
    assert end == []  # the answer's end-of-turn token is the first token of the template's suffix
    assert (
        cue.count(tok.eos_token_id) == 2 and cue.count(tok.bos_token_id) == 2 and cue[0] == tok.eos_token_id
    )
    end, cue2 = cues.for_row([65, 66], 10)  # stopped at a newline token: it is fed, then the turn closes
    assert end == [10] and cue2 == cue


def test_completion_and_in_turn_cues_add_a_separator_only_when_needed(tiny_llama):
    tok = tiny_llama.tokenizer
    newline = tok("\n", add_special_tokens=False)["input_ids"][0]
    cues = CueTokens(tiny_llama, get_cue("self_check"), "completion")
    end, cue = cues.for_row([65], newline)
    assert end == [newline] and tok.decode(cue) == CUES["self_check"].completion
    end, cue = cues.for_row([65, 66], None)  # cut by length: a newline goes first
    assert end == [] and tok.decode(cue) == "\n" + CUES["self_check"].completion
    forcing = CueTokens(tiny_llama, get_cue("budget_forcing"), "chat")
    end, cue = forcing.for_row([65], tok.eos_token_id)  # s1: the end of turn is suppressed, "Wait" appended
    assert end == [] and tok.decode(cue) == " Wait, the answer is"


def test_bad_arguments_raise_one_line_errors(tiny_llama):
    with pytest.raises(CalibError, match="unknown revise cue 'nope'"):
        revise(tiny_llama, PROMPTS, passes=1, cue="nope")
    with pytest.raises(CalibError, match="must be >= 0"):
        revise(tiny_llama, PROMPTS, passes=-1)
    with pytest.raises(CalibError, match="unknown prompt style"):
        revise(tiny_llama, PROMPTS, passes=1, style="poem")
    with pytest.raises(CalibError, match="gate returned shape"):
        revise(tiny_llama, PROMPTS, num_samples=2, passes=2, gate=lambda g, s: np.ones(1, bool), **SETTINGS)
    assert isinstance(get_cue(Cue("mine", "Sure?", "Sure?")), Cue)
