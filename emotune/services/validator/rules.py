"""Rule checks on one reply, each failure named by a reason code.

These catch what teachers get wrong in the seeds: a lead-in instead of an answer ("当前祝福语如下"), punctuation
before the sentence after a 语气词 was added ("！啦~", "。哦！"), leftover chat-template role tags, refusals
("作为一个AI"), replies cut off by the token limit, the wrong language, lengths outside the style's bounds and
missing style markers (emoji / 语气词). Embedding-based reasons are defined here too so every code lives in one
place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from emotune.data.styles import Style


class Reason(StrEnum):
    EMPTY = "empty"
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    TRUNCATED = "truncated"
    WRONG_LANGUAGE = "wrong_language"
    LEAD_IN = "lead_in"
    LEADING_PUNCTUATION = "leading_punctuation"
    ROLE_TAG = "role_tag"
    REFUSAL = "refusal"
    MISSING_MARKERS = "missing_markers"
    LOW_SIMILARITY = "low_similarity"
    OFF_STYLE = "off_style"
    NEAR_DUPLICATE = "near_duplicate"
    NOT_BEST = "not_best"
    LOOP = "loop"
    COPY = "copy"
    ECHO = "echo"
    OFF_TOPIC = "off_topic"
    NONSENSE = "nonsense"
    UNKNOWN_STYLE = "unknown_style"


REASON_DESCRIPTIONS: dict[Reason, str] = {
    Reason.EMPTY: "no assistant reply, or only whitespace",
    Reason.TOO_SHORT: "fewer characters than the style's length.min",
    Reason.TOO_LONG: "more characters than the style's length.max",
    Reason.TRUNCATED: "cut off: the teacher hit its token limit, or the text ends mid-sentence / with an open bracket",
    Reason.WRONG_LANGUAGE: "mostly written in another script than the style's language",
    Reason.LEAD_IN: "a lead-in or label instead of (or before) the answer, e.g. 当前祝福语如下 / 以下是…",
    Reason.LEADING_PUNCTUATION: "starts with punctuation, e.g. ！啦~ or 。哦！",
    Reason.ROLE_TAG: "leftover role or template tags, e.g. assistant: / <|im_end|> / <end_of_turn>",
    Reason.REFUSAL: "a refusal or AI self-reference, e.g. 作为一个AI / 抱歉，我无法",
    Reason.MISSING_MARKERS: "fewer of the style's markers (emoji / 语气词) than markers.min_hits",
    Reason.LOW_SIMILARITY: "not clearly closer to the style's reference texts than to neutral text (style lift "
                           "below threshold)",
    Reason.OFF_STYLE: "reads as another style: the judge's reading where a judge is configured, else clearly closer "
                      "to another style's references than to its own (margin below threshold)",
    Reason.NEAR_DUPLICATE: "embedding cosine above the dedup threshold to an earlier kept sample of the style",
    Reason.NOT_BEST: "passed, but another candidate answer to the same question (best-of-N at datagen) read "
                     "more sensible and more in style and was kept instead",
    Reason.LOOP: "a span repeated over and over (share of repeated character 4-grams above threshold), or a "
                 "refrain (three clauses or more opening alike)",
    Reason.COPY: "pastes a run of a few-shot answer or reference text (shared letters at or above threshold)",
    Reason.ECHO: "repeats the user's question back (a shared run covering most of the question's letters)",
    Reason.OFF_TOPIC: "closer to another question than to its own (embedding relevance below threshold)",
    Reason.NONSENSE: "the judge model reads it as nonsense or not an answer (probability sensible below threshold)",
    Reason.UNKNOWN_STYLE: "the record names no style, or a style the styles document does not define",
}

_LEAD_IN = re.compile(
    r"^\s*(?:"
    r"(?:好的|当然|没问题|明白了?|收到)[，,。！!]*\s*(?:以下|下面|这是|这里是|为你|为您)"
    r"|(?:当前|以下|下面|这里)(?:是|为)?.{0,16}?(?:祝福语?|回复|回答|文案|内容|句子|答案)(?:如下)?\s*(?:[:：]|$)"
    r"|(?:祝福语?|回复|回答|文案|输出|答案|正文)\s*[:：]"
    r")"
)
_ROLE_TAG = re.compile(
    r"<\|?(?:im_start|im_end|endoftext|eot_id|start_header_id|end_header_id|user|assistant|system)\|?>"
    r"|<(?:start|end)_of_turn>|\[/?INST\]|<</?SYS>>|</?s>"
    r"|(?:^|\n)\s*(?:assistant|user|system|human|bot|ai|助手|用户|系统|机器人|AI助手)\s*[:：]"
    r"|###\s*(?:Instruction|Response|Input|指令|回答|回复)",
    re.IGNORECASE,
)
_REFUSAL = re.compile(
    r"作为(?:一个|一名)?\s*(?:AI|人工智能|语言模型|大模型|AI助手|智能助手)"
    r"|我(?:只)?是(?:一个)?\s*(?:AI|人工智能|语言模型)"
    r"|(?:抱歉|对不起|很遗憾)[，,。！!\s]*我(?:无法|不能|没办法)"
    r"|我无法(?:回答|提供|满足|协助|生成)|(?:无法|不能)(?:回答|讨论)(?:这个|该|此)(?:问题|话题)"
    r"|as an ai\b|i(?:'m| am) (?:sorry|afraid),? (?:but )?i (?:can(?:no|')t|am unable)"
    r"|i can(?:no|')t (?:help|assist) with",
    re.IGNORECASE,
)
# An unfinished sentence: ends with a comma-like mark, an opening bracket/quote or a connector (not "的" or
# "及": "会好起来的" and "来得及" end complete sentences).
_DANGLING_END = re.compile(r"[，,、：:；;（(“‘《「『【\-—]\s*$|(?:和|与|或|但是?|因为|所以|而且|并且)\s*$")
_PAIRS = ("（）", "()", "“”", "《》", "「」", "『』", "【】")
# Punctuation a sentence must not start with. Opening brackets and quotes are fine, and so are "……" (a hesitation
# 傲娇 / 慵懒 replies start with on purpose) and "？？" (a 毒舌 "are you serious").
_NO_LEADING = set("！!。.，,、；;：:~～）)】」』》”’")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")
_KANA = re.compile(r"[\u3040-\u30ff]")
_HANGUL = re.compile(r"[\uac00-\ud7af]")
# Letters counted per language (others are not checked): the share of the expected script among letters.
_SCRIPTS: dict[str, tuple[re.Pattern[str], ...]] = {
    "zh": (_HAN,), "ja": (_HAN, _KANA), "ko": (_HANGUL,), "en": (_LATIN,), "fr": (_LATIN,), "de": (_LATIN,),
    "es": (_LATIN,), "it": (_LATIN,), "pt": (_LATIN,),
}
_ALL_LETTERS = (_HAN, _LATIN, _KANA, _HANGUL)
MIN_LETTERS_FOR_LANGUAGE = 4
MIN_SCRIPT_SHARE = 0.5
_VARIATION_SELECTORS = dict.fromkeys([0xFE0E, 0xFE0F])


@dataclass(frozen=True)
class RuleResult:
    reasons: tuple[Reason, ...]
    length: int
    marker_hits: int
    marker_score: float  # fraction of the style's markers present (1.0 when the style defines none)


def text_length(text: str) -> int:
    """Characters (code points) of the stripped text: how the style's length bounds are counted."""
    return len(text.strip())


def is_truncated(text: str, finish_reason: str | None = None) -> bool:
    if finish_reason == "length":
        return True
    text = text.rstrip()
    if _DANGLING_END.search(text):
        return True
    return any(text.count(open_) > text.count(close) for open_, close in _PAIRS)


def starts_with_punctuation(text: str) -> bool:
    return text.lstrip()[:1] in _NO_LEADING if text.strip() else False


def script_share(text: str, language: str) -> float | None:
    """Share of letters written in the language's script; None when too few letters or the language is unknown."""
    scripts = _SCRIPTS.get(language)
    if scripts is None:
        return None
    total = sum(len(p.findall(text)) for p in _ALL_LETTERS)
    if total < MIN_LETTERS_FOR_LANGUAGE:
        return None
    return sum(len(p.findall(text)) for p in scripts) / total


def marker_hits(text: str, style: Style) -> tuple[int, float]:
    """How many distinct markers of the style occur (emoji compared without variation selectors)."""
    if style.markers is None or not style.markers.all:
        return 0, 1.0
    plain = text.translate(_VARIATION_SELECTORS)
    markers = {m.translate(_VARIATION_SELECTORS) for m in style.markers.all}
    hits = sum(1 for m in markers if m and m in plain)
    return hits, hits / len(markers)


def check_text(text: str, style: Style, finish_reason: str | None = None) -> RuleResult:
    """Every rule check of one reply against its style; the reasons keep the order of :class:`Reason`."""
    length = text_length(text)
    hits, marker_score = marker_hits(text, style)
    if length == 0:
        return RuleResult((Reason.EMPTY,), 0, 0, 0.0 if style.markers and style.markers.all else 1.0)
    found: set[Reason] = set()
    if length < style.length.min:
        found.add(Reason.TOO_SHORT)
    if length > style.length.max:
        found.add(Reason.TOO_LONG)
    if is_truncated(text, finish_reason):
        found.add(Reason.TRUNCATED)
    share = script_share(text, style.language)
    if share is not None and share < MIN_SCRIPT_SHARE:
        found.add(Reason.WRONG_LANGUAGE)
    if _LEAD_IN.search(text):
        found.add(Reason.LEAD_IN)
    if starts_with_punctuation(text):
        found.add(Reason.LEADING_PUNCTUATION)
    if _ROLE_TAG.search(text):
        found.add(Reason.ROLE_TAG)
    if _REFUSAL.search(text):
        found.add(Reason.REFUSAL)
    if style.markers is not None and style.markers.all and hits < style.markers.min_hits:
        found.add(Reason.MISSING_MARKERS)
    return RuleResult(tuple(r for r in Reason if r in found), length, hits, marker_score)
