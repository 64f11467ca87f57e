"""Checks a fine-tuning JSONL file the way OpenAI's format checker does, with line and field in every error.

Each line must be ``{"messages": [...]}`` with roles system/user/assistant, string contents that are not empty,
at least one assistant message, and a total length under the token limit. Problems are collected per line so a
user fixes the file in one pass; a file with any problem is refused (nothing half-imported).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from emotune.data.textio import LineError, ReadReport, iter_jsonl

ALLOWED_ROLES = ("system", "user", "assistant")
# OpenAI allows 65,536 tokens per example for most models; our small CPU models far less, checked at job time.
DEFAULT_MAX_TOKENS_PER_EXAMPLE = 65_536
MAX_REPORTED_ERRORS = 50


def approx_tokens(text: str) -> int:
    """An upper-bound-ish estimate without a tokenizer: one token per CJK char, ~4 chars per token otherwise."""
    cjk = sum(1 for ch in text if "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff")
    return cjk + (len(text) - cjk + 3) // 4


@dataclass
class CheckResult:
    examples: int = 0
    assistant_turns: int = 0
    tokens: int = 0
    errors: list[LineError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and self.examples > 0

    def summary(self) -> str:
        shown = "; ".join(str(e) for e in self.errors[:5])
        more = f" (+{len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
        return shown + more if self.errors else f"{self.examples} examples"


def check_chat_jsonl(
    text: str,
    source: str,
    *,
    count_tokens: Callable[[str], int] = approx_tokens,
    max_tokens: int = DEFAULT_MAX_TOKENS_PER_EXAMPLE,
) -> CheckResult:
    result = CheckResult()
    report = ReadReport(source)

    def fail(line: int, message: str, field_name: str | None = None) -> None:
        if len(report.errors) < MAX_REPORTED_ERRORS:
            report.fail(line, message, field_name)

    for line, value in iter_jsonl(text, report):
        if not isinstance(value, dict) or "messages" not in value:
            fail(line, "each line must be an object with a 'messages' list", "messages")
            continue
        messages = value["messages"]
        if not isinstance(messages, list) or not messages:
            fail(line, "must be a non-empty list", "messages")
            continue
        tokens, assistants, bad = 0, 0, False
        for i, message in enumerate(messages):
            where = f"messages[{i}]"
            if not isinstance(message, dict):
                fail(line, "must be an object with role and content", where)
                bad = True
                continue
            role, content = message.get("role"), message.get("content")
            if role not in ALLOWED_ROLES:
                fail(line, f"unknown role {role!r} (expected one of {', '.join(ALLOWED_ROLES)})", f"{where}.role")
                bad = True
            if not isinstance(content, str):
                fail(line, "missing or not a string", f"{where}.content")
                bad = True
                continue
            if not content.strip():
                fail(line, "is empty", f"{where}.content")
                bad = True
            extra = set(message) - {"role", "content", "name", "weight"}
            if extra:
                fail(line, f"unexpected key(s) {sorted(extra)}", where)
                bad = True
            assistants += role == "assistant"
            tokens += count_tokens(content)
        if not assistants:
            fail(line, "no assistant message: nothing to learn from this example", "messages")
            bad = True
        if tokens > max_tokens:
            fail(line, f"example is {tokens} tokens, over the limit of {max_tokens}", "messages")
            bad = True
        if not bad:
            result.examples += 1
            result.assistant_turns += assistants
            result.tokens += tokens
    result.errors = report.errors
    return result
