"""Prompts for short answers, and reading the answer back out of a generation.

Two styles: "completion" for base models (an instruction and few-shot "Q: ...\\nA: ..." blocks, ending in "A:";
stop generation at a newline) and "chat" for instruct models (the tokenizer's own chat template, generation prompt
added). The built-in demonstrations are hand-written and deliberately unlike any built-in task question.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from calib.errors import CalibError
from calib.tasks.base import Example

CLOSED_INSTRUCTION = "Answer the question with a short answer only: a name, a word or a number, nothing else."
OPEN_INSTRUCTION = "The question has many correct answers. Give exactly one short answer, nothing else."

# Hand-written demonstrations; tests check that none of them is a built-in task question.
DEFAULT_DEMOS: tuple[tuple[str, str], ...] = (
    ("What is the largest planet in the Solar System?", "Jupiter"),
    ("Who wrote the play Romeo and Juliet?", "William Shakespeare"),
    ("Name a primary colour.", "Blue"),
    (
        "A baker makes 12 loaves in the morning and 9 in the afternoon, then sells 15. How many loaves are left?",
        "6",
    ),
    ("Name a string instrument.", "Violin"),
    ("How many legs does a spider have?", "8"),
)


@dataclass(frozen=True)
class FewShotTemplate:
    """A completion prompt: instruction, demonstration blocks, then the question and an open answer slot."""

    demos: tuple[tuple[str, str], ...] = DEFAULT_DEMOS
    instruction: str | None = None  # None: the example's instruction (closed or open-ended)
    question_prefix: str = "Q: "
    answer_prefix: str = "A:"
    separator: str = "\n\n"

    def block(self, question: str, answer: str | None = None, context: str = "") -> str:
        head = f"Context: {context.strip()}\n" if context else ""
        tail = f" {answer}" if answer is not None else ""
        return f"{head}{self.question_prefix}{question.strip()}\n{self.answer_prefix}{tail}"

    def render(self, ex: Example, n_shots: int | None = None, instruction: str | None = None) -> str:
        demos = self.demos if n_shots is None else self.demos[: max(0, n_shots)]
        text = instruction or self.instruction or instruction_for(ex)
        parts = [text] if text else []
        parts += [self.block(q, a) for q, a in demos]
        parts.append(self.block(ex.question, None, ex.context))
        return self.separator.join(parts)


def instruction_for(ex: Example) -> str:
    """The example's own instruction (e.g. MMLU's 'answer with the letter'), else the closed/open default."""
    return str(ex.metadata.get("instruction") or (OPEN_INSTRUCTION if ex.open_ended else CLOSED_INSTRUCTION))


def chat_messages(
    ex: Example,
    *,
    instruction: str | None = None,
    demos: Sequence[tuple[str, str]] = (),
    system: str | None = None,
) -> list[dict[str, str]]:
    """Chat messages: optional system turn, demonstration turns, then instruction + (context) + question."""
    text = instruction or instruction_for(ex)
    messages = [{"role": "system", "content": system}] if system else []
    for q, a in demos:
        messages += [
            {"role": "user", "content": f"{text}\n\nQuestion: {q}"},
            {"role": "assistant", "content": a},
        ]
    context = f"Context: {ex.context.strip()}\n\n" if ex.context else ""
    messages.append({"role": "user", "content": f"{text}\n\n{context}Question: {ex.question.strip()}"})
    return messages


def build_prompt(
    ex: Example,
    tokenizer: Any = None,
    style: str = "chat",
    *,
    template: FewShotTemplate | None = None,
    n_shots: int | None = None,
    instruction: str | None = None,
    system: str | None = None,
) -> str:
    """The prompt text for one example. chat: the tokenizer's chat template with the generation prompt added
    (n_shots demonstrations as earlier turns, default 0); completion: few-shot blocks (default all demos)."""
    template = template or FewShotTemplate()
    if style == "completion":
        return template.render(ex, n_shots=n_shots, instruction=instruction)
    if style != "chat":
        raise CalibError(f"unknown prompt style {style!r}; styles: chat, completion")
    if tokenizer is None or not callable(getattr(tokenizer, "apply_chat_template", None)):
        raise CalibError(
            "style='chat' needs a tokenizer with a chat template; use style='completion' for base models"
        )
    if not getattr(tokenizer, "chat_template", "present"):
        raise CalibError("this tokenizer has no chat template (a base model?); use style='completion'")
    demos = template.demos[: n_shots or 0]
    messages = chat_messages(ex, instruction=instruction, demos=demos, system=system)
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


_PREFIX = re.compile(r"^(?:(?:final\s+)?answer\s*[:\-]|a\s*:)\s*", re.IGNORECASE)
_QUESTION_LINE = re.compile(r"^(?:q|question)\s*:", re.IGNORECASE)
_NEXT_QUESTION = re.compile(r"\s(?:Q|Question)\s*:.*$")
_WRAPPERS = " \t\"'`*_"


def extract_answer(text: str, question: str | None = None) -> str:
    """The answer in a generation: first non-empty line that is not the question echoed back, without an 'A:'
    or 'Answer:' prefix, quotes/markdown emphasis, a following 'Q: ...', or trailing punctuation."""
    echo = re.compile(r"\s+".join(map(re.escape, question.split())), re.IGNORECASE) if question else None
    answer = ""
    for raw in str(text).splitlines():
        line = raw.strip()
        if not line or _QUESTION_LINE.match(line):
            continue
        m = echo.match(line) if echo else None
        if m:
            line = line[m.end() :].strip()
            if not line:
                continue
        answer = line
        break
    answer = _NEXT_QUESTION.sub("", answer)
    answer = _PREFIX.sub("", answer.strip(_WRAPPERS))
    answer = answer.strip(_WRAPPERS)
    return answer.rstrip(".!?,;: ").strip(_WRAPPERS)
