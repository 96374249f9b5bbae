"""Chat message content normalised once, the same way at every entry point to the model.

Training examples (`pipeline.train.render`), the registration smoke test
(`pipeline.ship.register`) and `ask` all pass message text through
`normalize_message_content` before a chat template sees it. Some HF chat templates clean
content themselves (Llama 3's `message['content'] | trim`); the Ollama Go template derived
from them cannot (Go's `text/template` has no trim), so un-normalised text with leading or
trailing whitespace would be prompted differently in serving than in training. Normalised
text is a fixed point of every such cleaning step, so the difference cannot reach the model.
"""

from __future__ import annotations

__all__ = ["normalize_message_content"]


def normalize_message_content(text: str) -> str:
    """Message text as the model is trained and prompted with it.

    Line endings become `\\n` and leading/trailing whitespace is removed with Python's
    `str.strip()`, the very function behind Jinja's `trim` filter, so `trim` of the result
    is the result itself. Inner text (template-looking `{{ }}`, Unicode) is kept verbatim.
    """
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()
