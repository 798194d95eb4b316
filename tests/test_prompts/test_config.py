import pytest
import torch

from vpt_mm.prompts import PromptConfig


def test_defaults():
    cfg = PromptConfig.from_dict(dict(num_tokens=5))
    assert cfg.location == 'prepend' and cfg.dropout == 0.1
    assert cfg.layer_ids(12) == [0]
    assert PromptConfig(num_tokens=5, deep=True).layer_ids(12) == list(
        range(12))


@pytest.mark.parametrize('layers, expected', [((1, 3), [0, 1, 2]),
                                              ((4, 12), list(range(3, 12))),
                                              ((12, 3), list(range(2, 12))),
                                              ((1, 1), [0])])
def test_layer_ranges(layers, expected):
    # `layers` overrides `deep`; a top-down range means the same layers.
    cfg = PromptConfig(num_tokens=2, deep=True, layers=layers)
    assert cfg.layer_ids(12) == expected


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_tokens=0), 'num_tokens .* must be an integer >= 1, got 0'),
    (dict(num_tokens=-3), 'must be an integer >= 1'),
    (dict(num_tokens=2.5), 'must be an integer >= 1'),
    (dict(location='middle'), "Unknown prompt location 'middle'"),
    (dict(share='some'), "Unknown prompt share 'some'"),
    (dict(init='zeros'), "Unknown prompt init 'zeros'"),
    (dict(init='cls'), "init='cls' needs cls_init"),
    (dict(cls_init=torch.zeros(2, 2)), 'only used with init=.cls.'),
    (dict(dropout=1.0), r'dropout must be in \[0, 1\)'),
    (dict(proj_dim=0), 'proj_dim must be None or an integer >= 1'),
    (dict(layers=(1, )), 'must be a pair of 1-based layer numbers'),
    (dict(location='prepend-pixel', share='inter'), 'pixel-space prompt'),
])
def test_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PromptConfig.from_dict(kwargs)


def test_unknown_key():
    with pytest.raises(ValueError, match=r"Unknown prompt_cfg key\(s\) "
                       r"\['num_token'\]"):
        PromptConfig.from_dict(dict(num_token=5))


@pytest.mark.parametrize('layers', [(0, 3), (1, 13), (13, 13)])
def test_layer_range_outside_model(layers):
    with pytest.raises(ValueError, match='outside the model: layers are '
                       'numbered 1..12'):
        PromptConfig(layers=layers).layer_ids(12)


def test_pixel_locations_are_shallow_only():
    with pytest.raises(ValueError, match='exists only before layer 1'):
        PromptConfig(location='concat-channel', deep=True).layer_ids(12)


@pytest.mark.parametrize('kwargs, match', [
    (dict(deep='False'), r"prompt_cfg.deep must be True or False, got "
     r"'False' \(str\)"),
    (dict(frozen='no'), r"prompt_cfg.frozen must be True or False, got 'no'"),
    (dict(dropout='0.5'), r"prompt_cfg.dropout must be a number, got '0.5'"),
    (dict(dropout=True), 'prompt_cfg.dropout must be a number, got True'),
    (dict(num_tokens=True), 'must be an integer >= 1, got True'),
    (dict(proj_dim=True), 'prompt_cfg.proj_dim must be an integer'),
    (dict(layers=(True, 3)), 'prompt_cfg.layers must be a pair'),
    (dict(location=1), 'prompt_cfg.location must be a string, got 1'),
])
def test_wrong_types_are_refused(kwargs, match):
    from vpt_mm.validation import ConfigTypeError
    with pytest.raises(ValueError, match=match) as info:
        PromptConfig.from_dict(kwargs)
    if 'must be a pair' not in match and 'integer >= 1' not in match:
        assert isinstance(info.value, ConfigTypeError)
