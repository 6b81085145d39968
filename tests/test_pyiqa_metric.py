"""calculate_pyiqa: basicsr's validation metric through the quality adapter."""
import glob
import os
import re

import numpy as np
import pytest
import torch
from basicsr.metrics import calculate_metric

import gtplus_models  # noqa: F401  (registers calculate_pyiqa)
from conftest import TINY_MSRRESNET, make_paired_pngs, run_cli, sr_train_options, write_yaml
from gtplus_data.sample_photos import load_sample_photo
from gtplus_models import pyiqa_metric
from gtplus_models.quality import create_quality_metric


def bgr_crop(name, size=192):
    return np.ascontiguousarray(load_sample_photo(name)[:size, :size, ::-1])  # HxWx3 uint8 BGR, as tensor2img


def rgb_tensor(bgr):
    return torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1]).astype(np.float32) / 255.).permute(2, 0, 1)[None]


def test_calculate_metric_equals_adapter_and_caches():
    img = bgr_crop('chelsea')
    opt = {'type': 'calculate_pyiqa', 'metric': 'niqe', 'better': 'lower'}
    value = calculate_metric(dict(img=img, img2=bgr_crop('coffee')), opt)  # NR: img2 ignored
    assert isinstance(value, float)
    assert value == pytest.approx(float(create_quality_metric('niqe')(rgb_tensor(img))[0]), abs=1e-6)
    cached = dict(pyiqa_metric._METRICS)
    assert calculate_metric(dict(img=img), opt) == value and pyiqa_metric._METRICS == cached


def test_crop_border():
    img = bgr_crop('astronaut', 200)
    value = calculate_metric(dict(img=img), {'type': 'calculate_pyiqa', 'metric': 'piqe', 'crop_border': 4})
    assert value == pytest.approx(float(create_quality_metric('piqe')(rgb_tensor(img[4:-4, 4:-4]))[0]), abs=1e-6)


def test_full_reference_metric_uses_img2():
    from basicsr.metrics import calculate_psnr
    gt = bgr_crop('coffee', 64)
    noisy = np.clip(gt.astype(np.int16) + np.random.RandomState(0).randint(-8, 9, gt.shape), 0, 255).astype(np.uint8)
    value = calculate_metric(dict(img=noisy, img2=gt), {'type': 'calculate_pyiqa', 'metric': 'psnr'})
    assert value == pytest.approx(calculate_psnr(noisy, gt, 0), abs=0.05)
    with pytest.raises(ValueError, match='full-reference'):
        calculate_metric(dict(img=noisy), {'type': 'calculate_pyiqa', 'metric': 'psnr'})


def test_inside_basicsr_validation(tmp_path):
    """gtplus test with a NIQE validation metric logs the mean adapter NIQE of the images it saves."""
    gt_dir, lq_dir = make_paired_pngs(str(tmp_path / 'data'), num=2, gt_size=128)
    opt = sr_train_options(gt_dir, lq_dir, TINY_MSRRESNET, name='niqe_val')
    opt['datasets'] = {'test_1': opt['datasets']['val']}
    opt['val'] = {'save_img': True, 'metrics': {'niqe': {'type': 'calculate_pyiqa', 'metric': 'niqe',
                                                         'better': 'lower'}}}
    for key in ('train', 'logger'):
        opt.pop(key)
    run_cli(['test', '-opt', write_yaml(tmp_path / 'test.yml', opt)], cwd=tmp_path)
    with open(glob.glob(str(tmp_path / 'results' / 'niqe_val' / 'test_*.log'))[0]) as f:
        logged = float(re.search(r'# niqe: ([0-9.]+)', f.read()).group(1))
    import cv2
    saved = sorted(glob.glob(str(tmp_path / 'results' / 'niqe_val' / 'visualization' / 'toy_val' / '*.png')))
    assert len(saved) == 2
    niqe = create_quality_metric('niqe')
    expected = np.mean([float(niqe(rgb_tensor(cv2.imread(p)))[0]) for p in saved])
    assert logged == pytest.approx(expected, abs=1e-4)
    assert os.path.isdir(tmp_path / 'results' / 'niqe_val')
