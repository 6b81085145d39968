"""Bad input across the verbs: exit code 2, one line naming the offending path, key or flag, no traceback, and no
output left behind that a rerun would trust. New verbs add their rows to BAD_INPUTS.

Rows run in process (``gtplus_models.cli.main``), which keeps the table fast; a row marked ``subprocess`` runs the
installed ``gtplus`` instead (a fault that could kill the interpreter, such as a truncated LMDB, must not take
pytest down with it).
"""
import os
import shutil
from collections import namedtuple

import cv2
import numpy as np
import pytest
import torch
import yaml
from conftest import (
    TINY_MSRRESNET,
    console_to_current_stderr,
    make_paired_pngs,
    run_cli,
    sr_train_options,
    write_yaml,
)
from data_helpers import LMDB_PAGE, corrupt_lmdb_root, noise_lmdb, truncate_lmdb

TINY_ORNET = {'type': 'ORNet', 'width': 4, 'enc_blk_nums': [1, 1], 'middle_blk_num': 1, 'dec_blk_nums': [1, 1]}
TINY_CFMG = {'type': 'CFMG', 'num_sources': 3, 'width': 4, 'num_levels': 2, 'hidden': 8}

Row = namedtuple('Row', 'id argv names setup subprocess', defaults=(None, False))


def save_network(folder, name, network_opt):
    from basicsr.archs import build_network
    torch.manual_seed(0)
    net = build_network(dict(network_opt))
    torch.save({'params': net.state_dict()}, os.path.join(folder, f'{name}.pth'))
    with open(os.path.join(folder, f'{name}.yml'), 'w') as f:
        yaml.safe_dump(dict(network_opt), f)


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    """Files shared by the rows, none of which a row may change: inputs good and bad, weights good and bad."""
    root = tmp_path_factory.mktemp('world')
    paths = {name: str(root / name) for name in ('empty', 'images', 'corrupt')}
    for name in ('empty', 'images', 'corrupt'):
        os.makedirs(paths[name])
    (root / 'empty' / 'notes.txt').write_text('not an image')  # a folder with files, none of them images
    rng = np.random.RandomState(0)
    for i in range(2):
        cv2.imwrite(os.path.join(paths['images'], f'img{i}.png'), rng.randint(0, 256, (24, 24, 3), dtype=np.uint8))
    cv2.imwrite(os.path.join(paths['corrupt'], 'good.png'), rng.randint(0, 256, (24, 24, 3), dtype=np.uint8))
    (root / 'corrupt' / 'bad.png').write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(100))
    paths['a_file'] = str(root / 'a_file.txt')
    (root / 'a_file.txt').write_text('an existing regular file')
    paths['garbage_pth'] = str(root / 'garbage.pth')
    (root / 'garbage.pth').write_bytes(rng.bytes(300))
    paths['empty_pth'] = str(root / 'empty.pth')
    (root / 'empty.pth').write_bytes(b'')
    paths['list_pth'] = str(root / 'list.pth')
    torch.save([1, 2, 3], paths['list_pth'])
    paths['tensor_pth'] = str(root / 'tensor.pth')
    torch.save(torch.zeros(3), paths['tensor_pth'])
    save_network(root, 'ornet', TINY_ORNET)
    save_network(root, 'cfmg', TINY_CFMG)
    save_network(root, 'msrresnet', TINY_MSRRESNET)
    for name in ('ornet', 'cfmg', 'msrresnet'):
        paths[f'{name}_yml'], paths[f'{name}_pth'] = str(root / f'{name}.yml'), str(root / f'{name}.pth')
    gt_dir, lq_dir = make_paired_pngs(str(root / 'pairs'), num=2, gt_size=32, scale=4)
    paths.update(gt=gt_dir, lq=lq_dir)
    return paths


def train_yaml(mutate):
    """A setup that writes a tiny SRModel option file changed by ``mutate(opt, world)``; ``{opt}`` in argv."""
    def setup(tmp_path, world):
        opt = sr_train_options(world['gt'], world['lq'], dict(TINY_MSRRESNET), total_iter=2, gt_size=16)
        mutate(opt, world)
        return {'opt': write_yaml(tmp_path / 'bad.yml', opt)}
    return setup


def set_in(path, value):
    """A ``mutate`` that sets ``opt[a][b]... = value`` for ``path`` 'a.b...'."""
    def mutate(opt, world):
        *parents, leaf = path.split('.')
        node = opt
        for key in parents:
            node = node[key]
        node[leaf] = value
    return mutate


def lq_missing_one(tmp_path, world):
    """A copy of the pair roots whose LQ lacks image 0001."""
    import shutil
    gt, lq = shutil.copytree(world['gt'], tmp_path / 'GT'), shutil.copytree(world['lq'], tmp_path / 'LQ')
    os.remove(os.path.join(lq, '0001.png'))
    return {'gt': str(gt), 'lq': str(lq)}


def lmdb_pair_missing_one(tmp_path, world):
    """LMDB roots of the pair whose LQ lacks key 0001, with an option file that reads them."""
    from gtplus_data.make_lmdb import folder_to_lmdb
    roots = lq_missing_one(tmp_path, world)
    folder_to_lmdb(roots['gt'], str(tmp_path / 'gt.lmdb'))
    folder_to_lmdb(roots['lq'], str(tmp_path / 'lq.lmdb'))
    opt = sr_train_options(str(tmp_path / 'gt.lmdb'), str(tmp_path / 'lq.lmdb'), dict(TINY_MSRRESNET), total_iter=2)
    for phase in ('train', 'val'):
        opt['datasets'][phase]['io_backend'] = {'type': 'lmdb'}
    return {'opt': write_yaml(tmp_path / 'bad.yml', opt)}


def add_ghost_key(lmdb_path):
    """List a key in meta_info.txt that the data does not hold."""
    with open(os.path.join(lmdb_path, 'meta_info.txt'), 'a') as f:
        f.write('ghost.png (32,32,3) 1\n')


def train_lmdb_pair(change):
    """A setup: the pair as LMDBs under {out}/.. ({gt_lmdb} changed by ``change(path)``) and a train file reading
    them."""
    def setup(tmp_path, world):
        from gtplus_data.make_lmdb import paired_folders_to_lmdb
        prefix = str(tmp_path / 'out' / '..' / 'pair')
        paired_folders_to_lmdb(world['lq'], world['gt'], prefix, scale=4)
        gt, lq = prefix + '_gt.lmdb', prefix + '_lq.lmdb'
        change(gt)
        opt = sr_train_options(gt, lq, dict(TINY_MSRRESNET), total_iter=2)
        for phase in ('train', 'val'):
            opt['datasets'][phase]['io_backend'] = {'type': 'lmdb'}
        return {'opt': write_yaml(tmp_path / 'bad.yml', opt)}
    return setup


def with_roots(roots_setup, mutate=lambda opt, world: None):
    """A train_yaml setup on the roots ``roots_setup(tmp_path, world)`` returns."""
    def setup(tmp_path, world):
        roots = roots_setup(tmp_path, world)
        return dict(roots, **train_yaml(mutate)(tmp_path, dict(world, **roots)))
    return setup


def meta_info_listing(names):
    def mutate(opt, world):
        path = os.path.join(world['out'], '..', 'meta_info.txt')
        with open(path, 'w') as f:
            f.write(''.join(f'{name}\n' for name in names))
        opt['datasets']['train']['meta_info_file'] = path
    return mutate


def yaml_for_test(mutate):
    """A setup writing a tiny test option file (basicsr's test pipeline) changed by ``mutate(opt, world)``."""
    def setup(tmp_path, world):
        opt = sr_train_options(world['gt'], world['lq'], dict(TINY_MSRRESNET))
        opt = {'name': 'toy_test', 'model_type': 'SRModel', 'scale': 4, 'num_gpu': 0,
               'datasets': {'test_1': opt['datasets']['val']}, 'network_g': opt['network_g'],
               'path': {'pretrain_network_g': world['msrresnet_pth'], 'strict_load_g': True},
               'val': {'save_img': False}}
        mutate(opt, world)
        return {'opt': write_yaml(tmp_path / 'bad.yml', opt)}
    return setup


TRAIN = ['train', '-opt', '{opt}']


def noise_lmdb_setup(cut=None, change=None):
    """A setup: a complete LMDB of noise images ({lmdb}), then data.mdb cut to ``cut`` bytes or ``change(path)``."""
    def setup(tmp_path, world):
        path = noise_lmdb(tmp_path / 'noise.lmdb', num=3)
        if cut is not None:
            truncate_lmdb(path, cut)
        if change is not None:
            change(path)
        return {'lmdb': path}
    return setup


def partial_lmdb(change=None):
    """A setup: make-lmdb's partial output ({partial}, no meta_info) of a copy of the world's images ({inputs}), as a
    kill leaves it, then ``change(inputs, partial)``."""
    def setup(tmp_path, world):
        from gtplus_data.image_source import ImageSource
        from gtplus_data.lmdb_writer import LmdbWriter
        inputs = shutil.copytree(world['images'], str(tmp_path / 'inputs'))
        partial = str(tmp_path / 'partial.lmdb')
        source = ImageSource(inputs)
        with LmdbWriter(partial, fingerprint=source.fingerprint) as writer:
            for key in source.keys:
                writer.put_image(key, source.read(key))
        if change is not None:
            change(inputs, partial)
        return {'inputs': inputs, 'partial': partial}
    return setup


def edit_img1(inputs, partial):
    path = os.path.join(inputs, 'img1.png')
    cv2.imwrite(path, np.full((24, 24, 3), 7, np.uint8))
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10 ** 9))  # a later edit, surely


def stale_variant(tmp_path, world):
    """{sr}: a folder where detail_usm.lmdb is complete, but made from another GT (a rerun would skip it)."""
    from gtplus_data.lmdb_writer import write_images
    write_images(str(tmp_path / 'sr' / 'detail_usm.lmdb'), [('other', np.zeros((24, 24, 3), np.uint8))])
    return {'sr': str(tmp_path / 'sr')}


REFINE = ['refine', '{images}', '{out}/r', '--ornet-opt', '{ornet_yml}', '--ornet-weights', '{ornet_pth}']

RESTORER = REFINE + ['--restorer-opt', '{msrresnet_yml}', '--restorer-weights']
ENHANCE = ['enhance-gt', '{images}', '{out}/e.lmdb', '--variants', '{images}', '{images}', '--cfmg-opt', '{cfmg_yml}',
           '--cfmg-weights']
SUPER_RESOLVE = ['super-resolve-gt', '{images}', '{out}/sr', '--enhancer-opt', '{msrresnet_yml}', '--enhancer-weights']
# (row id prefix, argv up to the weights file, the flag that names it); each route meets every bad file below.
WEIGHTS_ROUTES = [('refine-ornet', REFINE[:-1], '--ornet-weights'), ('refine-restorer', RESTORER, '--restorer-weights'),
                  ('enhance-gt-cfmg', ENHANCE, '--cfmg-weights'),
                  ('super-resolve-gt-enhancer', SUPER_RESOLVE, '--enhancer-weights')]
BAD_WEIGHTS = {'garbage': 'is not a PyTorch checkpoint', 'empty': 'is an empty file',
               'list': 'holds a list, not a state dict', 'tensor': 'holds a Tensor, not a state dict'}


def code_running_pickle(tmp_path, world):
    """A setup: ``{evil}``, a pickle whose loading would run a shell command."""
    from data_helpers import RunsCode
    path = str(tmp_path / 'evil.pth')
    torch.save({'w': RunsCode(tmp_path / 'ran')}, path)
    return {'evil': path}


def synth_yaml(content):
    """A setup writing ``content`` as ``{synth}``, a synthesizer YAML."""
    def setup(tmp_path, world):
        return {'synth': write_yaml(tmp_path / 'synth.yml', content)}
    return setup


def diffusers_folder_without_weights(tmp_path, world):
    """A setup: ``{synth}``, a DiffusionRefinedSynthesizer YAML whose UNet folder ``{ddpm}`` holds a config.json and
    no weights (an interrupted copy of a released LQ-DDPM folder)."""
    import json
    folder = tmp_path / 'ddpm' / 'unet'
    folder.mkdir(parents=True)
    (folder / 'config.json').write_text(json.dumps({'_class_name': 'UNet2DModel'}))
    block = {'type': 'DiffusionRefinedSynthesizer', 'scale': 4, 'unet': {'pretrained_path': str(tmp_path / 'ddpm')}}
    return {'synth': write_yaml(tmp_path / 'synth.yml', {'network_synth': block}), 'ddpm': str(tmp_path / 'ddpm')}


def pair_lmdbs(lq_keys, gt_keys, gt_size=32):
    """A setup writing ``{pairs}_lq.lmdb`` (8x8 images) and ``{pairs}_gt.lmdb`` (gt_size² images)."""
    def setup(tmp_path, world):
        from gtplus_data.lmdb_writer import write_images
        for side, keys, size in (('lq', lq_keys, 8), ('gt', gt_keys, gt_size)):
            write_images(str(tmp_path / f'set_{side}.lmdb'), [(k, np.full((size, size, 3), 0.5)) for k in keys])
        return {'pairs': str(tmp_path / 'set')}
    return setup


BICUBIC_SYNTH = synth_yaml({'network_synth': {'type': 'BicubicSynthesizer', 'scale': 2}})
SYNTHESIZE = ['synthesize', '{images}', '{out}/p', '--synth-opt', '{synth}', '--seed', '0']
TINY_VQVAE2 = {'type': 'VQVAE2', 'channel': 8, 'n_res_block': 1, 'n_res_channel': 4, 'embed_dim': 4, 'n_embed': 8}


def synthesized_sr(synth=None, gt_size=16, **path):
    """A train_yaml setup for SynthesizedSRModel: HR-only training data, ``synth`` (default: the undertrained
    synthesizer) and ``path`` entries, templates filled from the world and ``{out}``."""
    def mutate(opt, world):
        opt['model_type'] = 'SynthesizedSRModel'
        train = opt['datasets']['train']
        for key in ('dataroot_lq', 'filename_tmpl'):
            train.pop(key)
        train.update(type='GTPlusSingleHRDataset', gt_size=gt_size)
        opt['network_synth'] = synth or {'type': 'UndertrainedReconstructionSynthesizer', 'scale': 4,
                                         'reconstruction': dict(TINY_VQVAE2)}
        opt['path'].update({key: value.format(**world) for key, value in path.items()})
    return train_yaml(mutate)


TINY_IQPIR = {'type': 'IQPIRNet', 'img_size': 16, 'nf': 32, 'ch_mult': [1, 2], 'res_blocks': 1,
              'attn_resolutions': [8], 'codebook_size': 7, 'emb_dim': 12, 'dim_embd': 24, 'n_head': 2, 'n_layers': 1}
RESTORE = ['restore', '{images}', '{out}/r', '--opt', '{iqpir_yml}', '--weights', '{iqpir_pth}']


def iqpir_files(tmp_path, world):
    """A setup: a tiny IQPIRNet ({iqpir_yml}, {iqpir_pth}) and an option file without network_g ({no_network_g})."""
    from gtplus_arch.iqpir_arch import IQPIRNet
    # Built directly: basicsr's build_network would log to the console of an earlier test, now closed.
    torch.save({'params': IQPIRNet(**{k: v for k, v in TINY_IQPIR.items() if k != 'type'}).state_dict()},
               tmp_path / 'iqpir.pth')
    return {'iqpir_yml': write_yaml(tmp_path / 'iqpir.yml', TINY_IQPIR), 'iqpir_pth': str(tmp_path / 'iqpir.pth'),
            'no_network_g': write_yaml(tmp_path / 'no_network_g.yml', {'name': 'x', 'network_d': dict(TINY_IQPIR)})}


# Row(id, argv, what stderr must name, setup=None, subprocess=False). Placeholders: the world's paths, {out} (a
# fresh output folder that must stay empty) and what a row's setup(tmp_path, world) returns.
BAD_INPUTS = [
    Row('make-lmdb-empty-folder', ['make-lmdb', '{empty}', '{out}/x.lmdb'], ['{empty}', 'holds no images']),
    Row('make-lmdb-pair-empty-lq', ['make-lmdb', '--lq', '{empty}', '--gt', '{empty}', '{out}/p'],
        ['{empty}', 'holds no images']),
    Row('score-empty-folder', ['score', '{empty}', '--metrics', 'niqe'], ['{empty}', 'holds no images']),
    Row('super-resolve-gt-empty', ['super-resolve-gt', '{empty}', '{out}/sr', '--detail-sweep', 'usm'],
        ['{empty}', 'holds no images']),
    Row('make-enhancer-pairs-empty', ['make-enhancer-pairs', '{empty}', '{out}/pairs'],
        ['{empty}', 'holds no images']),
    Row('refine-empty', ['refine', '{empty}', '{out}/r', '--ornet-opt', '{ornet_yml}', '--ornet-weights',
                         '{ornet_pth}'], ['{empty}', 'holds no images']),
    Row('refine-negative-tile', REFINE + ['--tile', '-16'], ['--tile must be an integer >= 0, got -16']),
    Row('refine-negative-tile-pad', REFINE + ['--tile', '64', '--tile-pad', '-8'],
        ['--tile-pad must be an integer >= 0, got -8']),
    Row('refine-cond-not-a-number', REFINE + ['--cond', 'abc'], ["--cond must be numbers in [0,1], got 'abc'"]),
    # train: option values and their types
    Row('train-total-iter-zero', ['train', '-opt', '{opt}'], ['train.total_iter must be >= 1, got 0'],
        train_yaml(set_in('train.total_iter', 0))),
    Row('train-lr-not-a-number', ['train', '-opt', '{opt}'], ["train.optim_g.lr must be a number, got 'fast'"],
        train_yaml(set_in('train.optim_g.lr', 'fast'))),
    Row('train-missing-dataroot', ['train', '-opt', '{opt}'], ['datasets.train.dataroot_gt', '{out}/nope'],
        train_yaml(lambda opt, w: opt['datasets']['train'].update(dataroot_gt=w['out'] + '/nope'))),
    Row('train-unknown-arch', ['train', '-opt', '{opt}'], ['network_g.type', 'MSRResNett'],
        train_yaml(set_in('network_g.type', 'MSRResNett'))),
    Row('train-batch-size-zero', ['train', '-opt', '{opt}'], ['datasets.train.batch_size_per_gpu must be >= 1'],
        train_yaml(set_in('datasets.train.batch_size_per_gpu', 0))),
    Row('train-manual-seed-string', TRAIN, ["manual_seed must be an integer, got 'x'"],
        train_yaml(set_in('manual_seed', 'x'))),
    Row('train-val-freq-zero', TRAIN, ['val.val_freq must be >= 1, got 0'], train_yaml(set_in('val.val_freq', 0))),
    Row('train-unknown-scheduler', TRAIN, ["train.scheduler.type: 'StepLR' is not one of"],
        train_yaml(set_in('train.scheduler.type', 'StepLR'))),
    # train: networks and losses against their constructors
    Row('train-network-unknown-argument', TRAIN, ["network_g.num_feats: MSRResNet takes no argument 'num_feats'"],
        train_yaml(set_in('network_g.num_feats', 8))),
    Row('train-network-quoted-number', TRAIN, ["network_g.num_feat must be a number", "got the string '8'"],
        train_yaml(set_in('network_g.num_feat', '8'))),
    Row('train-loss-unknown-argument', TRAIN, ["train.pixel_opt.weight: L1Loss takes no argument 'weight'"],
        train_yaml(set_in('train.pixel_opt.weight', 1.0))),
    Row('train-network-scale-mismatch', TRAIN, ['network_g (MSRResNet) upscales by 2 but scale is 4'],
        train_yaml(set_in('network_g.upscale', 2))),
    # train: the data against the options
    Row('train-data-scale-mismatch', TRAIN, ['GT 0000 is 32x32 but its LQ is 8x8', 'scale is 2'],
        train_yaml(lambda opt, w: (opt.update(scale=2), opt['network_g'].update(upscale=2)))),
    Row('train-gt-size-larger-than-images', TRAIN, ['datasets.train.gt_size is 64', '32x32'],
        train_yaml(set_in('datasets.train.gt_size', 64))),
    Row('train-lq-gt-keys-differ', TRAIN, ['only in datasets.train.dataroot_gt', '0001', '{gt}'],
        with_roots(lq_missing_one)),
    Row('train-lmdb-keys-differ', TRAIN, ['only in datasets.train.dataroot_gt', '0001', 'gt.lmdb'],
        lmdb_pair_missing_one),
    Row('train-meta-info-lists-a-missing-image', TRAIN, ['lists nope.png', 'dataroot_gt'],
        train_yaml(meta_info_listing(['0000.png', 'nope.png']))),
    Row('train-lmdb-backend-on-folders', TRAIN, ['building datasets.train (PairedImageDataset', 'lmdb'],
        train_yaml(set_in('datasets.train.io_backend', {'type': 'lmdb'}))),
    Row('train-truncated-lmdb', TRAIN, ['pair_gt.lmdb/data.mdb is truncated'],
        train_lmdb_pair(lambda gt: truncate_lmdb(gt, lambda full: full // 2)), subprocess=True),
    Row('train-meta-info-key-not-in-lmdb', TRAIN, ['datasets.train.dataroot_gt', 'the data does not hold: ghost'],
        train_lmdb_pair(add_ghost_key)),
    # test
    Row('test-missing-dataroot', ['test', '-opt', '{opt}'], ['datasets.test_1.dataroot_lq', '{out}/nope'],
        yaml_for_test(lambda opt, w: opt['datasets']['test_1'].update(dataroot_lq=w['out'] + '/nope'))),
    Row('test-network-unknown-argument', ['test', '-opt', '{opt}'], ["MSRResNet takes no argument 'blocks'"],
        yaml_for_test(set_in('network_g.blocks', 2))),
    Row('test-missing-weights', ['test', '-opt', '{opt}'], ['path.pretrain_network_g', '{out}/none.pth'],
        yaml_for_test(lambda opt, w: opt['path'].update(pretrain_network_g=w['out'] + '/none.pth'))),
    # enhance-gt
    Row('enhance-gt-empty', ['enhance-gt', '{empty}', '{out}/e', '--variants', '{images}', '{images}',
                             '--cfmg-opt', '{cfmg_yml}', '--cfmg-weights', '{cfmg_pth}'],
        ['{empty}', 'holds no images']),
    Row('enhance-gt-variant-count', ['enhance-gt', '{images}', '{out}/e', '--variants', '{images}',
                                     '--cfmg-opt', '{cfmg_yml}', '--cfmg-weights', '{cfmg_pth}'],
        ['the CFMG mixes the GT and 2 variants, got 1 --variants']),
    Row('enhance-gt-missing-variant', ['enhance-gt', '{images}', '{out}/e', '--variants', '{images}',
                                       '{out}/nope', '--cfmg-opt', '{cfmg_yml}', '--cfmg-weights', '{cfmg_pth}'],
        ['{out}/nope']),
    Row('enhance-gt-missing-weights', ['enhance-gt', '{images}', '{out}/e', '--variants', '{images}', '{images}',
                                       '--cfmg-opt', '{cfmg_yml}', '--cfmg-weights', '{out}/none.pth'],
        ['--cfmg-weights', '{out}/none.pth']),
    Row('enhance-gt-no-cuda', ['enhance-gt', '{images}', '{out}/e', '--variants', '{images}', '{images}',
                               '--cfmg-opt', '{cfmg_yml}', '--cfmg-weights', '{cfmg_pth}', '--device', 'cuda:3'],
        ['--device cuda:3: this machine has']),
    # score
    Row('score-unknown-metric', ['score', '{images}', '--metrics', 'nosuch'], ["unknown pyiqa metric 'nosuch'"]),
    Row('score-flush-every-zero', ['score', '{images}', '--metrics', 'piqe', '--flush-every', '0'],
        ['--flush-every must be an integer >= 1, got 0']),
    Row('score-weights-not-name-path', ['score', '{images}', '--metrics', 'piqe', '--weights', 'musiq'],
        ["--weights expects NAME=PATH, got 'musiq'"]),
    Row('score-missing-input', ['score', '{out}/nope', '--metrics', 'piqe'], ['{out}/nope']),
    Row('score-out-is-a-folder', ['score', '{images}', '--metrics', 'piqe', '--out', '{out}'],
        ['--out {out} is a folder']),
    Row('score-corrupt-image', ['score', '{corrupt}', '--metrics', 'piqe', '--out', '{out}/s.json'],
        ['{corrupt}/bad.png']),
    Row('score-no-cuda', ['score', '{images}', '--metrics', 'piqe', '--device', 'cuda'],
        ['--device cuda: this machine has']),
    # make-lmdb
    Row('make-lmdb-missing-input', ['make-lmdb', '{out}/nope', '{out}/x.lmdb'], ['{out}/nope']),
    Row('make-lmdb-corrupt-image', ['make-lmdb', '{corrupt}', '{out}/x.lmdb'],
        ['1 bad image(s) in {corrupt}, nothing written', '{corrupt}/bad.png']),
    Row('make-lmdb-pair-wrong-scale', ['make-lmdb', '--lq', '{lq}', '--gt', '{gt}', '--scale', '2', '{out}/p'],
        ['GT size is not 2 x LQ size', '0000 (LQ 8x8, GT 32x32)']),
    Row('make-lmdb-pair-keys-differ', ['make-lmdb', '--lq', '{images}', '--gt', '{gt}', '{out}/p'],
        ['LQ and GT keys differ, nothing written', 'img0']),
    Row('make-lmdb-output-is-a-file', ['make-lmdb', '{images}', '{a_file}'], ['File exists: {a_file}']),
    Row('make-lmdb-lq-without-gt', ['make-lmdb', '--lq', '{lq}', '{out}/p'], ['paired mode needs --lq LQ_DIR --gt']),
    # super-resolve-gt
    Row('super-resolve-gt-missing-weights', ['super-resolve-gt', '{images}', '{out}/sr', '--enhancer-opt',
                                             '{msrresnet_yml}', '--enhancer-weights', '{out}/none.pth'],
        ['--enhancer-weights', '{out}/none.pth']),
    Row('super-resolve-gt-scales-not-integers', ['super-resolve-gt', '{images}', '{out}/sr', '--detail-sweep', 'usm',
                                                 '--scales', '2,x'], ["--scales must be integers", "'2,x'"]),
    Row('super-resolve-gt-unknown-detail-mode', ['super-resolve-gt', '{images}', '{out}/sr', '--detail-sweep',
                                                 'nosuch'], ["--detail-sweep item 'nosuch'"]),
    Row('super-resolve-gt-kwargs-without-pipeline', ['super-resolve-gt', '{images}', '{out}/sr', '--detail-sweep',
                                                     'usm', '--pipeline-kwargs', '{{steps: 1}}'],
        ['--pipeline-kwargs only applies with --diffusers-pipeline']),
    Row('super-resolve-gt-negative-tile', ['super-resolve-gt', '{images}', '{out}/sr', '--enhancer-opt',
                                           '{msrresnet_yml}', '--enhancer-weights', '{msrresnet_pth}', '--tile', '-4'],
        ['--tile must be an integer >= 0, got -4']),
    Row('super-resolve-gt-missing-pipeline', ['super-resolve-gt', '{images}', '{out}/sr', '--diffusers-pipeline',
                                              '{out}/nope'], ['--diffusers-pipeline', '{out}/nope']),
    # make-enhancer-pairs
    Row('make-enhancer-pairs-blur-reversed', ['make-enhancer-pairs', '{images}', '{out}/pairs', '--blur', '2,1'],
        ['--blur must be LOW,HIGH with LOW <= HIGH']),
    Row('make-enhancer-pairs-scale-zero', ['make-enhancer-pairs', '{images}', '{out}/pairs', '--scales', '0'],
        ['--scales must be positive integers, got [0]']),
    Row('make-enhancer-pairs-jpeg-range', ['make-enhancer-pairs', '{images}', '{out}/pairs', '--jpeg', '10,200'],
        ['--jpeg must be LOW,HIGH']),
    Row('make-enhancer-pairs-noise-text', ['make-enhancer-pairs', '{images}', '{out}/pairs', '--noise', 'abc'],
        ["--noise must be numbers separated by commas, got 'abc'"]),
    # sample-data, quickstart
    Row('sample-data-output-is-a-file', ['sample-data', '{a_file}'], ['File exists: {a_file}']),
    Row('quickstart-iters-zero', ['quickstart', '{out}/qs', '--iters', '0'], ['--iters must be an integer >= 1']),
    Row('quickstart-size-too-small', ['quickstart', '{out}/qs', '--size', '8'], ['--size must be at least 128']),
    Row('quickstart-cond-out-of-range', ['quickstart', '{out}/qs', '--cond', '2'], ['--cond must be in [0,1]']),
    Row('quickstart-undertrained-size-not-multiple-of-8', ['quickstart', '{out}/qs', '--pipeline', 'undertrained',
                                                           '--size', '132'], ['--size must be a multiple of 8']),
    Row('quickstart-undertrained-holdout-unknown',
        ['quickstart', '{out}/qs', '--pipeline', 'undertrained', '--holdout', 'nosuchphoto'],
        ['--holdout names no photo: nosuchphoto']),
    # refine: flags
    Row('refine-restorer-without-weights', REFINE + ['--restorer-opt', '{msrresnet_yml}'],
        ['--restorer-opt and --restorer-weights go together']),
    Row('refine-cond-out-of-range', REFINE + ['--cond', '1.5'], ["--cond must be numbers in [0,1], got '1.5'"]),
    Row('refine-missing-ornet-opt', ['refine', '{images}', '{out}/r', '--ornet-opt', '{out}/none.yml',
                                     '--ornet-weights', '{ornet_pth}'], ['--ornet-opt', '{out}/none.yml']),
    Row('refine-ornet-opt-not-a-mapping', ['refine', '{images}', '{out}/r', '--ornet-opt', '{a_file}',
                                           '--ornet-weights', '{ornet_pth}'],
        ['--ornet-opt: {a_file} must hold a network mapping']),
    Row('refine-no-cuda', REFINE + ['--device', 'cuda'], ['--device cuda: this machine has']),
    Row('refine-device-not-a-device', REFINE + ['--device', 'gpu'], ["--device must be 'cpu', 'cuda' or 'cuda:N'"]),
    # weights and refine
    *[Row(f'{route}-{kind}-weights', argv + [f'{{{kind}_pth}}'], [f'{flag} ({{{kind}_pth}}) {says}'])
      for route, argv, flag in WEIGHTS_ROUTES for kind, says in BAD_WEIGHTS.items()],
    Row('refine-code-running-pickle', REFINE[:-1] + ['{evil}'],
        ['--ornet-weights ({evil}) is refused by torch.load(weights_only=True)'], code_running_pickle),
    Row('refine-restorer-weights-of-ornet', RESTORER + ['{ornet_pth}'],
        ["--restorer-weights ({ornet_pth}) holds 100 tensors, none of which match MSRResNet's 14"]),
    Row('enhance-gt-cfmg-weights-of-ornet', ENHANCE + ['{ornet_pth}'], ['--cfmg-weights ({ornet_pth}) holds 100 '
                                                                        "tensors, 59 of which match CFMG's 64"]),
    Row('super-resolve-gt-enhancer-weights-of-cfmg', SUPER_RESOLVE + ['{cfmg_pth}'],
        ["--enhancer-weights ({cfmg_pth}) holds 64 tensors, none of which match MSRResNet's 14"]),
    Row('refine-ornet-opt-builds-cfmg', ['refine', '{images}', '{out}/r', '--ornet-opt', '{cfmg_yml}',
                                         '--ornet-weights', '{cfmg_pth}'], ['--ornet-opt ({cfmg_yml}) builds CFMG, '
                                                                            'not ORNet']),
    Row('refine-ornet-opt-is-a-basicsr-option-file', ['refine', '{images}', '{out}/r', '--ornet-opt', '{opt}',
                                                      '--ornet-weights', '{ornet_pth}'],
        ['--ornet-opt ({opt}) builds MSRResNet, not ORNet'], train_yaml(lambda opt, world: None)),
    Row('enhance-gt-cfmg-opt-builds-ornet', ENHANCE[:-2] + ['{ornet_yml}', '--cfmg-weights', '{ornet_pth}'],
        ['--cfmg-opt ({ornet_yml}) builds ORNet, not CFMG']),
    Row('refine-corrupt-input', ['refine', '{corrupt}'] + REFINE[2:], ['1 unreadable image(s) in {corrupt}, '
                                                                       'nothing refined', '{corrupt}/bad.png']),
    Row('refine-output-is-a-file', ['refine', '{images}', '{a_file}'] + REFINE[3:],
        ['OUT_DIR {a_file} is an existing file, not a folder']),
    Row('refine-output-under-a-file', ['refine', '{images}', '{a_file}/r'] + REFINE[3:],
        ['OUT_DIR {a_file}/r lies under {a_file}, which is an existing file']),
    Row('refine-restorer-weights-without-opt', REFINE + ['--restorer-weights', '{msrresnet_pth}'],
        ['--restorer-weights needs --restorer-opt']),
    Row('train-pretrain-garbage', ['train', '-opt', '{opt}'],
        ['path.pretrain_network_g ({garbage_pth}) is not a PyTorch checkpoint'],
        train_yaml(lambda opt, world: opt['path'].update(pretrain_network_g=world['garbage_pth']))),
    Row('train-pretrain-of-another-network', ['train', '-opt', '{opt}'],
        ["path.pretrain_network_g ({ornet_pth}) holds 100 tensors, none of which match MSRResNet's 14"],
        train_yaml(lambda opt, world: opt['path'].update(pretrain_network_g=world['ornet_pth']))),
    # LMDB faults and resume
    Row('score-truncated-lmdb', ['score', '{lmdb}', '--metrics', 'niqe'], ['{lmdb}/data.mdb is truncated'],
        noise_lmdb_setup(cut=lambda full: full // 2), subprocess=True),
    Row('refine-truncated-lmdb', ['refine', '{lmdb}', '{out}/r', '--ornet-opt', '{ornet_yml}', '--ornet-weights',
                                  '{ornet_pth}'], ['{lmdb}/data.mdb is truncated: 4096 bytes'],
        noise_lmdb_setup(cut=LMDB_PAGE), subprocess=True),
    Row('make-lmdb-truncated-lmdb', ['make-lmdb', '{lmdb}', '{out}/x.lmdb'], ['{lmdb}/data.mdb is truncated'],
        noise_lmdb_setup(cut=lambda full: full - LMDB_PAGE), subprocess=True),
    Row('super-resolve-gt-truncated-lmdb', ['super-resolve-gt', '{lmdb}', '{out}/sr', '--detail-sweep', 'usm'],
        ['{lmdb}/data.mdb is truncated: 0 bytes'], noise_lmdb_setup(cut=0), subprocess=True),
    Row('enhance-gt-truncated-lmdb', ['enhance-gt', '{lmdb}', '{out}/e.lmdb', '--variants', '{images}', '{images}',
                                      '--cfmg-opt', '{cfmg_yml}', '--cfmg-weights', '{cfmg_pth}'],
        ['{lmdb}/data.mdb is truncated'], noise_lmdb_setup(cut=2 * LMDB_PAGE + 100), subprocess=True),
    Row('make-lmdb-resume-truncated-output', ['make-lmdb', '{inputs}', '{partial}'],
        ['{partial}/data.mdb is truncated'],
        partial_lmdb(lambda inputs, partial: truncate_lmdb(partial, 2 * LMDB_PAGE + 100)), subprocess=True),
    Row('make-lmdb-corrupt-lmdb', ['make-lmdb', '{lmdb}', '{out}/x.lmdb'],
        ["cannot read LMDB {lmdb} (key 'k0'): mdb_get: MDB_CORRUPTED"],
        noise_lmdb_setup(change=corrupt_lmdb_root)),
    Row('score-not-an-lmdb', ['score', '{lmdb}', '--metrics', 'niqe'], ['{lmdb}/data.mdb is not an LMDB data file'],
        noise_lmdb_setup(change=lambda path: open(os.path.join(path, 'data.mdb'), 'wb').write(b'text\n' * 2000))),
    Row('make-lmdb-resume-deleted-input', ['make-lmdb', '{inputs}', '{partial}'],
        ['cannot resume {partial}: its inputs changed since it was started (deleted: {inputs}/img0.png)',
         'rerun with --overwrite'], partial_lmdb(lambda inputs, partial: os.remove(os.path.join(inputs, 'img0.png')))),
    Row('make-lmdb-resume-edited-input', ['make-lmdb', '{inputs}', '{partial}'],
        ['{partial}', '(changed: {inputs}/img1.png)', '--overwrite'], partial_lmdb(edit_img1)),
    Row('make-lmdb-resume-other-compress-level', ['make-lmdb', '{inputs}', '{partial}', '--compress-level', '5'],
        ['cannot resume {partial} with --compress-level 5: its partial data was written at level 1',
         'resume with --compress-level 1'], partial_lmdb()),
    Row('make-lmdb-resume-other-encoding', ['make-lmdb', '{inputs}', '{partial}', '--encoding', 'bmp'],
        ["cannot resume {partial} with encoding 'bmp': its partial data is 'png'"], partial_lmdb()),
    Row('super-resolve-gt-complete-variant-of-another-gt',
        ['super-resolve-gt', '{images}', '{sr}', '--detail-sweep', 'usm', 'wiener'],
        ['{sr}/detail_usm.lmdb is complete but was not made from this GT', '--overwrite'], stale_variant),
    # synthesize and degradation-report
    Row('synthesize-missing-synth-opt', ['synthesize', '{images}', '{out}/p', '--synth-opt', '{out}/none.yml',
                                         '--seed', '0'], ['--synth-opt: {out}/none.yml does not exist']),
    Row('synthesize-synth-opt-without-network-synth', SYNTHESIZE,
        ['--synth-opt: {synth} must hold a network mapping with a type (or a network_synth entry)'],
        synth_yaml({'network_g': {'type': 'MSRResNet'}})),
    Row('synthesize-unknown-synth-type', SYNTHESIZE, ['network_synth (NoSuchSynthesizer)', 'NoSuchSynthesizer'],
        synth_yaml({'network_synth': {'type': 'NoSuchSynthesizer'}})),
    Row('synthesize-network-is-not-a-synthesizer', SYNTHESIZE, ["'MSRResNet' is registered", 'not a Synthesizer'],
        synth_yaml({'network_synth': {'type': 'MSRResNet'}})),
    Row('synthesize-weights-without-a-network', SYNTHESIZE + ['--synth-weights', '{msrresnet_pth}'],
        ['--synth-weights ({msrresnet_pth}): BicubicSynthesizer has no weights'], BICUBIC_SYNTH),
    Row('synthesize-empty-hr', ['synthesize', '{empty}'] + SYNTHESIZE[2:], ['{empty}', 'holds no images'],
        BICUBIC_SYNTH),
    Row('synthesize-missing-hr', ['synthesize', '{out}/nope'] + SYNTHESIZE[2:], ['{out}/nope'], BICUBIC_SYNTH),
    Row('synthesize-variants-zero', SYNTHESIZE + ['--variants', '0'], ['--variants must be an integer >= 1, got 0'],
        BICUBIC_SYNTH),
    Row('synthesize-negative-seed', SYNTHESIZE[:-1] + ['-1'], ['--seed must be an integer >= 0, got -1'],
        BICUBIC_SYNTH),
    Row('synthesize-no-cuda', SYNTHESIZE + ['--device', 'cuda'], ['--device cuda: this machine has'], BICUBIC_SYNTH),
    Row('degradation-report-missing-prefix', ['degradation-report', '{out}/nope', '--out', '{out}/r'],
        ['PAIRS_PREFIX {out}/nope', '{out}/nope_lq.lmdb']),
    Row('degradation-report-keys-differ', ['degradation-report', '{pairs}', '--out', '{out}/r'],
        ['PAIRS_PREFIX {pairs}: LQ and GT keys differ', 'b', 'c'], pair_lmdbs(['a', 'b'], ['a', 'c'])),
    Row('degradation-report-not-a-multiple', ['degradation-report', '{pairs}', '--out', '{out}/r'],
        ["PAIRS_PREFIX {pairs}, key 'a': GT 20x20 is not an integer multiple of LQ 8x8"],
        pair_lmdbs(['a'], ['a'], gt_size=20)),
    Row('degradation-report-out-is-a-file', ['degradation-report', '{pairs}', '--out', '{a_file}'],
        ['--out {a_file} is an existing file, not a folder'], pair_lmdbs(['a'], ['a'])),
    Row('degradation-report-clusters-one', ['degradation-report', '{pairs}', '--out', '{out}/r', '--clusters', '1'],
        ['--clusters must be an integer >= 2, got 1'], pair_lmdbs(['a'], ['a'])),
    Row('synthesize-diffusion-unet-folder-missing', SYNTHESIZE,
        ['LQDiffusionUNet pretrained_path /nonexistent/lq_ddpm'],
        synth_yaml({'network_synth': {'type': 'DiffusionRefinedSynthesizer', 'scale': 4,
                                      'unet': {'pretrained_path': '/nonexistent/lq_ddpm'}}})),
    Row('synthesize-diffusion-unet-folder-without-weights', SYNTHESIZE,
        ['LQDiffusionUNet pretrained_path {ddpm}: no weights in {ddpm}/unet'], diffusers_folder_without_weights),
    Row('synthesize-diffusion-unknown-sampler', SYNTHESIZE, ["sampler: unknown type 'NoSuchScheduler'"],
        synth_yaml({'network_synth': {'type': 'DiffusionRefinedSynthesizer', 'scale': 4,
                                      'unet': {'block_out_channels': [8, 16], 'norm_num_groups': 4,
                                               'down_block_types': ['DownBlock2D', 'DownBlock2D'],
                                               'up_block_types': ['UpBlock2D', 'UpBlock2D']},
                                      'sampler': {'type': 'NoSuchScheduler'}}})),
    Row('quickstart-diffusion-size-not-multiple-of-8', ['quickstart', '{out}/qs', '--pipeline', 'diffusion',
                                                        '--size', '132'], ['--size must be a multiple of 8']),
    Row('quickstart-iqpir-size-too-small', ['quickstart', '{out}/qs', '--pipeline', 'iqpir', '--size', '96'],
        ['--size must be a multiple of 8 and at least 128 for the iqpir pipeline, got 96']),
    Row('quickstart-iqpir-holdout-everything',
        ['quickstart', '{out}/qs', '--pipeline', 'iqpir', '--holdout', 'astronaut,chelsea,coffee,hubble_deep_field,'
         'immunohistochemistry,retina,rocket,stereo_motorcycle'], ['--holdout leaves no photo to train on']),
    # synthesizer models
    Row('train-synth-without-snapshot', TRAIN, ['path.pretrain_network_synth is required',
                                                'UndertrainedReconstructionSynthesizer'], synthesized_sr()),
    Row('train-synth-snapshot-missing', TRAIN, ['path.pretrain_network_synth points to {out}/net_g_epoch8.pth'],
        synthesized_sr(pretrain_network_synth='{out}/net_g_epoch8.pth')),
    Row('train-synth-snapshot-of-another-network', TRAIN,
        ["path.pretrain_network_synth ({msrresnet_pth}) holds 14 tensors, none of which match VQVAE2's"],
        synthesized_sr(pretrain_network_synth='{msrresnet_pth}')),
    Row('train-synth-gt-size-not-a-multiple-of-scale', TRAIN,
        ['datasets.train.gt_size is 18, not a multiple of scale 4'],
        synthesized_sr({'type': 'BicubicSynthesizer', 'scale': 4}, gt_size=18)),
    # restore
    Row('restore-empty', ['restore', '{empty}'] + RESTORE[2:], ['{empty}', 'holds no images'], iqpir_files),
    Row('restore-corrupt-input', ['restore', '{corrupt}'] + RESTORE[2:],
        ['1 unreadable image(s) in {corrupt}, nothing restored', '{corrupt}/bad.png'], iqpir_files),
    Row('restore-missing-weights', RESTORE[:-1] + ['{out}/none.pth'], ['--weights points to {out}/none.pth'],
        iqpir_files),
    Row('restore-weights-of-another-network', RESTORE[:-1] + ['{ornet_pth}'],
        ["--weights ({ornet_pth}) holds 100 tensors, none of which match IQPIRNet's"], iqpir_files),
    Row('restore-opt-without-network-g', RESTORE[:4] + ['{no_network_g}'] + RESTORE[5:],
        ['--opt: {no_network_g} must hold a network mapping with a type (or a network_g entry)'], iqpir_files),
    Row('restore-network-takes-no-score', RESTORE[:4] + ['{msrresnet_yml}', '--weights', '{msrresnet_pth}'],
        ['--opt ({msrresnet_yml}) builds MSRResNet, whose forward(x) takes no score'], iqpir_files),
    Row('restore-score-out-of-range', RESTORE + ['--score', '1.5'], ['--score must be numbers in [0,1], got 1.5'],
        iqpir_files),
    Row('restore-score-sweep-not-numbers', RESTORE + ['--score-sweep', '0.3,abc'],
        ["--score-sweep must be numbers separated by commas, got '0.3,abc'"], iqpir_files),
    Row('restore-tile-does-not-fit', RESTORE + ['--tile', '8'],
        ['--tile 8 does not fit IQPIRNet, which takes exactly 16x16 inputs: give --tile 16 (or 0)'], iqpir_files),
]


def fill(argv, values):
    return [arg.format(**values) for arg in argv]


@pytest.mark.parametrize('row', BAD_INPUTS, ids=[row.id for row in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(row, world, tmp_path, monkeypatch, capsys):
    out = tmp_path / 'out'
    out.mkdir()
    values = dict(world, out=str(out))
    world_before = {name: os.path.getmtime(path) for name, path in world.items()}
    if row.setup is not None:
        values.update(row.setup(tmp_path, values))
    monkeypatch.chdir(tmp_path)  # experiments/ of train rows go here, not into the checkout
    argv = fill(row.argv, values)
    if row.subprocess:
        proc = run_cli(argv, cwd=tmp_path, check=False)
        code, stderr = proc.returncode, proc.stderr
    else:
        from gtplus_models.cli import main
        console_to_current_stderr()
        code = main(argv)
        stderr = capsys.readouterr().err
    assert code == 2, stderr
    assert 'Traceback' not in stderr
    for name in row.names:
        assert name.format(**values) in stderr, stderr
    assert os.listdir(out) == []  # nothing a rerun would trust
    models = tmp_path / 'experiments' / 'toy_sr' / 'models'
    assert not models.exists() or os.listdir(models) == []  # train: no checkpoint of an unstarted run
    assert {name: os.path.getmtime(path) for name, path in world.items()} == world_before  # inputs untouched


def test_the_table_covers_every_verb():
    from gtplus_models.cli import discover_commands
    verbs = {row.argv[0] for row in BAD_INPUTS}
    assert set(discover_commands()) <= verbs, set(discover_commands()) - verbs
    assert len(BAD_INPUTS) >= 40
    assert len({row.id for row in BAD_INPUTS}) == len(BAD_INPUTS)
