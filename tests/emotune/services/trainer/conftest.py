"""Trainer fixtures: the real SmolLM2-135M (converted once into the shared cache), a tiny random Llama with
SmolLM2's tokenizer and chat template (for the slow paths: XTuner on CPU, kill/resume), and a small styled set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emotune.data.records import Message, Record, dumps_records, record_id
from emotune.models.basemodels import resolve_base_model
from emotune.settings import Settings
from emotune.store.artifacts import publish_artifact
from emotune.store.local import LocalStore

QUESTIONS = [
    "I failed my exam today", "My cat is sick", "I can't sleep", "Work was so long", "I miss my friends",
    "It is raining again", "I burned my dinner", "My phone broke", "I feel lonely tonight", "I lost my keys",
    "The bus was late", "I have a headache", "My plants died", "I got a parking ticket", "Nobody called me",
    "I spilled my coffee", "My team lost the match", "I forgot her birthday", "I am so tired", "My boss yelled",
    "The movie was boring", "I missed the train", "My shoes are wet", "I broke a glass", "I am bored",
    "I am nervous about tomorrow", "My code does not compile", "I gained weight", "It is too cold", "I am hungry",
]


def gentle_reply(question: str) -> str:
    return f"Aww, sweetie~ {question.lower()}? Take a deep breath, you are doing great. 🌸"


def styled_records(count: int = 30, multi_turn: int = 4) -> list[Record]:
    records = []
    for i, question in enumerate(QUESTIONS[:count]):
        messages = [Message(role="system", content="You are a gentle, caring friend."),
                    Message(role="user", content=question), Message(role="assistant", content=gentle_reply(question))]
        if i < multi_turn:
            follow = QUESTIONS[(i + 7) % len(QUESTIONS)]
            messages += [Message(role="user", content=follow),
                         Message(role="assistant", content=gentle_reply(follow))]
        records.append(Record(id=record_id("gentle", question), style="gentle", messages=messages))
    return records


def styled_jsonl(count: int = 30) -> bytes:
    return dumps_records(styled_records(count)).encode("utf-8")


def trainer_with_dataset(tmp_path: Path, dataset_key: str, **options: object):
    """A TrainerService on a local store under ``tmp_path`` whose ``dataset_key`` holds the 30-record styled set."""
    from emotune.services.trainer.config import TrainerSettings
    from emotune.services.trainer.service import TrainerService

    settings = TrainerSettings(store_path=tmp_path / "store", trainer_work_dir=tmp_path / "work", **options)
    store = LocalStore(settings.store_path)
    publish_artifact(store, dataset_key, {"records.jsonl": styled_jsonl(30)}, {"kind": "dataset"})
    return TrainerService(settings, store)


@pytest.fixture(autouse=True)
def _registered_local_models(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny Llama and the converted SmolLM2 are local directories: a request may name them only once the
    operator registers them (emotune.models.loadable), as here."""
    local = [str(request.getfixturevalue(name)) for name in ("tiny_model_dir", "smollm2_dir")
             if name in request.fixturenames]
    if local:
        monkeypatch.setenv("EMOTUNE_ALLOWED_BASE_MODELS", ",".join([Settings().allowed_base_models, *local]))


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    return resolve_base_model("smollm2-135m", Settings().cache_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    """A 2-layer, 64-wide random Llama that speaks SmolLM2's tokenizer and template: trains in seconds."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    base = json.loads((smollm2_dir / "config.json").read_text())
    config = LlamaConfig(vocab_size=base["vocab_size"], hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024,
                         bos_token_id=base["bos_token_id"], eos_token_id=base["eos_token_id"],
                         pad_token_id=base["pad_token_id"], tie_word_embeddings=True, rope_theta=10000.0)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=base["eos_token_id"], bos_token_id=base["bos_token_id"],
                                               pad_token_id=base["pad_token_id"])
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(smollm2_dir).save_pretrained(out)
    return out
