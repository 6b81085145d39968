"""The enhanced-supervision networks: GTPlusNAFNet, CFMG, ORNet and checkpoint normalisation (tiny widths)."""
import pytest
import torch
import torch.nn.functional as F

TINY_CFMG = dict(width=4, num_levels=2, hidden=8)
TINY_ORNET = dict(width=4, enc_blk_nums=[1, 1], middle_blk_num=1, dec_blk_nums=[1, 1])


def num_params(net):
    return sum(p.numel() for p in net.parameters())


def randomise(net, seed=0):
    """Fresh NAFBlocks are the identity (beta = gamma = 0); give every parameter a value so tests see the net."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    return net.eval()


def test_registry_names_after_basicsr():
    import basicsr  # noqa: F401  (basicsr first, as a user's script would)
    import gtplus_arch  # noqa: F401
    from basicsr.utils.registry import ARCH_REGISTRY
    for name in ('GTPlusNAFNet', 'CFMG', 'ORNet'):
        assert name in ARCH_REGISTRY, name
    assert 'NAFNet' not in ARCH_REGISTRY and 'NAFBlock' not in ARCH_REGISTRY  # left free for other plugins


def test_param_counts_of_the_official_configurations():
    from gtplus_arch import CFMG, ORNet
    assert num_params(CFMG()) == 3_237_752  # "about 3.2M"
    assert num_params(ORNet()) == 17_888_003  # "17.9M"
    assert num_params(ORNet(preset='official')) == 17_888_003
    counts = [num_params(ORNet(preset=p)) for p in ('official', 'small', 'light')]
    assert counts == sorted(counts, reverse=True)
    with pytest.raises(ValueError, match='preset'):
        ORNet(preset='huge')
    with pytest.raises(ValueError, match='light'):  # the error lists the choices
        ORNet(preset='tiny')


def test_gtplus_nafnet_odd_sizes_and_official_key_names():
    from gtplus_arch import GTPlusNAFNet
    net = randomise(GTPlusNAFNet(width=4, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1]))
    x = torch.rand(2, 3, 37, 53)
    with torch.no_grad():
        assert net(x).shape == (2, 3, 37, 53)
    keys = set(net.state_dict())
    for key in ('intro.weight', 'encoders.0.0.conv1.weight', 'downs.1.bias', 'middle_blks.0.beta',
                'ups.0.0.weight', 'decoders.1.0.gamma', 'ending.bias'):
        assert key in keys, key  # NAFNet's own names: the official NAFNet checkpoints load strictly


@pytest.mark.parametrize('official_padding', [False, True])
def test_ornet_pads_and_crops_odd_sizes(official_padding):
    from gtplus_arch import ORNet
    net = randomise(ORNet(**TINY_ORNET, official_padding=official_padding))  # 2 levels: multiple of 4
    x = torch.rand(2, 3, 37, 53)
    cond = torch.tensor([0.2, 0.7])
    with torch.no_grad():
        out = net(x, cond)
        assert out.shape == (2, 3, 37, 53)
        # Pad the image (zeros: official; reflect: default), fill c over the padded size, run, crop, add the input.
        padded = F.pad(x, (0, 3, 0, 3), mode='constant' if official_padding else 'reflect')
        assert torch.allclose(net(padded, cond)[..., :37, :53] - padded[..., :37, :53] + x, out, atol=1e-5)
        assert torch.allclose(net(x[1:], 0.7), out[1:], atol=1e-5)  # scalar c == per-sample c
        assert not torch.allclose(net(x, 0.9), out)  # c matters
    assert ORNet(preset='official').padder_size == 16


def tiny_sources(batch=3, size=(20, 28), seed=0):
    torch.manual_seed(seed)
    gt = torch.rand(batch, 3, *size)
    variants = (gt.unsqueeze(1) + 0.1 * torch.randn(batch, 3, 3, *size)).clamp(0, 1)
    return gt, torch.cat([gt.unsqueeze(1), variants], dim=1)


def test_cfmg_masks_sum_to_one_and_forward_shapes():
    from gtplus_arch import CFMG
    net = randomise(CFMG(**TINY_CFMG))
    gt, sources = tiny_sources(size=(19, 27))  # odd sizes are padded for the features, masks stay at H x W
    with torch.no_grad():
        enhanced, masks = net(gt, sources, torch.tensor([0.0, 0.5, 1.0]))
    assert enhanced.shape == gt.shape and masks.shape == (3, 4, 19, 27)
    assert torch.allclose(masks.sum(dim=1), torch.ones(3, 19, 27), atol=1e-5)
    assert torch.allclose(net.predict_masks(gt, torch.tensor([0.0, 0.5, 1.0])), masks)
    with pytest.raises(ValueError, match='4 sources'):
        net(gt, sources[:, :3], 0.5)


def test_cfmg_is_batch_independent_unless_official_fftshift():
    from gtplus_arch import CFMG
    gt, sources = tiny_sources()
    cond = torch.tensor([0.1, 0.5, 0.9])
    fixed = randomise(CFMG(**TINY_CFMG))
    official = CFMG(**TINY_CFMG, official_fftshift=True).eval()
    official.load_state_dict(fixed.state_dict())
    with torch.no_grad():
        batched = fixed(gt, sources, cond)[0]
        alone = fixed(gt[:1], sources[:1], cond[:1])[0]
        assert torch.allclose(batched[:1], alone, atol=1e-5)
        official_batched = official(gt, sources, cond)[1]
        official_alone = official(gt[:1], sources[:1], cond[:1])[1]
        assert not torch.allclose(official_batched[:1], official_alone, atol=1e-4)  # the released batch mixing


def test_cfmg_loads_an_official_layout_state_dict_strictly():
    from gtplus_arch import CFMG
    net = randomise(CFMG(**TINY_CFMG))
    official = dict(net.state_dict())
    # The released CFMG.pkl also carries an unused decoder conv and ring-mask cache buffers.
    official.update({'ending.weight': torch.zeros(4, 4, 3, 3), 'ending.bias': torch.zeros(4),
                     'mask_height': torch.tensor(0), 'mask_width': torch.tensor(0)})
    for key in ('intro.weight', 'encoders.1.0.conv2.weight', 'downs.0.weight', 'middle_blks.0.sca.1.weight',
                'fclayer_1.weight', 'fclayer_last.bias'):
        assert key in official, key
    fresh = CFMG(**TINY_CFMG)
    fresh.load_state_dict(official, strict=True)
    assert torch.equal(fresh.fclayer_last.weight, net.fclayer_last.weight)


@pytest.mark.parametrize('fmt', ['plain', 'module', 'params', 'params_ema'])
def test_normalize_state_dict_formats_through_weights_only_load(tmp_path, fmt):
    from gtplus_arch import CFMG, ORNet, normalize_state_dict
    for make in (lambda: CFMG(**TINY_CFMG), lambda: ORNet(**TINY_ORNET)):
        net = randomise(make())
        state = net.state_dict()
        if fmt == 'module':
            state = {f'module.{k}': v for k, v in state.items()}
        elif fmt in ('params', 'params_ema'):
            state = {fmt: {f'module.{k}': v for k, v in state.items()}, 'iter': 4}
        path = tmp_path / f'{fmt}.pth'
        torch.save(state, path)
        fresh = make()
        fresh.load_state_dict(normalize_state_dict(torch.load(path, weights_only=True)), strict=True)
        for key, value in net.state_dict().items():
            assert torch.equal(fresh.state_dict()[key], value), key


def test_normalize_state_dict_prefers_ema_and_reports_bad_input():
    from gtplus_arch import normalize_state_dict
    both = {'params': {'w': torch.zeros(1)}, 'params_ema': {'w': torch.ones(1)}}
    assert normalize_state_dict(both)['w'] == 1
    assert normalize_state_dict(both, param_key='params')['w'] == 0
    with pytest.raises(KeyError, match='params_ema'):
        normalize_state_dict({'w': torch.zeros(1)}, param_key='params_ema')
    with pytest.raises(TypeError):
        normalize_state_dict([1, 2])
