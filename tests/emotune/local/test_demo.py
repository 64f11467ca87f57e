"""What the main job prints about the kept training data: per style, the count in the unit the job generated in
(replies, or answers per question with best-of-N), and the commonest reasons candidates were dropped."""

from __future__ import annotations

from rich.console import Console

from emotune.local.demo import print_kept

VALIDATION = {"styles": {"毒舌": {"kept": 40, "total": 180, "kept_share": 0.22,
                                 "reasons": {"not_best": 50, "off_style": 60, "nonsense": 25, "loop": 5}}}}


def _printed(**counts: int) -> str:
    console = Console(record=True, width=200)
    print_kept(VALIDATION, console, **counts)
    return console.export_text()


def test_one_candidate_per_answer_counts_replies() -> None:
    out = _printed()
    assert "毒舌: kept 40 of 180 generated replies (22%); candidates dropped for off_style 60, nonsense 25, loop 5" in out


def test_best_of_counts_answers_per_question_and_does_not_call_the_losers_dropped() -> None:
    out = _printed(best_of=3, answers_per_question=2)
    assert "毒舌: kept 40 answers for 30 questions (the best passing 2 of 6 candidates each)" in out
    assert "not_best" not in out
