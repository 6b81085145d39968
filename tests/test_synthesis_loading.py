"""gtplus_models.synthesis: a network_synth block and its weights, one loading route with one-line errors."""
import pytest
import torch
import yaml

from gtplus_models.checkpoints import CheckpointError
from gtplus_models.synthesis import load_synthesizer, read_synth_opt


def test_block_from_a_synth_yaml_or_a_training_option_file(tmp_path):
    block = {'type': 'BicubicSynthesizer', 'scale': 2}
    (tmp_path / 'synth.yml').write_text(yaml.safe_dump({'network_synth': block}))
    (tmp_path / 'bare.yml').write_text(yaml.safe_dump(block))
    (tmp_path / 'other.yml').write_text(yaml.safe_dump({'network_g': {'type': 'MSRResNet'}}))
    assert read_synth_opt(str(tmp_path / 'synth.yml')) == block == read_synth_opt(str(tmp_path / 'bare.yml'))
    with pytest.raises(ValueError, match='other.yml must hold a network mapping with a type \\(or a network_synth entry'):
        read_synth_opt(str(tmp_path / 'other.yml'))
    with pytest.raises(FileNotFoundError, match='--synth-opt: .*none.yml does not exist'):
        read_synth_opt(str(tmp_path / 'none.yml'))
    synth = load_synthesizer(block)
    hr = torch.rand(2, 3, 8, 12)
    assert synth(hr).shape == (2, 3, 4, 6) and not synth.training


@pytest.mark.parametrize('block, weights, message', [
    ({'type': 'BicubicSynthesizer', 'scal': 2}, None, "network_synth \\(BicubicSynthesizer\\): .*'scal'"),
    ({'type': 'MSRResNet'}, None, "network_synth \\(MSRResNet\\): 'MSRResNet' .* is not a Synthesizer"),
    ({'type': 'NoSuchSynth'}, None, 'network_synth \\(NoSuchSynth\\): .*NoSuchSynth'),
    ({'type': 'BicubicSynthesizer'}, 'x.pth', '--synth-weights \\(x.pth\\): BicubicSynthesizer has no weights'),
])
def test_bad_blocks_and_weights_are_one_line(block, weights, message):
    with pytest.raises(CheckpointError, match=message) as err:
        load_synthesizer(block, weights)
    assert '\n' not in str(err.value)
