"""method "dpo": pairs tokenized as the supervised path does, the DPO + NLL loss against a value computed by hand,
the collapse watch, and the rewards plot."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from emotune.data.records import Message, Record, record_id
from emotune.models.chat_template import IGNORE_INDEX, ChatFormat
from emotune.services.trainer import dpo
from emotune.services.trainer.export import reward_curve, reward_curve_png
from emotune.services.trainer.spec import TrainingSpec
from tests.emotune.services.trainer.conftest import QUESTIONS, gentle_reply


def generic_reply(question: str) -> str:
    return f"Here are three tips about '{question}': 1. rest 2. plan 3. ask for help."


def pairs(count: int = 6, multi_turn: int = 1) -> list[Record]:
    out = []
    for i, question in enumerate(QUESTIONS[:count]):
        messages = [Message(role="system", content="You are a gentle, caring friend.")]
        if i < multi_turn:  # an earlier exchange is context, not trained
            messages += [Message(role="user", content="hi"), Message(role="assistant", content="Hello dear~")]
        messages += [Message(role="user", content=question), Message(role="assistant", content=gentle_reply(question))]
        out.append(Record(id=record_id("gentle", question), style="gentle", messages=messages,
                          rejected=Message(role="assistant", content=generic_reply(question))))
    return out


def test_a_pair_is_tokenized_as_the_supervised_path_tokenizes_its_chosen_sample(tiny_model_dir: Path):
    fmt = ChatFormat.from_pretrained(tiny_model_dir)
    for record in pairs(3, multi_turn=1):
        pair = dpo.encode_pair(fmt, record)
        sft = fmt.encode([m.model_dump() for m in record.messages])
        trained_last = [i for i, label in enumerate(sft.labels) if label != IGNORE_INDEX]
        # prompt + chosen = the SFT sample up to its last trained token (the reply's end token), no more
        assert pair.prompt_ids + pair.chosen_ids == sft.input_ids[:trained_last[-1] + 1]
        assert pair.prompt_ids == fmt.prompt_ids([m.model_dump() for m in record.prompt_messages])  # as served
        assert pair.chosen_ids[-1] == pair.rejected_ids[-1] == fmt.end_token_id
        assert fmt.tokenizer.decode(pair.rejected_ids[:-1]) == record.rejected.content


def test_dpo_nll_loss_matches_a_value_computed_by_hand(tiny_model_dir: Path, tmp_path: Path):
    """TRL's DPOTrainer as emotune configures it: loss = mean over pairs of -log sigmoid(beta * ((pi_c - ref_c) -
    (pi_r - ref_r))) + nll_weight * (the chosen replies' mean per-token NLL), the reference being the same model
    with its LoRA adapter disabled; each log-prob summed over the reply's trained tokens only."""
    import torch
    from transformers import set_seed

    from emotune.services.trainer.hf_backend import load_model

    beta, weight = 0.3, 0.25
    spec = TrainingSpec(dataset_artifact="x", method="dpo", dpo={"beta": beta, "nll_weight": weight},
                        lora={"r": 4, "alpha": 8, "dropout": 0.0}, batch_size=3, max_steps=1, eval_fraction=0)
    fmt = ChatFormat.from_pretrained(tiny_model_dir)
    encoded = [dpo.encode_pair(fmt, r) for r in pairs(3)]
    set_seed(0)
    model = load_model(tiny_model_dir, spec)
    with torch.no_grad():  # a trained-looking adapter: policy and reference differ
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)

    def logp(ids: list[int], reply: int, adapter: bool) -> float:
        with torch.no_grad():
            if adapter:
                logits = model(torch.tensor([ids])).logits[0]
            else:
                with model.disable_adapter():
                    logits = model(torch.tensor([ids])).logits[0]
        logprobs = torch.log_softmax(logits.float(), -1)
        start = len(ids) - reply
        return sum(logprobs[t - 1, ids[t]].item() for t in range(start, len(ids)))

    losses, nll_sum, nll_tokens, chosen_rewards = [], 0.0, 0, []
    for pair in encoded:
        c_ids, r_ids = pair.prompt_ids + pair.chosen_ids, pair.prompt_ids + pair.rejected_ids
        pi_c, pi_r = logp(c_ids, len(pair.chosen_ids), True), logp(r_ids, len(pair.rejected_ids), True)
        ref_c, ref_r = logp(c_ids, len(pair.chosen_ids), False), logp(r_ids, len(pair.rejected_ids), False)
        z = beta * ((pi_c - ref_c) - (pi_r - ref_r))
        losses.append(math.log1p(math.exp(-z)))  # -log sigmoid(z)
        nll_sum -= pi_c
        nll_tokens += len(pair.chosen_ids)
        chosen_rewards.append(beta * (pi_c - ref_c))
    by_hand = sum(losses) / len(losses) + weight * nll_sum / nll_tokens

    pad = fmt.tokenizer.pad_token_id if fmt.tokenizer.pad_token_id is not None else fmt.end_token_id
    args = dpo.dpo_config(spec, tmp_path, 1, False, False, False, pad, 1)
    trainer = dpo.trainer_class()(model=model, ref_model=None, args=args, train_dataset=dpo._dataset(encoded),
                                  processing_class=fmt.tokenizer, data_collator=dpo._CountingCollator(pad))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(encoded))])
    model.eval()
    with torch.no_grad():
        loss, metrics = trainer.get_batch_loss_metrics(model, batch)
    assert abs(by_hand - (sum(losses) / len(losses))) > 1e-3  # the NLL term counts
    assert loss.item() == pytest.approx(by_hand, rel=1e-4, abs=1e-5)
    assert metrics["rewards/chosen"] == pytest.approx(sum(chosen_rewards) / len(chosen_rewards), rel=1e-4, abs=1e-5)
    assert metrics["nll_loss"] == pytest.approx(nll_sum / nll_tokens, rel=1e-4)


def test_pairs_are_split_per_style_and_plain_records_are_left_out(tiny_model_dir: Path):
    fmt = ChatFormat.from_pretrained(tiny_model_dir)
    plain = Record(id="plain", style="gentle", messages=[Message(role="user", content="hey"),
                                                          Message(role="assistant", content="hi~")])
    events = []
    spec = TrainingSpec(dataset_artifact="x", method="dpo", eval_fraction=0.2, batch_size=2, epochs=1)
    prepared = dpo.prepare(spec, fmt, [*pairs(10), plain], None, lambda *a, **k: events.append((a, k)))
    assert len(prepared.train) == 8 and len(prepared.eval) == 2 and prepared.total_steps == 4
    assert any(k.get("not_pairs") == 1 for _, k in events)
    with pytest.raises(ValueError, match="preference pairs"):
        dpo.prepare(spec, fmt, [plain], None, lambda *a, **k: None)


def test_collapse_watch_warns_once_on_accuracy_one_with_falling_chosen_reward():
    watch = dpo.CollapseWatch(window=3)
    assert watch.observe(1, 1.0, 0.2) is None
    assert watch.observe(2, 1.0, 0.1) is None
    assert watch.observe(3, 1.0, 0.3) is None  # separated, but the chosen reply gains: healthy
    assert watch.observe(4, 0.5, -0.2) is None  # chosen falls, but the pairs are not all separated
    assert watch.observe(5, 1.0, -0.3) is None
    assert watch.observe(6, 1.0, -0.4) is None  # step 4's accuracy 0.5 is still in the window
    message = watch.observe(7, 1.0, -0.6)
    assert message and "collapse" in message and watch.warned
    assert watch.observe(8, 1.0, -0.9) is None  # once
    healthy = dpo.CollapseWatch(window=3)
    assert [healthy.observe(i, 0.75, -0.1 * i) for i in range(1, 6)] == [None] * 5  # not separated: no warning


def test_reward_curve_and_its_plot():
    history = [{"step": 1, "loss": 0.7, "rewards/chosen": 0.0, "rewards/rejected": 0.0, "rewards/margins": 0.0,
                "rewards/accuracies": 0.0},
               {"step": 1, "eval_loss": 0.69, "eval_rewards/chosen": 0.0},
               {"step": 2, "loss": 0.5, "rewards/chosen": 0.1, "rewards/rejected": -0.3, "rewards/margins": 0.4,
                "rewards/accuracies": 1.0}]
    curve = reward_curve(history)
    assert curve == [{"step": 1, "chosen": 0.0, "rejected": 0.0, "margin": 0.0, "accuracy": 0.0},
                     {"step": 2, "chosen": 0.1, "rejected": -0.3, "margin": 0.4, "accuracy": 1.0}]
    assert reward_curve_png(curve, "t").startswith(b"\x89PNG")
    assert reward_curve([{"step": 1, "loss": 1.0}]) == []
