"""Render Q/A pairs with the base model's own chat template; labels on assistant tokens only.

The assistant span runs from the end of the generation prompt through the end-of-turn token
(`<|eot_id|>`, `<|im_end|>`, …) so the model learns to stop; whatever the template prints
after that token (a newline) is not trained.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.chat_content import normalize_message_content

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["IGNORE_INDEX", "Example", "PromptFormat", "Renderer"]

IGNORE_INDEX = -100
_PROBE_Q = "What does the probe question ask?"
_PROBE_A = "It asks nothing at all."


@dataclass(frozen=True)
class Example:
    """One tokenized conversation: labels are IGNORE_INDEX outside the assistant reply."""

    input_ids: list[int]
    labels: list[int]

    @property
    def n_answer_tokens(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


@dataclass(frozen=True)
class PromptFormat:
    """What a server must reproduce to prompt the tuned model exactly as it was trained."""

    chat_template: str
    template_sha256: str
    template_vars: dict[str, str]
    end_of_turn: str
    stop_tokens: list[str]
    example_prompt: str = field(default="")  # the probe question rendered as a prompt

    def as_dict(self) -> dict[str, Any]:
        return {
            "chat_template": self.chat_template,
            "template_sha256": self.template_sha256,
            "template_vars": self.template_vars,
            "end_of_turn": self.end_of_turn,
            "stop_tokens": self.stop_tokens,
            "example_prompt": self.example_prompt,
        }


class Renderer:
    """Turns (question, answer) into token ids + labels with the tokenizer's chat template."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, template_vars: dict[str, str]) -> None:
        self.tokenizer = tokenizer
        self.template_vars: dict[str, Any] = dict(template_vars)
        self.end_of_turn = self._find_end_of_turn()

    @property
    def format(self) -> PromptFormat:
        template = str(self.tokenizer.chat_template)
        stops = [self.end_of_turn]
        eos = self.tokenizer.eos_token
        if isinstance(eos, str) and eos not in stops:
            stops.append(eos)
        return PromptFormat(
            chat_template=template,
            template_sha256=hashlib.sha256(template.encode("utf-8")).hexdigest(),
            template_vars=self.template_vars,
            end_of_turn=self.end_of_turn,
            stop_tokens=stops,
            example_prompt=self.prompt_text(_PROBE_Q),
        )

    @property
    def end_of_turn_id(self) -> int:
        token_id = self.tokenizer.convert_tokens_to_ids(self.end_of_turn)
        assert isinstance(token_id, int)
        return token_id

    def prompt_text(self, question: str) -> str:
        """The text up to where the assistant starts writing (generation prompt included)."""
        return str(
            self.tokenizer.apply_chat_template(
                [{"role": "user", "content": normalize_message_content(question)}],
                tokenize=False,
                add_generation_prompt=True,
                **self.template_vars,
            )
        )

    def full_text(self, question: str, answer: str) -> str:
        """The whole conversation as the template prints it."""
        return str(
            self.tokenizer.apply_chat_template(
                [
                    {"role": "user", "content": normalize_message_content(question)},
                    {"role": "assistant", "content": normalize_message_content(answer)},
                ],
                tokenize=False,
                **self.template_vars,
            )
        )

    def render(self, question: str, answer: str) -> Example:
        """Tokenize one pair; only the assistant reply and its end-of-turn token carry labels."""
        prompt = self.prompt_text(question)
        full = self.full_text(question, answer)
        start, end = self._assistant_span(prompt, full)
        enc = self.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        labels = [
            tok if s >= start and e <= end and e > s else IGNORE_INDEX
            for tok, (s, e) in zip(ids, enc["offset_mapping"], strict=True)
        ]
        return Example(ids, labels)

    def _assistant_span(self, prompt: str, full: str) -> tuple[int, int]:
        if not full.startswith(prompt):
            raise ValueError(
                "chat template renders the prompt differently with and without the answer;"
                " cannot locate the assistant turn"
            )
        tail = full[len(prompt) :]
        cut = tail.rfind(self.end_of_turn)
        if cut < 0:
            raise ValueError(f"rendered turn lacks the end-of-turn token {self.end_of_turn!r}")
        return len(prompt), len(prompt) + cut + len(self.end_of_turn)

    def _find_end_of_turn(self) -> str:
        """The special token the template closes an assistant turn with."""
        prompt = self.prompt_text(_PROBE_Q)
        full = self.full_text(_PROBE_Q, _PROBE_A)
        tail = full[len(prompt) :] if full.startswith(prompt) else full
        after = tail.split(_PROBE_A, 1)[-1]
        specials = sorted(
            {str(t) for t in self.tokenizer.all_special_tokens}
            | {str(t) for t in getattr(self.tokenizer, "added_tokens_encoder", {})},
            key=len,
            reverse=True,
        )
        for token in specials:
            if token and after.lstrip().startswith(token):
                return token
        raise ValueError(
            "the chat template does not close the assistant turn with a special token;"
            " the model could never learn to stop"
        )
