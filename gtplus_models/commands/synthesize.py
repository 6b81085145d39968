"""gtplus synthesize HR_SRC OUT_PREFIX --synth-opt synth.yml [--synth-weights W] --seed S: offline (LQ, GT) pairs."""
from gtplus_models.commands._shared import add_shard_arguments, check_device, image_count, report_done, report_outputs

HELP = ('Make (LQ, GT) training pairs from HR images with a degradation synthesizer (a network_synth block): '
        'OUT_PREFIX_lq.lmdb (+ synthesis.json provenance, preview.png) and OUT_PREFIX_gt.lmdb.')


def add_arguments(parser):
    parser.add_argument('hr', help='HR image folder or LMDB')
    parser.add_argument('out_prefix', help='writes OUT_PREFIX_lq.lmdb and OUT_PREFIX_gt.lmdb (GT: the HR cropped to a '
                        'multiple of the scale), the pair layout of make-lmdb --lq/--gt')
    parser.add_argument('--synth-opt', required=True, help='YAML holding a network_synth block ({type: '
                        'BicubicSynthesizer | RealESRGANSynthesizer | ..., its keywords}), as a training option '
                        'file does')
    parser.add_argument('--synth-weights', help="weights of the synthesizer's network (e.g. a ReconstructionModel "
                        'snapshot net_g_epoch8.pth); only for synthesizers that have one')
    parser.add_argument('--seed', type=int, required=True, help='base seed (>= 0); each LQ image draws from its own '
                        'seed of (seed, key, variant), so plain, sharded and resumed runs write the same bytes')
    parser.add_argument('--variants', type=int, default=1, help='LQ images per HR image (default 1); with K > 1 the '
                        'keys are <key>_v0 .. <key>_v<K-1> and the GT LMDB repeats the HR image under each')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--overwrite', action='store_true', help='replace complete outputs')
    parser.add_argument('--preview', type=int, default=4, help='HR images in OUT_PREFIX_lq.lmdb/preview.png (HR '
                        'bicubic beside each LQ, whole and centre-enlarged; 0: none)')
    add_shard_arguments(parser, 'merge the shards written by all ranks (same arguments), write the preview, then stop')


def run(args):
    check_device(args.device)
    import time

    from gtplus_models.synthesis import read_synth_opt
    from gtplus_models.tools.synthesize import synthesize
    started = time.monotonic()
    written = synthesize(args.hr, args.out_prefix, read_synth_opt(args.synth_opt), args.seed, args.synth_weights,
                         args.variants, args.device, args.rank, args.world_size, args.merge, args.overwrite,
                         args.preview)
    report_outputs(written)
    report_done('synthesize', f'{image_count(written[0])} pairs', args.out_prefix, started)
    return 0
