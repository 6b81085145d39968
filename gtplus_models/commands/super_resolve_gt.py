"""gtplus super-resolve-gt GT OUT_DIR: x2/x3/x4 GT-size SR variants through an enhancer."""
from gtplus_models.commands._shared import add_shard_arguments, parse_yaml_mapping, report_outputs

HELP = ('Make GT-size SR variants (bicubic up, enhancer, resize back) of a GT LMDB/folder: OUT_DIR/sr_x<s>.lmdb '
        'and OUT_DIR/preview.png.')


def add_arguments(parser):
    parser.add_argument('gt', help='GT LMDB or image folder')
    parser.add_argument('out_dir', help='folder for sr_x<s>.lmdb')
    parser.add_argument('--scales', default='2,3,4', help='comma list of upsampling factors (default 2,3,4)')
    parser.add_argument('--enhancer-opt', help='YAML with a BasicSR network mapping (or a network_g entry)')
    parser.add_argument('--enhancer-weights', help='local checkpoint of that network')
    parser.add_argument('--diffusers-pipeline', help='local folder of a diffusers pipeline taking image=')
    parser.add_argument('--pipeline-kwargs', default='{}',
                        help="YAML mapping of extra pipeline call arguments, e.g. '{num_inference_steps: 1}'")
    parser.add_argument('--colour-align', choices=['none', 'adain', 'wavelet'], default='none')
    parser.add_argument('--tile', type=int, default=0, help='tile size for the arch enhancer (0: whole image)')
    parser.add_argument('--overwrite', action='store_true', help='replace complete outputs')
    add_shard_arguments(parser, 'merge the shards written by all ranks (and write the preview), then stop')
    parser.add_argument('--preview', type=int, default=4,
                        help='images in OUT_DIR/preview.png (GT and variants, whole and centre-zoomed; 0: none)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--seed', type=int, default=0,
                        help='base seed; each image and scale gets its own, so reruns and shards agree (default 0)')


def parse_scales(text):
    """``'2,3,4'`` -> [2, 3, 4]; ValueError naming --scales otherwise."""
    try:
        return [int(s) for s in text.split(',') if s.strip()]
    except ValueError:
        raise ValueError(f'--scales must be positive integers, got {text!r}') from None


def run(args):
    from gtplus_models.tools.super_resolve import build_enhancer, super_resolve_gt
    scales = parse_scales(args.scales)
    enhancer = None
    if not args.merge:
        enhancer = build_enhancer(args.enhancer_opt, args.enhancer_weights, args.diffusers_pipeline,
                                  parse_yaml_mapping(args.pipeline_kwargs, '--pipeline-kwargs'), args.tile,
                                  args.device)
    report_outputs(super_resolve_gt(args.gt, args.out_dir, scales, enhancer, args.colour_align, args.overwrite,
                                    args.device, args.rank, args.world_size, args.seed, args.merge, args.preview))
    return 0
