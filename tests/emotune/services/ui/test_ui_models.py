"""The model/style picker groups the gateway's flat id list into models and their styles."""

from emotune.services.ui.models import NO_STYLE, find_choice, group_models, split_model_id

IDS = ["smollm2-135m", "smollm2-135m:温柔", "smollm2-135m:毒舌", "ft-smollm2-135m-emo-1a2b3c4d",
       "ft-smollm2-135m-emo-1a2b3c4d:温柔", "gemma3-270m:ft-x-1", "only-styled:傲娇"]


def test_groups_base_fine_tuned_and_styles():
    choices = group_models(IDS)
    assert [c.name for c in choices] == ["only-styled", "smollm2-135m", "ft-smollm2-135m-emo-1a2b3c4d",
                                         "gemma3-270m:ft-x-1"]
    by_name = {c.name: c for c in choices}
    assert by_name["smollm2-135m"].styles == ("温柔", "毒舌")
    assert by_name["smollm2-135m"].style_options == [NO_STYLE, "温柔", "毒舌"]
    assert by_name["ft-smollm2-135m-emo-1a2b3c4d"].fine_tuned
    # a model served only with styles offers no style-less choice
    assert by_name["only-styled"].style_options == ["傲娇"]
    assert not by_name["only-styled"].plain


def test_model_id_round_trip():
    for model_id in IDS:
        name, style = split_model_id(model_id)
        choice = next(c for c in group_models(IDS) if c.name == name)
        assert choice.model_id(style) == model_id
    assert split_model_id("gemma3-270m:ft-x-1") == ("gemma3-270m:ft-x-1", None)


def test_find_choice_preselects_a_link_target():
    choices = group_models(IDS)
    index, style = find_choice(choices, "ft-smollm2-135m-emo-1a2b3c4d:温柔")
    assert choices[index].name == "ft-smollm2-135m-emo-1a2b3c4d" and style == "温柔"
    assert find_choice(choices, "gone-model:x") == (0, None)
    assert find_choice(choices, None) == (0, None)
