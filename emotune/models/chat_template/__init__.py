"""One chat template per model, from training to every serving engine.

The #1 failure after fine-tuning (seeds 003/004) is a served model that never stops or repeats the question,
because the template or the stop tokens used in serving differ from the ones used in training. Here a model's
Jinja chat template (the base tokenizer's, or an explicit one) is the single source of truth:

- ``segments``: the template taken apart into plain turn :class:`TurnSegments` (verified to reproduce the Jinja
  output exactly), the form every engine-specific template is derived from;
- ``formats``: :class:`ChatFormat` renders training text with the template, masks the loss to assistant turns
  (each ending with the template's end token) and knows the stop tokens; serving (the inference service) uses
  :meth:`ChatFormat.from_pretrained` on an exported model directory;
- ``exports``: the engine-specific forms (LMDeploy chat-template JSON, Ollama Modelfile TEMPLATE + stop, XTuner
  ``PROMPT_TEMPLATE`` dict) and :func:`export_chat_files`, which writes them next to an exported model
  (tokenizer_config.json with the template, generation_config.json eos ids, ``lmdeploy_chat_template.json``,
  ``Modelfile``, ``emotune_chat.json``);
- ``parity``: :func:`check_parity` compares, token id by token id, the prompt the trainer trained on with the
  prompt each export builds for the same conversations, and checks every stop token is present everywhere.

The rest of the tree imports these names from the package, not from its modules.
"""

from emotune.models.chat_template.exports import CHAT_META_FILE, LMDEPLOY_FILE, MODELFILE, export_chat_files
from emotune.models.chat_template.formats import IGNORE_INDEX, ChatFormat, EncodedSample, model_eos_ids
from emotune.models.chat_template.parity import (
    ParityError,
    ParityReport,
    check_parity,
    lmdeploy_encode,
    render_lmdeploy,
)
from emotune.models.chat_template.segments import Message, TemplateError, TurnSegments, derive_segments

__all__ = [
    "CHAT_META_FILE",
    "IGNORE_INDEX",
    "LMDEPLOY_FILE",
    "MODELFILE",
    "ChatFormat",
    "EncodedSample",
    "Message",
    "ParityError",
    "ParityReport",
    "TemplateError",
    "TurnSegments",
    "check_parity",
    "derive_segments",
    "export_chat_files",
    "lmdeploy_encode",
    "model_eos_ids",
    "render_lmdeploy",
]
