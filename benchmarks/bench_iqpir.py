"""Cost of IQPIR (issue 13): the stage-II training iteration with and without the NR-IQA quality loss, and the
inference latency of IQPIRNet against the bare dual-codebook VQ autoencoder it is built on.

Run: ``python benchmarks/bench_iqpir.py [--threads 1] [--train-repeats 15] [--infer-repeats 30]
[--restorer-repeats 50]``. Prints three tables; in each, all rows are measured side by side in the same run (rows
interleaved round-robin, medians), so the ratios hold even when the machine's load drifts. The numbers are CPU
(measured on a 2-core machine shared with other work: the milliseconds are noisy, the ratios much less so).

Sizes: the quickstart's (``gtplus_models/quickstart/templates/iqpir/stage2.yml``), the least CPU size NIQE can judge:
img_size 96, nf 32, ch_mult [1,1,2,2] (a 12x12 token grid), res_blocks 1, no attention blocks, 2 codebooks of 256
codes of emb_dim 32; transformer dim_embd 64, n_head 4, n_layers 2, 10 score bins. Weights are random (a trained
network runs the same operations).

(a) Stage-II training iteration. ``IQPIRModel.feed_data`` + ``optimize_parameters`` (GT codes from the frozen
stage-I network, feature MSE, two cross-entropies, backward, Adam 1e-3; ema_decay 0 as the quickstart), batch 4 of
96^2 with per-sample scores, built in process by basicsr's ``build_model`` from an option dict; the stage-I checkpoint
is a random ``DualCodebookVQAutoEncoder`` of the same sizes saved in a temporary folder. Every arm starts from the
same weights (seed 0) and trains on the same batch:

- ``code_only (no quality loss)``: no ``train.quality_opt``; the net stops after the code logits
  (``code_only=True``), nothing is decoded. This is also every iteration before ``quality_start_iter``.
- ``+ decode, free judge``: the same model with a stand-in judge whose reward is the decoded image's mean (set on
  ``model.quality_judge``; costs nothing): the decode of the argmax codes, the straight-through soft codes and the
  backward through the frozen decoder, without an IQA metric.
- ``+ NIQE quality loss``: ``quality_opt {type: GTPlusQualityReward, metrics: [{name: niqe, weight: 1.0}]}``,
  ``quality_start_iter`` 0: the above plus pyiqa's differentiable NIQE on the clamped output, forward and backward.

Columns: ms per iteration, the ratio to ``code_only``, and the share of the iteration spent on the quality term
(``(t - t_code_only) / t``): the decode alone, and decode + judge.

(b) Inference latency per image, batch 1, under ``torch.inference_mode``, at 96^2 and at 128^2 (a 16x16 token grid;
both networks built for that size):

- ``DualCodebookVQAutoEncoder.forward(x)``: encode, quantise in both codebooks, decode (stage I, the reference);
- ``IQPIRNet.forward(x, score)``: encode, score embedding, transformer, decode of the argmax codes with the
  straight-through terms of ``decode_logits`` (what ``IQPIRModel.test`` runs);
- ``IQPIRNet, hard decode``: the same logits (``code_only=True``) and ``decode`` of the argmax codes alone, without
  the straight-through soft codes, whose value is zero at inference (what that path could cost);
- ``IQPIRNet transformer + code heads alone``: on the encoder latent, the part IQPIR adds to the autoencoder (the
  score embedding is one table lookup); the stage-I network's nearest-code search is what it replaces.

(c) ``ScoreConditionedRestorer`` around ``GTPlusNAFNet`` (the quickstart restorer's sizes: width 16, one block per
level, 3 levels; the shift on ``middle_blks``) against the bare GTPlusNAFNet with the same weights, batch 1 of 96^2,
under inference_mode: the forward hook's per-channel shift is all the wrapper adds (expected ratio ~1.0). A third
row times the bare network again: the spread between the two bare rows is the noise floor of the ratio (on a loaded
machine the first row of a round tends to come out a few percent faster).
"""
import argparse
import logging
import os
import tempfile

import torch
import torch.nn.functional as F
from timing import interleaved_medians, interleaved_training_medians, timed_step
from torch import nn

AE = {'img_size': 96, 'nf': 32, 'ch_mult': [1, 1, 2, 2], 'res_blocks': 1, 'attn_resolutions': [], 'codebook_size': 256,
      'emb_dim': 32, 'beta': 0.25, 'hq_threshold': 0.6, 'fuse_weight': 0.8}
TRANSFORMER = {'dim_embd': 64, 'n_head': 4, 'n_layers': 2, 'num_bins': 10, 'score_embedding': True}
NIQE_JUDGE = {'type': 'GTPlusQualityReward', 'metrics': [{'name': 'niqe', 'weight': 1.0}]}
NAF = {'type': 'GTPlusNAFNet', 'width': 16, 'middle_blk_num': 1, 'enc_blk_nums': [1, 1, 1], 'dec_blk_nums': [1, 1, 1]}
BATCH, SIZE, LARGER, LR = 4, 96, 128, 1e-3
SCORES = (0.2, 0.5, 0.7, 0.9)


def images(batch, size, seed=0):
    """Smooth random RGB images with some fine texture, in [0,1]: ([B,3,S,S] GT, a noisier LQ of it)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, size // 8, size // 8, generator=generator)
    gt = F.interpolate(coarse, size=(size, size), mode='bicubic', align_corners=False)
    gt = (gt + 0.03 * torch.randn(gt.shape, generator=generator)).clamp(0, 1)
    lq = (gt + 0.1 * torch.randn(gt.shape, generator=generator)).clamp(0, 1)
    return gt, lq


class MeanReward(nn.Module):
    """A free stand-in judge, as GTPlusQualityReward returns ``(reward, raw scores)``: the image's mean."""

    def forward(self, img):
        reward = img.mean()
        return reward, {'mean': reward.detach()}


def stage_one_checkpoint(folder):
    """A random stage-I DualCodebookVQAutoEncoder of the AE sizes, saved as basicsr saves it; its path."""
    from gtplus_arch.iqpir_arch import DualCodebookVQAutoEncoder
    torch.manual_seed(1)
    path = os.path.join(folder, 'net_g_stage1.pth')
    torch.save({'params': DualCodebookVQAutoEncoder(**AE).state_dict()}, path)
    return path


def stage_two_model(folder, vqgan_path, quality_opt):
    """IQPIRModel (seed-0 weights) of the quickstart's sizes; ``quality_opt`` None trains codes only."""
    from basicsr.models import build_model
    train = {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': LR, 'weight_decay': 0, 'betas': [0.9, 0.99]},
             'feat_loss_weight': 1.0, 'entropy_loss_weight': 0.5, 'quality_loss_weight': 0.05,
             'quality_start_iter': 0}
    if quality_opt is not None:
        train['quality_opt'] = dict(quality_opt)
    opt = {'name': 'bench_iqpir', 'model_type': 'IQPIRModel', 'num_gpu': 0, 'is_train': True, 'dist': False,
           'rank': 0, 'world_size': 1, 'manual_seed': 0,
           'network_g': dict(AE, type='IQPIRNet', **TRANSFORMER),
           'network_vqgan': dict(AE, type='DualCodebookVQAutoEncoder'),
           'path': {'pretrain_network_g': None, 'pretrain_network_vqgan': vqgan_path, 'strict_load_g': True,
                    'models': folder, 'training_states': folder},
           'train': train}
    torch.manual_seed(0)
    return build_model(opt)


def training_table(repeats):
    logging.getLogger('basicsr').setLevel(logging.WARNING)  # the model's set-up lines are not the table
    gt, lq = images(BATCH, SIZE)
    data = {'gt': gt, 'lq': lq, 'score': torch.tensor(SCORES)}
    names = ('code_only (no quality loss)', '+ decode, free judge', '+ NIQE quality loss')
    with tempfile.TemporaryDirectory() as folder:
        vqgan_path = stage_one_checkpoint(folder)
        code_only = stage_two_model(folder, vqgan_path, None)
        free = stage_two_model(folder, vqgan_path, None)
        free.quality_judge = MeanReward()  # quality_start_iter 0: every iteration decodes and "judges"
        niqe = stage_two_model(folder, vqgan_path, NIQE_JUDGE)
        models = dict(zip(names, (code_only, free, niqe)))
        start = {name: model.get_bare_model(model.net_g).state_dict() for name, model in models.items()}
        assert all(torch.equal(start[names[0]][key], start[name][key]) for name in names for key in start[name])
        medians = interleaved_training_medians({name: timed_step(model, data) for name, model in models.items()},
                                               repeats)
        assert all(model.quality_active(1) == (name != names[0]) for name, model in models.items())
        logged = sorted(niqe.log_dict)
        last_niqe = float(niqe.log_dict['niqe'])
    base = medians[names[0]]
    width = max(map(len, names))
    print(f'(a) Stage-II training iteration, IQPIRModel (quickstart sizes: img_size {SIZE}, nf {AE["nf"]}, ch_mult '
          f'{AE["ch_mult"]}, {AE["codebook_size"]} codes x 2, transformer {TRANSFORMER["dim_embd"]}/'
          f'{TRANSFORMER["n_head"]} heads/{TRANSFORMER["n_layers"]} layers), batch {BATCH} of {SIZE}^2, Adam; '
          f'median of {repeats} interleaved iterations per arm, {torch.get_num_threads()} thread(s), CPU')
    print(f'| {"arm":<{width}} | {"ms / iter":>9} | {"x code_only":>11} | {"quality-term share":>18} |')
    print(f'| {"-" * width} | {"-" * 9} | {"-" * 11} | {"-" * 18} |')
    for name in names:
        ms = medians[name] * 1e3
        share = f'{(medians[name] - base) / medians[name]:.0%}' if name != names[0] else ''
        print(f'| {name:<{width}} | {ms:9.1f} | {medians[name] / base:11.2f} | {share:>18} |')
    judge = medians[names[2]] - medians[names[1]]
    decode = medians[names[1]] - base
    print(f'Of the NIQE iteration: decode (+ its backward) {decode / medians[names[2]]:.0%}, NIQE forward + backward '
          f'{judge / medians[names[2]]:.0%} ({judge * 1e3:.1f} ms for {BATCH} images, {judge * 1e3 / BATCH:.1f} ms '
          f'each); logged terms: {", ".join(logged)} (NIQE of the last decoded batch {last_niqe:.2f}).')
    print()


def inference_table(repeats):
    from gtplus_arch.iqpir_arch import DualCodebookVQAutoEncoder, IQPIRNet
    rows, sizes = {}, {}
    for size in (SIZE, LARGER):
        torch.manual_seed(1)
        stage1 = DualCodebookVQAutoEncoder(**dict(AE, img_size=size)).eval()
        torch.manual_seed(0)
        net = IQPIRNet(**dict(AE, img_size=size), **TRANSFORMER).eval()
        net.load_state_dict(stage1.state_dict(), strict=False)  # encoder, codebooks, generator: stage I's
        _, x = images(1, size, seed=2)
        score = torch.tensor([0.9])

        def bare(stage1=stage1, x=x):
            return stage1(x)[0]

        def iqpir(net=net, x=x, score=score):
            return net(x, score)[0]

        def hard(net=net, x=x, score=score):
            logits_common, logits_hq, _ = net(x, score, code_only=True)
            grid = (1, net.latent_hw, net.latent_hw)
            return net.decode(net.fuse(net.quantize.lookup(logits_common.argmax(-1).view(grid), detach=True),
                                       net.quantize_aesthetic.lookup(logits_hq.argmax(-1).view(grid), detach=True)))
        with torch.inference_mode():
            assert torch.equal(iqpir(), hard())  # the straight-through terms add exactly zero
            latent = net.encode(x)

        def transformer(net=net, latent=latent):
            tokens = net.feat_emb(latent.flatten(2).permute(2, 0, 1))
            pos = net.position_emb.unsqueeze(1)
            for layer in net.ft_layers:
                tokens = layer(tokens, pos)
            return net.idx_pred_layer(tokens)
        tokens = (size // net.downscale) ** 2
        for label, fn in (('DualCodebookVQAutoEncoder (encode, quantise, decode)', bare),
                          ('IQPIRNet.forward(x, score)', iqpir), ('IQPIRNet, hard decode (no straight-through)', hard),
                          ('IQPIRNet transformer + code heads alone', transformer)):
            rows[f'{size}^2 ({tokens} tokens): {label}'] = fn
            sizes[f'{size}^2 ({tokens} tokens): {label}'] = size
    medians = interleaved_medians(rows, repeats, warmup=2)
    reference = {size: next(name for name in rows if sizes[name] == size) for size in (SIZE, LARGER)}
    width = max(map(len, rows))
    print(f'(b) Inference latency, batch 1, inference_mode; median of {repeats} interleaved calls per row, '
          f'{torch.get_num_threads()} thread(s), CPU')
    print(f'| {"row":<{width}} | {"ms / image":>10} | {"x bare VQ AE":>12} |')
    print(f'| {"-" * width} | {"-" * 10} | {"-" * 12} |')
    for name in rows:
        print(f'| {name:<{width}} | {medians[name] * 1e3:10.2f} | '
              f'{medians[name] / medians[reference[sizes[name]]]:12.2f} |')
    print()


def restorer_table(repeats):
    from basicsr.archs import build_network

    from gtplus_arch.score_conditioned_arch import ScoreConditionedRestorer
    torch.manual_seed(0)
    bare = build_network(dict(NAF)).eval()
    wrapped = ScoreConditionedRestorer(restorer=dict(NAF), feature='middle_blks', num_bins=10).eval()
    wrapped.load_restorer_state_dict(bare.state_dict())
    _, x = images(1, SIZE, seed=3)
    score = torch.tensor([0.9])
    rows = {'GTPlusNAFNet (bare)': lambda: bare(x),
            'ScoreConditionedRestorer(GTPlusNAFNet), score 0.9': lambda: wrapped(x, score),
            'GTPlusNAFNet (bare, again: the noise floor)': lambda: bare(x)}
    with torch.inference_mode():
        outputs = [fn() for fn in rows.values()]
        assert all(torch.equal(outputs[0], out) for out in outputs)  # a fresh (zero) embedding: the bare output
    medians = interleaved_medians(rows, repeats, warmup=2)
    base = medians[next(iter(rows))]
    width = max(map(len, rows))
    print(f'(c) ScoreConditionedRestorer around GTPlusNAFNet (width {NAF["width"]}, blocks {NAF["enc_blk_nums"]}/'
          f'{NAF["middle_blk_num"]}/{NAF["dec_blk_nums"]}, shift on middle_blks), batch 1 of {SIZE}^2, inference_mode; '
          f'median of {repeats} interleaved calls per row, {torch.get_num_threads()} thread(s), CPU')
    print(f'| {"row":<{width}} | {"ms / image":>10} | {"x bare":>6} |')
    print(f'| {"-" * width} | {"-" * 10} | {"-" * 6} |')
    for name in rows:
        print(f'| {name:<{width}} | {medians[name] * 1e3:10.2f} | {medians[name] / base:6.3f} |')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--train-repeats', type=int, default=15, help='timed iterations per training arm')
    parser.add_argument('--infer-repeats', type=int, default=30, help='timed calls per inference row')
    parser.add_argument('--restorer-repeats', type=int, default=50, help='timed calls per restorer row')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import gtplus_models  # noqa: F401  (registers every gtplus component)
    training_table(args.train_repeats)
    inference_table(args.infer_repeats)
    restorer_table(args.restorer_repeats)


if __name__ == '__main__':
    main()
