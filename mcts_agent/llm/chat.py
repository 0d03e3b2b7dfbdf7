"""Rendering chats with a model's own template, tool schemas included.

Every backend's ``format_chat(messages, tools=None)`` comes here. Tool schemas
(OpenAI-style ``{"type": "function", "function": {...}}``) go to the chat template when
it presents tools itself; a template that ignores them (SmolLM2's, for one) gets them in
the system message instead, as a JSON list after ``TOOLS_HEADER``, so they never vanish.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Sequence

from mcts_agent.errors import ConfigError

TOOLS_HEADER = "Here is a list of functions in JSON format that you can invoke:"


def check_messages(messages: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """The messages as a list; a clear error naming the first malformed one."""
    out = list(messages)
    for i, m in enumerate(out):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ConfigError(f"message {i} must be a dict with string 'role' and 'content', got {m!r}")
    return out


def template_presents_tools(template: str | None) -> bool:
    """Whether a Jinja chat template reads the ``tools`` variable."""
    return bool(template) and "tools" in template  # type: ignore[operator]


def inline_tools(messages: list[dict[str, str]], tools: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """The messages with the tool schemas appended to the system message (one is added if absent)."""
    block = TOOLS_HEADER + "\n" + json.dumps(list(tools), ensure_ascii=False)
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": messages[0]["content"].rstrip() + "\n\n" + block}] + messages[1:]
    return [{"role": "system", "content": block}] + messages


def render_chat(tokenizer: Any, messages: Sequence[dict[str, str]], tools: Sequence[dict[str, Any]] | None = None) -> str:
    """``messages`` in ``tokenizer``'s chat template, ending where the assistant speaks."""
    msgs = check_messages(messages)
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return plain_chat(msgs, tools)
    kwargs: dict[str, Any] = {}
    if tools:
        if template_presents_tools(template):
            kwargs["tools"] = list(tools)
        else:
            msgs = inline_tools(msgs, tools)
    try:
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, **kwargs)
    except Exception as e:  # jinja errors name the template's own complaint (e.g. roles must alternate)
        raise ConfigError(f"cannot render chat messages with the model's chat template: {type(e).__name__}: {e}") from e


def plain_chat(messages: Sequence[dict[str, str]], tools: Sequence[dict[str, Any]] | None = None) -> str:
    """A template-free rendering: ``Role: content`` lines, then ``Assistant:``."""
    msgs = check_messages(messages)
    if tools:
        msgs = inline_tools(msgs, tools)
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in msgs]
    return "\n".join(lines) + "\nAssistant: "


def plain_chat_position(prompt: str, questions: Iterable[str]) -> tuple[str, str, int]:
    """Where a ``plain_chat`` prompt stands: ``(the question of ``questions`` it poses, the text from
    that question on, assistant turns already taken)``; for scripted policies (tests, oracles)."""
    question = next((q for q in questions if q in prompt), None)
    if question is None:
        raise ValueError(f"the prompt poses none of the {len(list(questions))} known tasks: {prompt[:120]!r}")
    after = prompt[prompt.index(question):]
    return question, after, after.count("\nAssistant: ") - 1
