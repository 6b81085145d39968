"""Enhanced supervision end to end on tiny networks: CFMG and ORNet training, official checkpoints, the tools."""
import glob
import os

import cv2
import numpy as np
import pytest
import torch
import yaml

from conftest import run_cli, write_yaml
from gtplus_models.tools.tiling import tiled_forward

TINY_CFMG = {'type': 'CFMG', 'num_sources': 4, 'width': 4, 'num_levels': 2, 'hidden': 8}
TINY_ORNET_SHAPE = {'width': 4, 'enc_blk_nums': [1, 1], 'middle_blk_num': 1, 'dec_blk_nums': [1, 1]}
TINY_ORNET = dict(type='ORNet', **TINY_ORNET_SHAPE)
TINY_NAFNET = {'type': 'GTPlusNAFNet', 'width': 4, 'middle_blk_num': 1, 'enc_blk_nums': [1], 'dec_blk_nums': [1]}


def photo_crops(num=3, size=96, seed=0):
    """Real photo crops (skimage), HxWx3 float32 RGB."""
    from gtplus_data.sample_photos import load_sample_photo
    rng = np.random.RandomState(seed)
    crops = {}
    for i, name in enumerate(['astronaut', 'coffee', 'chelsea', 'rocket'][:num]):
        img = load_sample_photo(name)
        top, left = rng.randint(0, img.shape[0] - size), rng.randint(0, img.shape[1] - size)
        crops[f'img{i}'] = img[top:top + size, left:left + size].astype(np.float32) / 255.
    return crops


def write_lmdb(path, images):
    from gtplus_data.lmdb_writer import LmdbWriter
    with LmdbWriter(str(path)) as writer:
        for key, img in sorted(images.items()):
            writer.put_image(key, img)
        writer.finalize()
    return str(path)


@pytest.fixture(scope='module')
def variant_data(tmp_path_factory):
    """GT, LQ and three 'SR variants' (unsharp-masked copies of different strength) as LMDBs."""
    root = tmp_path_factory.mktemp('es_data')
    gt = photo_crops()
    paths = {'gt': write_lmdb(root / 'gt.lmdb', gt),
             'lq': write_lmdb(root / 'lq.lmdb', {k: cv2.GaussianBlur(v, (5, 5), 1.5) for k, v in gt.items()})}
    for amount in (1, 2, 3):
        sharpened = {k: np.clip(v + 0.5 * amount * (v - cv2.GaussianBlur(v, (0, 0), 1.0)), 0, 1)
                     for k, v in gt.items()}
        paths[f'x{amount + 1}'] = write_lmdb(root / f'sr_x{amount + 1}.lmdb', sharpened)
    paths['root'] = str(root)
    return paths


def stage_options(name, model_type, network, data, extra_networks=None, **train):
    dataset = {'type': 'GTPlusPairedVariantsDataset', 'dataroot_gt': data['gt'],
               'dataroot_variants': [data['x2'], data['x3'], data['x4']], 'io_backend': {'type': 'lmdb'}}
    opt = {
        'name': name, 'model_type': model_type, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'train': dict(dataset, name='train', gt_size=96, use_hflip=True, use_rot=False,
                                   num_worker_per_gpu=0, batch_size_per_gpu=1, dataset_enlarge_ratio=1),
                     'val': dict(dataset, name='val')},
        'network_g': network, 'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': dict({'optim_g': {'type': 'AdamW', 'lr': 1e-3, 'weight_decay': 0.01},
                       'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5},
                       'total_iter': 4, 'warmup_iter': -1}, **train),
        'val': {'val_freq': 4, 'save_img': False, 'cond': 0.3,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}}},
        'logger': {'print_freq': 2, 'save_checkpoint_freq': 4, 'use_tb_logger': False},
    }
    opt.update(extra_networks or {})
    return opt


def latest(cwd, name):
    return os.path.join(str(cwd), 'experiments', name, 'models', 'net_g_latest.pth')


def read_log(cwd, name):
    logs = sorted(glob.glob(os.path.join(str(cwd), 'experiments', name, 'train_*.log')))
    return open(logs[-1]).read()


@pytest.fixture(scope='module')
def trained_cfmg(variant_data):
    cwd = variant_data['root']
    opt = stage_options('tiny_cfmg', 'CFMGModel', TINY_CFMG, variant_data, grad_clip=1.0,
                        fidelity_opt={'type': 'MSELoss', 'loss_weight': 100.0},
                        quality_opt={'metrics': [{'name': 'niqe', 'weight': 0.1}]})
    run_cli(['train', '-opt', write_yaml(os.path.join(cwd, 'cfmg.yml'), opt)], cwd=cwd)
    return latest(cwd, 'tiny_cfmg')


def test_cfmg_training_logs_fidelity_and_quality(trained_cfmg, variant_data):
    log = read_log(variant_data['root'], 'tiny_cfmg')
    for name in ('l_total', 'l_fidelity', 'l_quality_reward', 'iqa_niqe', 'cond'):
        assert name in log, name
    state = torch.load(trained_cfmg, weights_only=True)['params']
    assert state['fclayer_last.weight'].shape == (4 * 25, 8)


def test_ornet_training_on_gt_and_after_a_frozen_restorer(trained_cfmg, variant_data, tmp_path):
    cwd = variant_data['root']
    frozen = {'network_cfmg': dict(TINY_CFMG)}
    opt = stage_options('tiny_ornet_gt', 'ORNetModel', TINY_ORNET, variant_data, extra_networks=frozen)
    opt['path']['pretrain_network_cfmg'] = trained_cfmg
    opt['ornet_input'] = 'gt'
    run_cli(['train', '-opt', write_yaml(tmp_path / 'ornet_gt.yml', opt)], cwd=cwd)
    assert 'Frozen network_cfmg [CFMG] loaded.' in read_log(cwd, 'tiny_ornet_gt')
    saved = torch.load(latest(cwd, 'tiny_ornet_gt'), weights_only=True)['params']
    assert not any(k.startswith('net_cfmg') for k in saved)  # the frozen CFMG is never saved as trainable

    from basicsr.archs import build_network
    restorer = build_network(dict(TINY_NAFNET))
    torch.save({'params': restorer.state_dict()}, tmp_path / 'restorer.pth')
    opt = stage_options('tiny_ornet_restorer', 'ORNetModel', TINY_ORNET, variant_data,
                        extra_networks=dict(frozen, network_restorer=dict(TINY_NAFNET)))
    opt['path'].update(pretrain_network_cfmg=trained_cfmg, pretrain_network_restorer=str(tmp_path / 'restorer.pth'))
    for phase in ('train', 'val'):
        opt['datasets'][phase]['dataroot_lq'] = variant_data['lq']
    run_cli(['train', '-opt', write_yaml(tmp_path / 'ornet_restorer.yml', opt)], cwd=cwd)
    log = read_log(cwd, 'tiny_ornet_restorer')
    assert 'Frozen network_restorer [GTPlusNAFNet] loaded.' in log and 'l_pix' in log

    # gtplus test with restorer + ORNet, shaped like options/test/EnhancedSupervision: no CFMG, no variants.
    test_opt = {'name': 'tiny_restorer_ornet_test', 'model_type': 'ORNetModel', 'num_gpu': 0, 'ornet_input': 'restorer',
                'datasets': {'test_1': {'name': 'photos', 'type': 'GTPlusPairedVariantsDataset',
                                        'dataroot_gt': variant_data['gt'], 'dataroot_lq': variant_data['lq'],
                                        'io_backend': {'type': 'lmdb'}}},
                'network_g': dict(TINY_ORNET), 'network_restorer': dict(TINY_NAFNET),
                'path': {'pretrain_network_g': latest(cwd, 'tiny_ornet_restorer'), 'strict_load_g': True,
                         'pretrain_network_restorer': str(tmp_path / 'restorer.pth')},
                'val': {'save_img': True, 'cond': 0.3,
                        'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}}}}
    run_cli(['test', '-opt', write_yaml(tmp_path / 'ornet_test.yml', test_opt)], cwd=tmp_path)
    saved = sorted(glob.glob(str(tmp_path / 'results' / 'tiny_restorer_ornet_test' / 'visualization' / 'photos' /
                                 '*.png')))
    assert [os.path.basename(p) for p in saved] == [f'img{i}_tiny_restorer_ornet_test.png' for i in range(3)]
    test_log = open(glob.glob(str(tmp_path / 'results' / 'tiny_restorer_ornet_test' / 'test_*.log'))[0]).read()
    assert '# psnr:' in test_log


def test_ornet_missing_cfmg_weights_is_a_clear_error(variant_data, tmp_path):
    opt = stage_options('no_cfmg', 'ORNetModel', TINY_ORNET, variant_data,
                        extra_networks={'network_cfmg': dict(TINY_CFMG)})
    opt['path']['pretrain_network_cfmg'] = str(tmp_path / 'missing_cfmg.pth')
    proc = run_cli(['train', '-opt', write_yaml(tmp_path / 'x.yml', opt)], cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert 'path.pretrain_network_cfmg' in proc.stderr and 'missing_cfmg.pth' in proc.stderr


@pytest.mark.parametrize('fmt', ['plain', 'module', 'params'])
def test_official_state_dict_formats_load(tmp_path, fmt):
    from gtplus_arch import CFMG, ORNet
    from gtplus_models.checkpoints import load_state_dict_file
    for net in (CFMG(width=4, num_levels=2, hidden=8), ORNet(**TINY_ORNET_SHAPE)):
        state = net.state_dict()
        if fmt == 'module':
            state = {f'module.{k}': v for k, v in state.items()}
        elif fmt == 'params':
            state = {'params': state}
        path = tmp_path / f'{type(net).__name__}.pkl'
        torch.save(state, path)
        fresh = type(net)(width=4, num_levels=2, hidden=8) if isinstance(net, CFMG) else ORNet(**TINY_ORNET_SHAPE)
        fresh.load_state_dict(load_state_dict_file(str(path)), strict=True)
        for key, value in net.state_dict().items():
            assert torch.equal(fresh.state_dict()[key], value)


def test_tiled_forward_matches_untiled():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 3,
                                                                                                     padding=1))
    img = torch.rand(1, 3, 41, 37)
    with torch.no_grad():
        whole = net(img)
        tiled = tiled_forward(net, img, tile=16, tile_pad=4)
    assert torch.allclose(whole, tiled, atol=1e-6)


@pytest.mark.parametrize('upscale', [2, 4])
def test_tiled_forward_of_an_sr_network_matches_untiled(upscale):
    """Tiles of an xs restorer go to s times their input coordinates (they once made a mosaic at the input size)."""
    from basicsr.archs.srresnet_arch import MSRResNet
    torch.manual_seed(0)
    net = MSRResNet(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, upscale=upscale).eval()
    img = torch.rand(1, 3, 41, 37)
    with torch.no_grad():
        whole = net(img)
        tiled = tiled_forward(net, img, tile=16, tile_pad=8)
    assert tiled.shape == whole.shape == (1, 3, 41 * upscale, 37 * upscale)
    assert torch.allclose(whole, tiled, atol=1e-5)


@pytest.mark.parametrize('tile, tile_pad, flag', [(-16, 4, '--tile'), (16, -8, '--tile-pad'), (16.5, 4, '--tile')])
def test_negative_tiling_is_refused(tile, tile_pad, flag):
    with pytest.raises(ValueError, match=f'{flag} must be an integer >= 0'):
        tiled_forward(torch.nn.Identity(), torch.rand(1, 3, 8, 8), tile=tile, tile_pad=tile_pad)


def test_tiling_needs_an_integer_scale():
    with pytest.raises(ValueError, match='integer multiple of the input size'):
        tiled_forward(lambda x: x[:, :, :-1], torch.rand(1, 3, 40, 40), tile=16, tile_pad=4)


def save_network(tmp_path, name, network_opt):
    from basicsr.archs import build_network
    torch.manual_seed(1)
    net = build_network(dict(network_opt))
    torch.save({'params': net.state_dict()}, tmp_path / f'{name}.pth')
    with open(tmp_path / f'{name}.yml', 'w') as f:
        yaml.safe_dump(network_opt, f)
    return str(tmp_path / f'{name}.yml'), str(tmp_path / f'{name}.pth')


def test_refine_after_restorer_writes_pngs_and_sweep(tmp_path):
    folder = tmp_path / 'in'
    folder.mkdir()
    for key, img in photo_crops(num=2, size=70).items():
        cv2.imwrite(str(folder / f'{key}.png'), (img[..., ::-1] * 255).round().astype(np.uint8))
    restorer_opt, restorer_w = save_network(tmp_path, 'restorer', TINY_NAFNET)
    ornet_opt, ornet_w = save_network(tmp_path, 'ornet', TINY_ORNET)
    common = ['--restorer-opt', restorer_opt, '--restorer-weights', restorer_w, '--ornet-opt', ornet_opt,
              '--ornet-weights', ornet_w]
    proc = run_cli(['refine', str(folder), str(tmp_path / 'out'), *common, '--cond', '0,0.5,1'], cwd=tmp_path)
    assert f'refine: 2 images x 3 c values -> {tmp_path / "out"} in ' in proc.stderr  # the closing summary line
    for sub in ('restored', 'refined_c0.00', 'refined_c0.50', 'refined_c1.00', 'sweep'):
        assert sorted(os.listdir(tmp_path / 'out' / sub)) == ['img0.png', 'img1.png'], sub
    sweep = cv2.imread(str(tmp_path / 'out' / 'sweep' / 'img0.png'))
    assert sweep.shape[1] > 5 * 70  # input, restored and three c values side by side
    run_cli(['refine', str(folder), str(tmp_path / 'tiled'), *common, '--cond', '0.5', '--tile', '32'], cwd=tmp_path)
    whole = cv2.imread(str(tmp_path / 'out' / 'refined_c0.50' / 'img1.png')).astype(int)
    tiled = cv2.imread(str(tmp_path / 'tiled' / 'refined_c0.50' / 'img1.png')).astype(int)
    assert np.abs(whole - tiled).max() <= 2  # tiles with 32 px of context: same picture up to rounding
    proc = run_cli(['refine', str(folder), str(tmp_path / 'x'), '--ornet-opt', ornet_opt, '--ornet-weights',
                    str(tmp_path / 'nope.pth')], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and 'nope.pth' in proc.stderr


def test_super_resolve_gt_and_enhance_gt_tools(tmp_path, variant_data):
    from gtplus_data.image_source import ImageSource
    enhancer_opt, enhancer_w = save_network(tmp_path, 'enhancer', TINY_NAFNET)
    out = tmp_path / 'variants'
    proc = run_cli(['super-resolve-gt', variant_data['gt'], str(out), '--enhancer-opt', enhancer_opt,
                    '--enhancer-weights', enhancer_w, '--colour-align', 'wavelet'], cwd=tmp_path)
    assert f'super-resolve-gt: 3 images x 3 variants -> {out} in ' in proc.stderr
    gt = ImageSource(variant_data['gt'])
    for scale in (2, 3, 4):
        variant = ImageSource(str(out / f'sr_x{scale}.lmdb'))
        assert variant.keys == gt.keys
        assert variant.read('img0').shape == gt.read('img0').shape
    # preview.png: per image a strip of whole panels and one of centre zooms (GT, x2, x3, x4), 192 px + label.
    preview = cv2.imread(str(out / 'preview.png'))
    assert preview.shape == (6 * (192 + 22) + 5 * 6, 4 * 192 + 3 * 4, 3)
    proc = run_cli(['super-resolve-gt', variant_data['gt'], str(out), '--enhancer-opt', enhancer_opt,
                    '--enhancer-weights', enhancer_w], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and '--overwrite' in proc.stderr  # complete outputs are never silently replaced

    from gtplus_arch import CFMG
    cfmg_opt = dict(TINY_CFMG)
    cfmg_yml, cfmg_w = save_network(tmp_path, 'cfmg', cfmg_opt)
    variants = [str(out / f'sr_x{s}.lmdb') for s in (2, 3, 4)]
    run_cli(['enhance-gt', variant_data['gt'], str(tmp_path / 'enh.lmdb'), '--variants', *variants, '--cfmg-opt',
             cfmg_yml, '--cfmg-weights', cfmg_w, '--cond', '0.3'], cwd=tmp_path)
    enhanced = ImageSource(str(tmp_path / 'enh.lmdb'))
    assert enhanced.keys == gt.keys
    # preview.png: per image the 4 sources + Î(c) whole and zoomed, then the 4 masks.
    preview = cv2.imread(str(tmp_path / 'enh.lmdb' / 'preview.png'))
    assert preview.shape == (9 * (192 + 22) + 8 * 6, 5 * 192 + 4 * 4, 3)
    # Two ranks, then --merge: the same bytes as the single run, and the preview only once merged.
    enhance_args = ['--variants', *variants, '--cfmg-opt', cfmg_yml, '--cfmg-weights', cfmg_w, '--cond', '0.3']
    for rank in (0, 1):
        run_cli(['enhance-gt', variant_data['gt'], str(tmp_path / 'enh_sharded.lmdb'), *enhance_args, '--rank', rank,
                 '--world-size', 2], cwd=tmp_path)
    assert not (tmp_path / 'enh_sharded.lmdb' / 'preview.png').exists()
    run_cli(['enhance-gt', variant_data['gt'], str(tmp_path / 'enh_sharded.lmdb'), *enhance_args, '--merge'],
            cwd=tmp_path)
    sharded = ImageSource(str(tmp_path / 'enh_sharded.lmdb'))
    assert sharded.keys == enhanced.keys
    assert all(sharded.read_bytes(k) == enhanced.read_bytes(k) for k in gt.keys)
    assert (tmp_path / 'enh_sharded.lmdb' / 'preview.png').exists()
    # Two variants for a CFMG that mixes three: the message counts variants (not sources), and nothing is written.
    proc = run_cli(['enhance-gt', variant_data['gt'], str(tmp_path / 'enh_two.lmdb'), '--variants', *variants[:2],
                    '--cfmg-opt', cfmg_yml, '--cfmg-weights', cfmg_w], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert 'the CFMG mixes the GT and 3 variants, got 2 --variants' in proc.stderr, proc.stderr
    assert not (tmp_path / 'enh_two.lmdb').exists()
    # Same result as the CFMG called directly (c = 0.3), up to 8-bit rounding.
    net = CFMG(**{k: v for k, v in cfmg_opt.items() if k != 'type'})
    net.load_state_dict(torch.load(cfmg_w, weights_only=True)['params'])
    net.eval()
    to_t = lambda img: torch.from_numpy(img.transpose(2, 0, 1).copy())[None]  # noqa: E731
    gt_t = to_t(gt.read('img1'))
    sources = torch.stack([gt_t] + [to_t(ImageSource(v).read('img1')) for v in variants], dim=1)
    with torch.no_grad():
        expected = net(gt_t, sources, torch.tensor([0.3]))[0].clamp(0, 1)[0].numpy().transpose(1, 2, 0)
    assert np.abs(enhanced.read('img1') - expected).max() <= 1 / 255 + 1e-6


def test_super_resolve_gt_enhancer_errors(tmp_path, variant_data):
    proc = run_cli(['super-resolve-gt', variant_data['gt'], str(tmp_path / 'v'), '--diffusers-pipeline',
                    str(tmp_path / 'no_pipeline')], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and 'no_pipeline is not a folder' in proc.stderr and 'Traceback' not in proc.stderr
    proc = run_cli(['super-resolve-gt', variant_data['gt'], str(tmp_path / 'v')], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and 'exactly one enhancer' in proc.stderr
    assert not (tmp_path / 'v').exists()  # nothing written for a command that cannot run


def save_tiny_ldm_sr_pipeline(folder):
    """A randomly initialised diffusers LDMSuperResolutionPipeline (UNet2DModel + VQModel + DDIM), saved locally."""
    from diffusers import DDIMScheduler, LDMSuperResolutionPipeline, UNet2DModel, VQModel
    torch.manual_seed(0)
    vqvae = VQModel(in_channels=3, out_channels=3, down_block_types=('DownEncoderBlock2D', ) * 2,
                    up_block_types=('UpDecoderBlock2D', ) * 2, block_out_channels=(8, 8), layers_per_block=1,
                    latent_channels=3, num_vq_embeddings=16, vq_embed_dim=3, norm_num_groups=4)
    unet = UNet2DModel(in_channels=6, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=('DownBlock2D', ) * 2, up_block_types=('UpBlock2D', ) * 2, norm_num_groups=4)
    LDMSuperResolutionPipeline(vqvae=vqvae, unet=unet, scheduler=DDIMScheduler()).save_pretrained(str(folder))
    return str(folder)


def test_super_resolve_gt_with_a_local_diffusers_pipeline(tmp_path, variant_data):
    """The diffusers route loads a saved pipeline offline, passes --pipeline-kwargs, and seeds per image so a
    sharded run equals a single run byte for byte."""
    from gtplus_data.image_source import ImageSource
    pipeline = save_tiny_ldm_sr_pipeline(tmp_path / 'ldm_sr')
    common = ['--diffusers-pipeline', pipeline, '--scales', '2', '--pipeline-kwargs', '{num_inference_steps: 2}',
              '--colour-align', 'adain']
    run_cli(['super-resolve-gt', variant_data['gt'], str(tmp_path / 'single'), *common], cwd=tmp_path)
    for rank in (0, 1):
        run_cli(['super-resolve-gt', variant_data['gt'], str(tmp_path / 'sharded'), *common, '--rank', rank,
                 '--world-size', 2], cwd=tmp_path)
    assert not (tmp_path / 'sharded' / 'preview.png').exists()  # shards alone: no figure until the merge
    run_cli(['super-resolve-gt', variant_data['gt'], str(tmp_path / 'sharded'), '--scales', '2', '--merge'],
            cwd=tmp_path)
    gt, single = ImageSource(variant_data['gt']), ImageSource(str(tmp_path / 'single' / 'sr_x2.lmdb'))
    sharded = ImageSource(str(tmp_path / 'sharded' / 'sr_x2.lmdb'))
    assert (tmp_path / 'sharded' / 'preview.png').exists()
    assert single.keys == sharded.keys == gt.keys
    for key in gt.keys:
        assert single.read(key).shape == gt.read(key).shape
        assert np.array_equal(single.read(key), sharded.read(key))
        # The untrained pipeline really ran: its output is not the GT (a no-op enhancer would give back ~the GT).
        assert np.abs(single.read(key) - gt.read(key)).mean() > 0.01


@pytest.mark.parametrize('kwargs, message', [('[1, 2]', 'must be a YAML mapping'), ('{a: [1', 'not valid YAML')])
def test_super_resolve_gt_pipeline_errors(tmp_path, variant_data, kwargs, message):
    pipeline = save_tiny_ldm_sr_pipeline(tmp_path / 'ldm_sr')
    proc = run_cli(['super-resolve-gt', variant_data['gt'], str(tmp_path / 'v'), '--diffusers-pipeline', pipeline,
                    '--pipeline-kwargs', kwargs], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and message in proc.stderr and 'Traceback' not in proc.stderr
    os.remove(os.path.join(pipeline, 'model_index.json'))
    proc = run_cli(['super-resolve-gt', variant_data['gt'], str(tmp_path / 'v'), '--diffusers-pipeline', pipeline],
                   cwd=tmp_path, check=False)
    assert proc.returncode == 2 and 'complete diffusers pipeline' in proc.stderr and 'Traceback' not in proc.stderr
    assert not (tmp_path / 'v').exists()
