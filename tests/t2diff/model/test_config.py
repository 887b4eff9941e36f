import pytest

from t2diff.model.config import ModelConfig


def test_tied_input_defaults_to_each_archs_own_design():
    assert ModelConfig(arch="t2diff").tied_input is False
    assert ModelConfig(arch="sasrec").tied_input is False
    assert ModelConfig(arch="diffurec").tied_input is True  # its process lives where candidates are scored
    with pytest.raises(ValueError, match="not a DiffuRec"):
        ModelConfig(arch="diffurec", tied_input=False)


@pytest.mark.parametrize("arch,key", [("sasrec", "sasrec_tied"), ("t2diff", "t2diff_tied"),
                                      ("mixed_attention", "t2diff_tied")])
def test_legacy_extra_keys_fold_into_tied_input(arch, key):
    """Checkpoints and recorded run specs from before the field carry the old extra keys; they keep their meaning."""
    cfg = ModelConfig(arch=arch, extra={key: True, "other": 1})
    assert cfg.tied_input is True and cfg.extra == {"other": 1}
    # a saved config round-trips to the same meaning, the legacy key gone
    again = ModelConfig.from_dict(cfg.to_dict())
    assert again.tied_input is True and key not in again.extra
    assert ModelConfig(arch=arch, extra={key: False}).tied_input is False
    with pytest.raises(ValueError, match="contradicts"):
        ModelConfig(arch=arch, tied_input=False, extra={key: True})


def test_a_legacy_key_for_another_arch_is_left_alone_as_before():
    # sasrec_tied was only ever read by SASRec: on T2Diff it meant nothing and still does
    cfg = ModelConfig(arch="t2diff", extra={"sasrec_tied": True})
    assert cfg.tied_input is False and cfg.extra == {"sasrec_tied": True}
