"""gtplus restore: a score-conditioned network at target scores over a folder or LMDB, compared with direct network
calls; IQPIRNet's fixed input size (padding, windows of exactly img_size), sweep strips, resume, same bytes, and a
plug-and-play conditioned network of any size that upscales. Command-line faults are rows in test_bad_inputs.py."""
import os
import re

import cv2
import numpy as np
import pytest
import torch
import yaml
from torch import nn
from torch.nn import functional as F

pytestmark = pytest.mark.usefixtures('one_torch_thread')

# GroupNorm(32) needs widths that are multiples of 32; one transformer layer keeps it fast. img_size 16, latent 8x8.
TINY_IQPIR = {'type': 'IQPIRNet', 'img_size': 16, 'nf': 32, 'ch_mult': [1, 2], 'res_blocks': 1,
              'attn_resolutions': [8], 'codebook_size': 7, 'emb_dim': 12, 'dim_embd': 24, 'n_head': 2, 'n_layers': 1}


def tiny_iqpir(seed=0):
    """A tiny IQPIRNet in eval mode whose score embedding is large enough to change the chosen codes."""
    from basicsr.archs import build_network
    torch.manual_seed(seed)
    net = build_network(dict(TINY_IQPIR)).eval()
    nn.init.normal_(net.score_embed.weight, std=1.0)
    return net


@pytest.fixture(scope='module')
def iqpir(tmp_path_factory):
    """(net, option file, weights): a basicsr training option file with network_g, and a checkpoint whose params_ema
    is ``net`` and whose params are another network (basicsr's test loads params_ema first)."""
    folder = tmp_path_factory.mktemp('iqpir')
    net = tiny_iqpir(0)
    opt = str(folder / 'train_iqpir.yml')
    with open(opt, 'w') as f:
        yaml.safe_dump({'name': 'iqpir_stage2', 'model_type': 'IQPIRModel', 'network_g': dict(TINY_IQPIR)}, f)
    weights = str(folder / 'net_g_latest.pth')
    torch.save({'params': tiny_iqpir(1).state_dict(), 'params_ema': net.state_dict()}, weights)
    return net, opt, weights


def write_images(folder, sizes, seed=0):
    """PNGs ``k<i>.png`` of smooth random RGB images of the (h, w) ``sizes``; returns the folder."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.RandomState(seed)
    for i, (h, w) in enumerate(sizes):
        coarse = rng.rand(max(h // 4, 2), max(w // 4, 2), 3).astype(np.float32)
        img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)
        cv2.imwrite(os.path.join(folder, f'k{i}.png'), (img * 255).round().astype(np.uint8))
    return str(folder)


def as_tensor(path):
    """A PNG as Tensor[1,3,H,W] RGB [0,1], as the tools decode it."""
    return torch.from_numpy(cv2.imread(path)[..., ::-1].astype(np.float32) / 255).permute(2, 0, 1)[None]


def as_uint8(tensor):
    """Tensor[1,3,H,W] [0,1] -> HxWx3 uint8 BGR, as the PNGs hold it."""
    from gtplus_data.image_util import tensor_to_uint8
    return tensor_to_uint8(tensor)[..., ::-1]


def direct(net, img, score):
    with torch.no_grad():
        out = net(img, torch.tensor([score]))
    return out[0] if isinstance(out, tuple) else out


def test_the_fixed_size_rule():
    from basicsr.archs import build_network

    from gtplus_models.tools.tiling import fixed_input_size
    assert fixed_input_size(tiny_iqpir()) == 16
    autoencoder = {k: v for k, v in TINY_IQPIR.items() if k not in ('dim_embd', 'n_head', 'n_layers')}
    assert fixed_input_size(build_network(dict(autoencoder, type='DualCodebookVQAutoEncoder'))) is None  # any size
    assert fixed_input_size(nn.Conv2d(3, 3, 3)) is None
    declared = nn.Identity()
    declared.fixed_input_size = 24
    assert fixed_input_size(declared) == 24


def test_restore_at_img_size_is_the_direct_call_and_scores_differ(iqpir, tmp_path):
    from gtplus_models.tools.restore import restore
    net, opt, weights = iqpir
    images = write_images(tmp_path / 'in', [(16, 16)])
    out = str(tmp_path / 'out')
    assert restore(images, out, opt, weights, [0.3, 0.9]) == ['k0']
    img = as_tensor(os.path.join(images, 'k0.png'))
    written = {s: cv2.imread(os.path.join(out, f'score_{s:.2f}', 'k0.png')) for s in (0.3, 0.9)}
    for score, png in written.items():
        np.testing.assert_array_equal(png, as_uint8(direct(net, img, score).clamp(0, 1)))  # params_ema was loaded
    assert np.abs(written[0.3].astype(int) - written[0.9]).mean() > 5  # the score changes the codes
    strip = cv2.imread(os.path.join(out, 'sweep', 'k0.png'))
    assert strip.shape == (16 + 22, 3 * 16 + 2 * 4, 3)  # label bar; input, 2 scores; 4-pixel gaps


def test_larger_images_run_in_windows_of_exactly_img_size(iqpir):
    from gtplus_models.tools.tiling import run_chain
    net = iqpir[0]
    seen = []
    hook = net.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[-2:])))
    try:
        img = torch.rand(1, 3, 16, 24)
        out = run_chain([(net, True)], img, 0.7, tile=0, tile_pad=4)
        # windows step by 16 - 2 * 4: [0, 16) keeps [0, 12), [8, 24) keeps [12, 24)
        left, right = direct(net, img[..., :16], 0.7).clamp(0, 1), direct(net, img[..., 8:], 0.7).clamp(0, 1)
        torch.testing.assert_close(out, torch.cat([left[..., :12], right[..., 4:]], -1), rtol=0, atol=1e-6)
        seen.clear()
        odd = run_chain([(net, True)], torch.rand(1, 3, 37, 21), 0.7, tile=16, tile_pad=4)
        assert odd.shape == (1, 3, 37, 21)
        assert seen and set(seen) == {(16, 16)}
        seen.clear()
        small = torch.rand(1, 3, 10, 13)  # padded (reflect) to 16x16, cropped back
        padded = F.pad(small, (0, 3, 0, 6), mode='reflect')
        restored = run_chain([(net, True)], small, 0.2, tile_pad=4)
        assert seen == [(16, 16)]
        torch.testing.assert_close(restored, direct(net, padded, 0.2)[..., :10, :13].clamp(0, 1), rtol=0, atol=1e-6)
    finally:
        hook.remove()


@pytest.mark.parametrize('tile, tile_pad, says', [(8, 4, '--tile 8 does not fit IQPIRNet, which takes exactly 16x16 '
                                                            'inputs: give --tile 16 (or 0)'),
                                                  (16, 8, '--tile-pad 8 leaves no centre in the 16x16 windows of '
                                                          'IQPIRNet: give --tile-pad 7 or less')])
def test_a_tile_the_fixed_size_network_cannot_take_is_refused_first(iqpir, tmp_path, tile, tile_pad, says):
    from gtplus_models.tools.restore import restore
    _, opt, weights = iqpir
    images = write_images(tmp_path / 'in', [(16, 16)])
    with pytest.raises(ValueError, match=re.escape(says)):
        restore(images, str(tmp_path / 'out'), opt, weights, [0.5], tile=tile, tile_pad=tile_pad)
    assert not (tmp_path / 'out').exists()


def snapshot(folder):
    return {os.path.relpath(os.path.join(root, name), folder): open(os.path.join(root, name), 'rb').read()
            for root, _, names in os.walk(folder) for name in names}


def test_lmdb_input_resume_and_same_bytes(iqpir, tmp_path):
    from gtplus_data.make_lmdb import folder_to_lmdb
    from gtplus_models.tools.restore import restore
    _, opt, weights = iqpir
    images = write_images(tmp_path / 'in', [(20, 18), (16, 16)])
    lmdb = str(tmp_path / 'in.lmdb')
    folder_to_lmdb(images, lmdb)
    out, again = str(tmp_path / 'out'), str(tmp_path / 'again')
    assert restore(lmdb, out, opt, weights, [0.5, 1.0], tile_pad=2) == ['k0', 'k1']
    first = snapshot(out)
    assert sorted(first) == ['score_0.50/k0.png', 'score_0.50/k1.png', 'score_1.00/k0.png', 'score_1.00/k1.png',
                             'sweep/k0.png', 'sweep/k1.png']
    assert cv2.imread(os.path.join(out, 'score_0.50', 'k0.png')).shape == (20, 18, 3)
    mtimes = {name: os.stat(os.path.join(out, name)).st_mtime_ns for name in first}
    os.remove(os.path.join(out, 'sweep', 'k1.png'))  # an interrupted run: only k1 is redone
    restore(lmdb, out, opt, weights, [0.5, 1.0], tile_pad=2)
    assert snapshot(out) == first
    assert all(os.stat(os.path.join(out, n)).st_mtime_ns == t for n, t in mtimes.items() if not n.endswith('k1.png'))
    restore(images, again, opt, weights, [0.5, 1.0], tile_pad=2)  # the folder: same bytes
    assert snapshot(again) == first


class ToyConditioned(nn.Module):
    """A stand-in score-conditioned restorer of any size that upscales by 2 and returns the bare image."""

    scale = 2

    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(3, 3, 3, padding=1)
        self.gain = nn.Linear(1, 3)

    def forward(self, x, score):
        gain = self.gain(score.view(-1, 1).float()).view(-1, 3, 1, 1)
        return F.interpolate(torch.sigmoid(self.body(x) * gain), scale_factor=2, mode='nearest')


def test_a_plug_and_play_conditioned_network_of_any_size(tmp_path):
    from gtplus_data.image_source import input_source
    from gtplus_models.tools.restore import restore_source
    torch.manual_seed(0)
    net = ToyConditioned().eval()
    images = write_images(tmp_path / 'in', [(21, 30)])
    out = str(tmp_path / 'out')
    restore_source(input_source(images), out, net, [0.2, 0.8], tile=12, tile_pad=4)
    img = as_tensor(os.path.join(images, 'k0.png'))
    for score in (0.2, 0.8):  # tiled with enough context: the whole-image call
        png = cv2.imread(os.path.join(out, f'score_{score:.2f}', 'k0.png'))
        np.testing.assert_array_equal(png, as_uint8(direct(net, img, score).clamp(0, 1)))
    strip = cv2.imread(os.path.join(out, 'sweep', 'k0.png'))
    assert strip.shape == (42 + 22, 3 * 60 + 2 * 4, 3)  # panels at the output's size, the input enlarged


def test_cli_restore_one_score(iqpir, tmp_path):
    from gtplus_models.cli import main
    _, opt, weights = iqpir
    images = write_images(tmp_path / 'in', [(16, 16)])
    out = str(tmp_path / 'out')
    assert main(['restore', images, out, '--opt', opt, '--weights', weights, '--score', '0.9']) == 0
    assert sorted(snapshot(out)) == ['score_0.90/k0.png']


def test_score_conditioned_restorer_through_the_files(tmp_path):
    """The plug-and-play wrapper (an upscaling MSRResNet, score shift on its body) from a YAML and a checkpoint."""
    from conftest import TINY_MSRRESNET

    from gtplus_arch.score_conditioned_arch import ScoreConditionedRestorer
    from gtplus_models.tools.restore import restore
    opt = {'type': 'ScoreConditionedRestorer', 'restorer': dict(TINY_MSRRESNET), 'feature': 'body', 'channels': 8}
    torch.manual_seed(0)
    net = ScoreConditionedRestorer(**{k: v for k, v in opt.items() if k != 'type'}).eval()
    for name, param in net.named_parameters():  # basicsr's init scales MSRResNet to almost its bilinear base
        nn.init.normal_(param, std=1.0 if name == 'score_embed.weight' else 0.1 if name.endswith('weight') else 0)
    weights, yml = str(tmp_path / 'w.pth'), str(tmp_path / 'opt.yml')
    torch.save({'params': net.state_dict()}, weights)
    with open(yml, 'w') as f:
        yaml.safe_dump({'network_g': opt}, f)
    images = write_images(tmp_path / 'in', [(9, 11)])
    out, tiled = str(tmp_path / 'out'), str(tmp_path / 'tiled')
    restore(images, out, yml, weights, [0.1, 0.9])
    restore(images, tiled, yml, weights, [0.1, 0.9], tile=6, tile_pad=6)
    img = as_tensor(os.path.join(images, 'k0.png'))
    written = {}
    for score in (0.1, 0.9):
        written[score] = cv2.imread(os.path.join(out, f'score_{score:.2f}', 'k0.png'))
        np.testing.assert_array_equal(written[score], as_uint8(direct(net, img, score).clamp(0, 1)))
        in_tiles = cv2.imread(os.path.join(tiled, f'score_{score:.2f}', 'k0.png'))
        assert np.abs(in_tiles.astype(int) - written[score]).max() <= 1  # float rounding at most
    assert written[0.1].shape == (36, 44, 3)
    assert np.abs(written[0.1].astype(int) - written[0.9]).mean() > 5
