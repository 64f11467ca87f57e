"""A language model that reads replies as a person would: which style a reply is in, and whether it makes sense.

Embedding similarity reads style words, not style: on the labelled replies the nearest-centroid classifier reads
hand-written 毒舌 right 0.80 of the time once its emoji are removed, and it cannot tell an absurd sentence about the
right topic from a good one. An instruct model asked "which of these styles is this reply in?" reads the style
from what is said (Qwen2.5-1.5B: 0.96 / 1.00 as written, 0.88 / 1.00 without emoji; figures in
``instruments.json``).

The judge is any OpenAI-compatible chat endpoint that returns ``top_logprobs`` (llama-server, vLLM, our own
gateway; the operator names it: ``EMOTUNE_VALIDATOR_JUDGE_*``). Each question is answered with one token at
temperature 0; the probabilities of the answer tokens among the top log-probabilities are the reading, so a
judgement costs one prompt evaluation and one decoded token.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx

from emotune.errors import InvalidInput, Unavailable

TOP_LOGPROBS = 20
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

STYLE_QUESTION = ("下面是一个人对朋友的一句话的回复。\n朋友：{question}\n回复：{reply}\n\n"
                  "这条回复的语气更像哪一种？\n{options}\n只回答字母。")
# There is no "none of these" option: offered one (都不是（普通的回答…）), the 1.5B judge never chose it for the
# labelled plain replies and read hand-written 温柔 right only 0.80 of the time instead of 0.96. Whether a reply has
# any style at all is the embedding style lift's question (low_similarity).

# Sense: a system rule and six worked examples, none from the labelled replies (they measure the judge). Without
# the examples the 1.5B model calls almost every reply sensible.
SENSE_RULE = ("你判断一条聊天回复是否合理：合理=针对对方说的话、意思通顺、符合常识（语气温柔或毒舌都可以）；"
              "不合理=胡言乱语、荒诞、答非所问。只回答 是（合理）或 否（不合理）。")
SENSE_EXAMPLES = (
    ("今天好累啊", "辛苦啦，先泡个热水澡，早点睡吧。", "是"),
    ("我又胖了", "三明治在月球上跳舞，所以你的鞋子是蓝色的。", "否"),
    ("明天要考试了", "就这？临时抱佛脚佛都嫌你烦，赶紧把重点再过一遍。", "是"),
    ("工作好累", "我的猫昨天学会了开车，蛋糕都哭了。", "否"),
    ("失恋了好难过", "周末去哪里买电脑比较便宜？推荐你去电子城。", "否"),
    ("想学做饭", "好呀，从番茄炒蛋开始吧，简单又好吃~", "是"),
)
SENSE_ANSWERS = ("是", "否")


def _sense_messages(question: str, reply: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": SENSE_RULE}]
    for asked, answered, verdict in SENSE_EXAMPLES:
        messages += [{"role": "user", "content": f"对方：{asked}\n回复：{answered}"},
                     {"role": "assistant", "content": verdict}]
    return [*messages, {"role": "user", "content": f"对方：{question}\n回复：{reply}"}]


class Judge:
    """One judge model behind an OpenAI-compatible endpoint; calls run ``concurrency`` at a time."""

    def __init__(self, base_url: str, model: str, api_key: str = "", *, concurrency: int = 2,
                 timeout: float = 120.0) -> None:
        if not base_url or not model:
            raise InvalidInput("a judge needs a base_url and a model", field="judge")
        self.model = model
        self.concurrency = concurrency
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout,
                                    transport=httpx.HTTPTransport(retries=2))

    def close(self) -> None:
        self._client.close()

    def _answer(self, messages: list[dict[str, str]], answers: Sequence[str]) -> list[float]:
        """The normalised probabilities of ``answers`` as the first token of the reply (uniform when none of them
        is among the top log-probabilities)."""
        try:
            response = self._client.post("/chat/completions", json={
                "model": self.model, "messages": messages, "max_tokens": 1, "temperature": 0,
                "logprobs": True, "top_logprobs": TOP_LOGPROBS})
        except httpx.HTTPError as exc:
            raise Unavailable(f"the judge {self.model} at {self._client.base_url} is unreachable: {exc}") from None
        if response.status_code != 200:
            raise Unavailable(f"the judge {self.model} at {self._client.base_url} answered "
                              f"{response.status_code}: {response.text[:200]}")
        top = response.json()["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        mass = [sum(math.exp(t["logprob"]) for t in top if t["token"].strip().upper() == a) for a in answers]
        total = sum(mass)
        return [m / total for m in mass] if total > 0 else [1 / len(answers)] * len(answers)

    def _map(self, calls: list[tuple[list[dict[str, str]], Sequence[str]]],
             on_answer: Callable[[int], None] | None = None) -> list[list[float]]:
        """The calls ``concurrency`` at a time; ``on_answer(answered)`` in this thread after each answer in order
        (progress; it may raise to stop: the calls not yet started are then cancelled)."""
        answers: list[list[float]] = []
        with ThreadPoolExecutor(self.concurrency) as pool:
            for answer in pool.map(lambda call: self._answer(*call), calls):
                answers.append(answer)
                if on_answer is not None:
                    on_answer(len(answers))
        return answers

    def styles(self, questions: Sequence[str], replies: Sequence[str], names: Sequence[str],
               on_answer: Callable[[int], None] | None = None) -> list[dict[str, float]]:
        """For each reply, the probability of each style (by name) as the judge reads it."""
        if not 2 <= len(names) <= len(_LETTERS):
            raise InvalidInput(f"the judge tells apart 2 to {len(_LETTERS)} styles, not {len(names)}",
                               field="styles")
        letters = _LETTERS[:len(names)]
        options = "\n".join(f"{letter}. {name}" for letter, name in zip(letters, names))
        calls = [([{"role": "user", "content": STYLE_QUESTION.format(question=q, reply=r, options=options)}],
                  letters) for q, r in zip(questions, replies, strict=True)]
        return [dict(zip(names, probabilities)) for probabilities in self._map(calls, on_answer)]

    def sense(self, questions: Sequence[str], replies: Sequence[str],
              on_answer: Callable[[int], None] | None = None) -> list[float]:
        """For each reply, the probability that it is a sensible answer to its question."""
        calls = [(_sense_messages(q, r), SENSE_ANSWERS) for q, r in zip(questions, replies, strict=True)]
        return [probabilities[0] for probabilities in self._map(calls, on_answer)]
