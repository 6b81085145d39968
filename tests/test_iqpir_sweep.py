"""The mechanism of IQPIR end to end on tiny networks, against its control.

A GT set holds each image at three qualities (full contrast, and washed out to 0.7 and 0.4 of it, as hazy or
flat GT are) with scores from three ranges that cover every bin of the sweep; the LQ is the washed-out image plus
noise for all three. Stage I (DualCodebookVQModel) and stage II (IQPIRModel) train on it in process. On held-out
images a higher target score must then give a higher measured quality (RMS contrast, a no-reference measure: NIQE
needs 96x96 images): Spearman over the target bins > 0, asserted loosely as the issue asks. The control, the same
stage II without the score embedding, gives one output whatever the target.
"""
import pytest
import test_dual_codebook_vq_model as stage_one_tests
import torch
import torch.nn.functional as F
from test_dual_codebook_vq_model import TINY_AE, build, vq_options
from test_iqpir_model import iqpir_options

import gtplus_models  # noqa: F401  (registers every gtplus component)

pytestmark = pytest.mark.usefixtures('one_torch_thread')
scored_folder = stage_one_tests.scored_folder  # three scored GT PNGs: the option files need a data root

AE = dict(TINY_AE, codebook_size=32, hq_threshold=0.5, attn_resolutions=[])
TARGETS = (0.1, 0.3, 0.5, 0.7, 0.9)
# GT qualities: contrast kept, and the score range of GT at that quality (every bin of TARGETS gets training GT;
# an untrained bin leaves the latent unconditioned).
LEVELS = ((1.0, (0.67, 1.)), (0.7, (0.34, 0.66)), (0.4, (0., 0.33)))
LQ_CONTRAST, NOISE = 0.4, 0.03
ITERS, LR = 200, 5e-3


def smooth(num, seed):
    """Smooth random colour fields (4x4 upsampled), [num,3,32,32] in [0,1]."""
    coarse = torch.rand(num, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(coarse, size=32, mode='bilinear', align_corners=False)


def wash(img, contrast):
    """``img`` with its contrast scaled about its mean (< 1: washed out)."""
    mean = img.mean(dim=(1, 2, 3), keepdim=True)
    return mean + contrast * (img - mean)


def degrade(img, seed):
    noise = torch.randn(img.shape, generator=torch.Generator().manual_seed(seed))
    return (wash(img, LQ_CONTRAST) + NOISE * noise).clamp(0, 1)


def rms_contrast(img):
    """The measured quality: standard deviation of each image, averaged over the batch."""
    return float(img.std(dim=(1, 2, 3)).mean())


def batch(step, per_level=2):
    """Every image at every quality of LEVELS as GT, each with a score drawn from its level's range; one LQ per
    image for all its qualities."""
    pristine = smooth(per_level, 1000 + step)
    gen = torch.Generator().manual_seed(step)
    scores = [low + (high - low) * torch.rand(per_level, generator=gen) for _, (low, high) in LEVELS]
    return {'gt': torch.cat([wash(pristine, c) for c, _ in LEVELS]),
            'lq': degrade(pristine, step).repeat(len(LEVELS), 1, 1, 1), 'score': torch.cat(scores),
            'gt_path': ['x.png'] * per_level * len(LEVELS)}


def train(model, offset=0):
    for step in range(1, ITERS + 1):
        model.feed_data(batch(step + offset))
        model.optimize_parameters(step)


def test_a_higher_target_score_gives_higher_measured_quality_on_held_out_images(tmp_path, scored_folder):
    from scipy.stats import spearmanr
    adam = {'type': 'Adam', 'lr': LR, 'betas': [0.9, 0.99]}
    stage1 = build(tmp_path, dict(vq_options(scored_folder, name='sweep_vq', gan=False, optim_g=adam),
                                  network_g=dict(AE)))
    train(stage1)
    vq_path = str(tmp_path / 'stage1.pth')
    torch.save({'params': stage1.net_g.state_dict()}, vq_path)

    held_out = smooth(8, 7)  # images no stage saw
    lq = degrade(held_out, 7)
    measured = {}
    for name, embed in (('method', True), ('control', False)):
        opt = iqpir_options(scored_folder, vq_path, name=f'sweep_{name}', quality=False, optim_g=adam, ema_decay=0)
        opt['network_g'] = dict(AE, type='IQPIRNet', dim_embd=32, n_head=2, n_layers=1, score_embedding=embed)
        opt['network_vqgan'] = dict(AE)
        model = build(tmp_path, opt)
        train(model, offset=10000)
        net = model.net_g.eval()
        with torch.no_grad():
            measured[name] = [rms_contrast(net(lq, target)[0].clamp(0, 1)) for target in TARGETS]
    rho = spearmanr(TARGETS, measured['method']).statistic
    assert rho > 0, (measured, rho)
    assert max(measured['method']) > min(measured['method'])
    assert len(set(measured['control'])) == 1  # no score embedding: the target changes nothing
