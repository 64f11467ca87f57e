"""The voice CLI's job options are what the fine-tuning API accepts."""

from __future__ import annotations

from pathlib import Path

from emotune.fine_tuning.protocol import VoiceOptions
from emotune.voice.cli import VoiceRunOptions


def test_openings_are_off_unless_a_teacher_is_named():
    assert VoiceOptions.model_validate(VoiceRunOptions(export=Path("x")).voice_options()).context_teacher is None
    named = VoiceOptions.model_validate(VoiceRunOptions(export=Path("x"), openings="default").voice_options())
    assert named.context_teacher is not None and named.context_teacher.name == "default"
