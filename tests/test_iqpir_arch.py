"""DualCodebookVQAutoEncoder / IQPIRNet / GTPlusVQGANDiscriminator: the official IQPIR layout, the HQ+ mask, score
bins, the straight-through decode, shapes and ranges, registration."""
import pytest
import torch

from gtplus_arch.iqpir_arch import DualCodebookVQAutoEncoder, GTPlusVQGANDiscriminator, IQPIRNet

pytestmark = pytest.mark.usefixtures('one_torch_thread')

# Widths a multiple of 32 (GroupNorm(32)); the other sizes distinct so that a wrong shape cannot pass by coincidence.
TINY_AE = dict(img_size=16, nf=32, ch_mult=(1, 2), res_blocks=1, attn_resolutions=(8, ), codebook_size=7, emb_dim=12,
               hq_threshold=0.7, fuse_weight=0.8)
TINY_NET = dict(TINY_AE, dim_embd=24, n_head=2, n_layers=2, num_bins=10)


def _res(prefix, cin, cout):
    """fengyang1399-pixel/IQPIR basicsr/archs/vqgan_arch.py ResBlock: norm1 conv1 norm2 conv2 [conv_out]."""
    keys = {f'{prefix}.norm1.weight': (cin, ), f'{prefix}.norm1.bias': (cin, ),
            f'{prefix}.conv1.weight': (cout, cin, 3, 3), f'{prefix}.conv1.bias': (cout, ),
            f'{prefix}.norm2.weight': (cout, ), f'{prefix}.norm2.bias': (cout, ),
            f'{prefix}.conv2.weight': (cout, cout, 3, 3), f'{prefix}.conv2.bias': (cout, )}
    if cin != cout:
        keys.update({f'{prefix}.conv_out.weight': (cout, cin, 1, 1), f'{prefix}.conv_out.bias': (cout, )})
    return keys


def _attn(prefix, c):
    """The official AttnBlock: norm, q, k, v, proj_out (1x1 convs)."""
    keys = {f'{prefix}.norm.weight': (c, ), f'{prefix}.norm.bias': (c, )}
    for name in ('q', 'k', 'v', 'proj_out'):
        keys.update({f'{prefix}.{name}.weight': (c, c, 1, 1), f'{prefix}.{name}.bias': (c, )})
    return keys


def _conv(prefix, cin, cout, k=3):
    return {f'{prefix}.weight': (cout, cin, k, k), f'{prefix}.bias': (cout, )}


# The official VQAutoEncoder(img_size=16, nf=32, ch_mult=[1, 2], quantizer='dual_codebook', res_blocks=1,
# attn_resolutions=[8], codebook_size=7, emb_dim=12), written out by hand from its Encoder / Generator loops
# (the official HQ+ codebook is fixed at 1024 codes; here it follows codebook_size):
# Encoder: conv 3->32; level 0 (16x16): Res 32->32, Downsample; level 1 (8x8): Res 32->64, Attn (8 in attn);
# Res, Attn, Res; GroupNorm; conv 64->emb_dim.
# Generator: conv emb_dim->64; Res, Attn, Res; level 1 (8x8): Res 64->64, Attn, Upsample; level 0: Res 64->32;
# GroupNorm; conv 32->3.
OFFICIAL_AE = {
    **_conv('encoder.blocks.0', 3, 32), **_res('encoder.blocks.1', 32, 32), **_conv('encoder.blocks.2.conv', 32, 32),
    **_res('encoder.blocks.3', 32, 64), **_attn('encoder.blocks.4', 64), **_res('encoder.blocks.5', 64, 64),
    **_attn('encoder.blocks.6', 64), **_res('encoder.blocks.7', 64, 64),
    'encoder.blocks.8.weight': (64, ), 'encoder.blocks.8.bias': (64, ), **_conv('encoder.blocks.9', 64, 12),
    'quantize.embedding.weight': (7, 12), 'quantize_aesthetic.embedding.weight': (7, 12),
    **_conv('generator.blocks.0', 12, 64), **_res('generator.blocks.1', 64, 64), **_attn('generator.blocks.2', 64),
    **_res('generator.blocks.3', 64, 64), **_res('generator.blocks.4', 64, 64), **_attn('generator.blocks.5', 64),
    **_conv('generator.blocks.6.conv', 64, 64), **_res('generator.blocks.7', 64, 32),
    'generator.blocks.8.weight': (32, ), 'generator.blocks.8.bias': (32, ), **_conv('generator.blocks.9', 32, 3),
}


def _layer(i, d):
    """The official TransformerSALayer(d, dim_mlp=2d) with score_embedding != 'adain'."""
    p = f'ft_layers.{i}'
    return {f'{p}.self_attn.in_proj_weight': (3 * d, d), f'{p}.self_attn.in_proj_bias': (3 * d, ),
            f'{p}.self_attn.out_proj.weight': (d, d), f'{p}.self_attn.out_proj.bias': (d, ),
            f'{p}.linear1.weight': (2 * d, d), f'{p}.linear1.bias': (2 * d, ),
            f'{p}.linear2.weight': (d, 2 * d), f'{p}.linear2.bias': (d, ),
            f'{p}.norm1.weight': (d, ), f'{p}.norm1.bias': (d, ), f'{p}.norm2.weight': (d, ), f'{p}.norm2.bias': (d, )}


# The official CodeFormer(dim_embd=24, n_head=2, n_layers=2, codebook_size=7, connect_list=[], num_class=10,
# quantizer_type='dual_codebook', score_embedding='add') on the VQAutoEncoder above (8x8 = 64 tokens):
# position_emb [tokens, dim], feat_emb Linear(emb_dim, dim), score_embed Embedding(num_class, 16*16*256 at full
# size = tokens * emb_dim), ft_layers, idx_pred_layer = [LayerNorm(dim), Linear(dim, 2 * codebook_size, bias=False)].
OFFICIAL_NET = {
    **OFFICIAL_AE, 'position_emb': (64, 24), 'feat_emb.weight': (24, 12), 'feat_emb.bias': (24, ),
    'score_embed.weight': (10, 64 * 12), **_layer(0, 24), **_layer(1, 24),
    'idx_pred_layer.0.weight': (24, ), 'idx_pred_layer.0.bias': (24, ), 'idx_pred_layer.1.weight': (14, 24),
}


def _random_state(layout, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {key: torch.randn(shape, generator=generator) * 0.1 for key, shape in layout.items()}


@pytest.mark.parametrize('cls, config, layout', [(DualCodebookVQAutoEncoder, TINY_AE, OFFICIAL_AE),
                                                 (IQPIRNet, TINY_NET, OFFICIAL_NET)])
def test_official_layout_loads_strictly(cls, config, layout):
    net = cls(**config)
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == layout
    state = _random_state(layout)
    net.load_state_dict(state, strict=True)
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_official_stage2_options_without_score_embedding():
    # The official stage-II YAML's `score_embedding: None` is the string 'None': no score_embed in its checkpoints.
    net = IQPIRNet(**TINY_NET, score_embedding=False)
    layout = {k: v for k, v in OFFICIAL_NET.items() if k != 'score_embed.weight'}
    net.load_state_dict(_random_state(layout), strict=True)
    assert net(torch.rand(1, 3, 16, 16), 0.3)[0].shape == (1, 3, 16, 16)


def _ae(seed=0):
    torch.manual_seed(seed)
    return DualCodebookVQAutoEncoder(**TINY_AE)


def _hq_codebook_grad(net, x, score):
    net.zero_grad(set_to_none=True)
    out, loss_common, loss_hq = net(x, score)
    (out.abs().mean() + loss_common + loss_hq).backward()
    grad = net.quantize_aesthetic.embedding.weight.grad
    return torch.zeros_like(net.quantize_aesthetic.embedding.weight) if grad is None else grad.clone()


def test_hq_branch_learns_only_from_samples_above_threshold():
    net = _ae()
    x = torch.rand(2, 3, 16, 16)
    # At and below S_thr: nothing reaches the HQ+ codebook, and the HQ+ loss is 0.
    low = torch.tensor([0.7, 0.2])
    assert torch.count_nonzero(_hq_codebook_grad(net, x, low)) == 0
    assert net(x, low)[2].item() == 0
    # Above: it learns.
    assert torch.count_nonzero(_hq_codebook_grad(net, x, torch.tensor([0.71, 0.9]))) > 0
    # Mixed: changing the image of the sample at S_thr does not change what the HQ+ codebook learns.
    mixed = torch.tensor([0.7, 0.9])
    other = x.clone()
    other[0] = torch.rand(3, 16, 16)
    grad_a, grad_b = _hq_codebook_grad(net, x, mixed), _hq_codebook_grad(net, other, mixed)
    assert torch.count_nonzero(grad_a) > 0 and torch.allclose(grad_a, grad_b, atol=1e-8)


def test_hq_branch_gives_the_encoder_nothing_for_low_samples():
    net = _ae()
    x = torch.rand(2, 3, 16, 16)
    z = net.encode(x)
    quant, _, loss_hq, _, _ = net.quantize_dual(z, torch.tensor([0.1, 0.7]))
    common, _, _ = net.quantize(z)
    assert torch.equal(quant, common)  # the decoder sees the common codes alone
    assert torch.count_nonzero(torch.autograd.grad(loss_hq, z)[0]) == 0


def test_fusion_is_common_plus_lambda_hq():
    net = _ae()
    x = torch.rand(2, 3, 16, 16)
    z = net.encode(x)
    quant, _, _, idx_common, idx_hq = net.quantize_dual(z, torch.tensor([0.8, 1.0]))
    expected = net.quantize.lookup(idx_common) + 0.8 * net.quantize_aesthetic.lookup(idx_hq)
    assert torch.allclose(quant, expected, atol=1e-6)
    codes_common, codes_hq, fused = net.code_indices(x)
    assert torch.equal(codes_common, idx_common) and torch.equal(codes_hq, idx_hq)
    assert torch.allclose(fused, expected, atol=1e-6) and codes_common.shape == (2, 8, 8)
    assert codes_common.dtype == torch.int64


def test_codebook_loss_is_the_official_one():
    net = _ae()
    z = torch.randn(2, 12, 8, 8)
    quant, loss, indices = net.quantize(z)
    codes = net.quantize.embedding.weight[indices].permute(0, 3, 1, 2)
    # mean((sg[q] - z)^2) + beta * mean((q - sg[z])^2) per sample: equal in value, (1 + beta) * mean((q - z)^2)
    assert torch.allclose(loss, 1.25 * (codes - z).pow(2).flatten(1).mean(1))
    assert torch.allclose(quant, codes, atol=1e-6) and indices.shape == (2, 8, 8)
    distances = (z.permute(0, 2, 3, 1).unsqueeze(-2) - net.quantize.embedding.weight).pow(2).sum(-1)
    assert torch.equal(indices, distances.argmin(-1))  # nearest code


def test_autoencoder_shapes_and_ranges():
    net = _ae()
    x = torch.rand(2, 3, 16, 16)
    seen = {}
    net.encoder.register_forward_pre_hook(lambda module, args: seen.setdefault('x', args[0]))
    out, loss_common, loss_hq = net(x)  # score None: every sample uses both codebooks
    assert torch.allclose(seen['x'], x * 2 - 1)  # the VQGAN works in [-1,1]
    assert out.shape == x.shape and loss_common.dim() == 0 and loss_hq.dim() == 0
    assert torch.isfinite(loss_common) and loss_hq > 0
    last = net.generator.blocks[-1]
    with torch.no_grad():
        last.weight.zero_()
        for bias, expected in ((-1.0, 0.0), (0.0, 0.5), (1.0, 1.0)):
            last.bias.fill_(bias)
            assert torch.allclose(net(x, torch.rand(2))[0], torch.full_like(x, expected))  # [-1,1] -> [0,1]
    with pytest.raises(ValueError, match='divisible'):
        net(torch.rand(1, 3, 15, 16))
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        net(x, torch.tensor([0.5, 1.2]))
    with pytest.raises(ValueError, match='multiple of 32'):
        DualCodebookVQAutoEncoder(**dict(TINY_AE, nf=24))


def _bn(prefix, c):
    return {f'{prefix}.weight': (c, ), f'{prefix}.bias': (c, ), f'{prefix}.running_mean': (c, ),
            f'{prefix}.running_var': (c, ), f'{prefix}.num_batches_tracked': ()}


# CodeFormer's Fuse_sft_block(32, 32) in fuse_convs_dict['16'] (connect_list=['16'] at this size): encode_enc
# ResBlock(2 * 32, 32), scale / shift = [conv3 32->32, LeakyReLU, conv3 32->32].
OFFICIAL_FUSE_16 = {
    **_res('fuse_convs_dict.16.encode_enc', 64, 32),
    **_conv('fuse_convs_dict.16.scale.0', 32, 32), **_conv('fuse_convs_dict.16.scale.2', 32, 32),
    **_conv('fuse_convs_dict.16.shift.0', 32, 32), **_conv('fuse_convs_dict.16.shift.2', 32, 32),
}
# The official VQGANDiscriminator(nc=3, ndf=8, n_layers=2): main = [conv4s2 3->8, LReLU, conv4s2 8->16 (no bias),
# BN, LReLU, conv4s1 16->32 (no bias), BN, LReLU, conv4s1 32->1].
OFFICIAL_DISC = {
    **_conv('main.0', 3, 8, 4), 'main.2.weight': (16, 8, 4, 4), **_bn('main.3', 16),
    'main.5.weight': (32, 16, 4, 4), **_bn('main.6', 32), **_conv('main.8', 32, 1, 4),
}


def test_official_fusion_blocks_load_strictly_and_stay_frozen():
    net = IQPIRNet(**TINY_NET, connect_list=['16'])
    layout = {**OFFICIAL_NET, **OFFICIAL_FUSE_16}
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == layout
    net.load_state_dict(_random_state(layout), strict=True)
    assert not any(p.requires_grad for p in net.fuse_convs_dict.parameters())
    with pytest.raises(ValueError, match='connect_list'):
        IQPIRNet(**TINY_NET, connect_list=['32'])


def test_discriminator_official_layout_and_range():
    net = GTPlusVQGANDiscriminator(nc=3, ndf=8, n_layers=2)
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == OFFICIAL_DISC
    state = {k: v.abs() + 0.5 if v.is_floating_point() else v for k, v in _random_state(OFFICIAL_DISC).items()}
    state['main.3.num_batches_tracked'] = state['main.6.num_batches_tracked'] = torch.tensor(3)
    net.load_state_dict(state, strict=True)
    seen = {}
    net.main.register_forward_pre_hook(lambda module, args: seen.setdefault('x', args[0]))
    x = torch.rand(2, 3, 32, 32)
    assert net(x).shape == (2, 1, 6, 6)
    assert torch.allclose(seen['x'], x * 2 - 1)  # trained on [-1,1] images


def _net(seed=0, **overrides):
    torch.manual_seed(seed)
    return IQPIRNet(**dict(TINY_NET, **overrides))


def test_score_bins_cover_the_closed_unit_interval():
    net = _net()
    bins = net.score_bin(torch.tensor([0.0, 0.5, 0.99, 1.0]))
    assert bins.tolist() == [0, 5, 9, 9]  # the official floor(10 s) gives 10 at 1.0, past its 10-row table
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        fresh = {s: net(x, s, code_only=True)[0] for s in (0.0, 0.5, 1.0)}
        # Zero-initialised: an untrained bin leaves the latent as it is (N(0,1) rows decoded to garbage).
        assert torch.equal(fresh[0.0], fresh[0.5]) and torch.equal(fresh[0.0], fresh[1.0])
        net.score_embed.weight.normal_()  # as after training
        logits = {s: net(x, s, code_only=True)[0] for s in (0.0, 0.5, 0.99, 1.0)}
    assert torch.equal(logits[0.99], logits[1.0])  # same bin
    assert not torch.equal(logits[0.0], logits[0.5])  # the bin reaches the transformer
    for bad in (-0.01, 1.01, float('nan')):
        with pytest.raises(ValueError, match=r'\[0, 1\]'):
            net(x, bad)


def test_iqpir_shapes_and_ranges():
    net = _net()
    x = torch.rand(2, 3, 16, 16)
    score = torch.tensor([0.3, 1.0])
    seen = {}
    net.idx_pred_layer.register_forward_hook(lambda module, args, output: seen.setdefault('raw', output))
    out, logits_common, logits_hq, lq_feat = net(x, score)
    assert out.shape == x.shape and lq_feat.shape == (2, 12, 8, 8)
    assert logits_common.shape == logits_hq.shape == (2, 64, 7)
    code_only = net(x, score, code_only=True)
    assert len(code_only) == 3 and torch.allclose(code_only[0], logits_common)
    # The interleaved official head: output 2k is code k of HQ+, 2k + 1 code k of the common codebook.
    raw = seen['raw'].transpose(0, 1)  # [tokens, B, 14] -> [B, tokens, 14]
    assert torch.equal(logits_hq, raw[..., 0::2]) and torch.equal(logits_common, raw[..., 1::2])
    # The value is the decoder's image of the argmax codes, exactly.
    with torch.no_grad():
        grid = (2, 8, 8)
        hard = (net.quantize.lookup(logits_common.argmax(-1).view(grid))
                + 0.8 * net.quantize_aesthetic.lookup(logits_hq.argmax(-1).view(grid)))
        assert torch.allclose(out, net.decode(hard), atol=1e-5)
    with pytest.raises(ValueError, match='16x16'):
        net(torch.rand(1, 3, 32, 32), 0.5)
    with pytest.raises(ValueError, match='Tensor'):
        net(x, torch.rand(3))


def _grads(net):
    return {name: p.grad for name, p in net.named_parameters()}


@pytest.mark.parametrize('fix_modules', [('quantize', 'quantize_aesthetic', 'generator'), ('generator', )])
def test_straight_through_reaches_encoder_and_transformer_only(fix_modules):
    net = _net(fix_modules=fix_modules)
    out = net(torch.rand(2, 3, 16, 16), torch.tensor([0.2, 0.9]))[0]
    (out - 0.7).pow(2).mean().backward()  # stands for the NR-IQA loss on the decoded image
    grads = _grads(net)
    frozen = [n for n in grads if n.startswith(('generator.', 'quantize.', 'quantize_aesthetic.'))]
    assert frozen and all(grads[n] is None for n in frozen)  # codebooks read detached even when not frozen
    for name in ('encoder.blocks.0.weight', 'score_embed.weight', 'feat_emb.weight', 'ft_layers.0.linear1.weight',
                 'ft_layers.1.self_attn.in_proj_weight', 'idx_pred_layer.1.weight'):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name
    assert all(not p.requires_grad for n, p in net.named_parameters() if n.split('.')[0] in fix_modules)


def test_official_straight_through_reaches_the_latent_only():
    net = _net(official_straight_through=True)
    x, score = torch.rand(2, 3, 16, 16), torch.tensor([0.2, 0.9])
    out = net(x, score)[0]
    out.mean().backward()
    grads = _grads(net)
    assert grads['encoder.blocks.0.weight'].abs().sum() > 0 and grads['score_embed.weight'].abs().sum() > 0
    assert grads['idx_pred_layer.1.weight'] is None and grads['ft_layers.0.linear1.weight'] is None
    with torch.no_grad():
        assert torch.allclose(out, _net()(x, score)[0])  # same value as the default estimator


def test_registered_after_basicsr():
    import basicsr  # noqa: F401  (basicsr first, as a user's script would)
    import gtplus_arch  # noqa: F401
    from basicsr.utils.registry import ARCH_REGISTRY
    assert ARCH_REGISTRY.get('DualCodebookVQAutoEncoder') is DualCodebookVQAutoEncoder
    assert ARCH_REGISTRY.get('IQPIRNet') is IQPIRNet
    assert ARCH_REGISTRY.get('GTPlusVQGANDiscriminator') is GTPlusVQGANDiscriminator
