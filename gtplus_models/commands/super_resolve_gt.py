"""gtplus super-resolve-gt GT OUT_DIR: GT-size variants (x2/x3/x4 SR through an enhancer, or detail sources)."""
from gtplus_models.commands._shared import (add_shard_arguments, check_device, image_count, parse_numbers,
                                            parse_yaml_mapping, report_done, report_outputs)

HELP = ('Make GT-size variants of a GT LMDB/folder (bicubic up by s, enhancer, resize back; or training-free detail '
        'sources): OUT_DIR/sr_x<s>.lmdb and OUT_DIR/preview.png.')


def add_arguments(parser):
    parser.add_argument('gt', help='GT LMDB or image folder')
    parser.add_argument('out_dir', help='folder for the variant LMDBs (sr_x<s>.lmdb) and the preview')
    parser.add_argument('--scales', help='comma list of upsampling factors (default 2,3,4). A xs variant runs the '
                        'enhancer on the s-times upsampled GT: s^2 the time and memory of the GT size (x4: 16x); '
                        '1 runs it on the GT itself')
    parser.add_argument('--at-gt-size', action='store_true',
                        help='run the enhancer on the GT itself (no bicubic upsampling; one --scales value, which '
                        'only names the output): for detail enhancers and SR models trained on such input')
    parser.add_argument('--variant-name',
                        help='output LMDB name, {scale} replaced (default sr_x{scale}); the preview becomes '
                        'preview_<NAME without {scale}>.png')
    add_enhancer_arguments(parser)
    parser.add_argument('--colour-align', choices=['none', 'adain', 'wavelet'], default='none')
    parser.add_argument('--tile', type=int, default=0, help='tile size for the arch enhancer (0: whole image)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace complete outputs. Without it a rerun skips the variants already complete, '
                        'resumes the one a killed run was writing (only if the GT images it holds are unchanged) and '
                        'writes the rest; with every variant complete it is refused')
    add_shard_arguments(parser, 'merge the shards written by all ranks (and write the preview), then stop')
    parser.add_argument('--preview', type=int, default=4,
                        help='images in OUT_DIR/preview.png (GT and variants, whole and centre-zoomed; 0: none)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--seed', type=int, default=0,
                        help='base seed; each image and variant gets its own, so reruns and shards agree (default 0)')


def add_enhancer_arguments(parser):
    """The enhancer: exactly one of an arch YAML, a diffusers pipeline folder or a detail sweep."""
    enhancers = parser.add_mutually_exclusive_group()
    enhancers.add_argument('--enhancer-opt', help='YAML with a BasicSR network mapping (or a network_g entry), e.g. '
                           '{type: GTPlusDetailEnhancer, mode: wiener, sigma: 1.0}')
    parser.add_argument('--enhancer-weights', help='local checkpoint of that network (omit for a network without '
                        'parameters, such as GTPlusDetailEnhancer)')
    enhancers.add_argument('--diffusers-pipeline', help='local folder of a diffusers pipeline taking image=')
    enhancers.add_argument('--detail-sweep', nargs='+', metavar='MODE[:SIGMA]',
                           help='training-free detail sources on the GT itself, one LMDB each: usm, usm:R, wiener, '
                           'wiener:S, rl, rl:S (e.g. usm wiener:1.0 rl:1.5 -> detail_usm.lmdb, '
                           'detail_wiener_s1.0.lmdb, detail_rl_s1.5.lmdb; preview_detail.png)')
    parser.add_argument('--pipeline-kwargs', default='{}',
                        help="YAML mapping of extra pipeline call arguments, e.g. '{num_inference_steps: 1}'")


def run(args):
    check_device(args.device)
    if args.pipeline_kwargs.strip() not in ('', '{}') and not args.diffusers_pipeline:
        raise ValueError('--pipeline-kwargs only applies with --diffusers-pipeline')
    import time

    from gtplus_models.tools.super_resolve import build_enhancer, super_resolve_gt
    started, enhancer = time.monotonic(), None
    if not (args.merge or args.detail_sweep):
        enhancer = build_enhancer(args.enhancer_opt, args.enhancer_weights, args.diffusers_pipeline,
                                  parse_yaml_mapping(args.pipeline_kwargs, '--pipeline-kwargs'), args.tile,
                                  args.device)
    scales = parse_numbers(args.scales, '--scales', int)
    written = super_resolve_gt(args.gt, args.out_dir, scales, enhancer, args.colour_align, args.overwrite,
                               args.device, args.rank, args.world_size, args.seed, args.merge, args.preview,
                               args.at_gt_size, args.variant_name, args.detail_sweep, args.tile)
    report_outputs(written)
    lmdbs = [p for p in written if p.endswith('.lmdb')]
    report_done('super-resolve-gt', f'{image_count(lmdbs[0])} images x {len(lmdbs)} variants', args.out_dir, started)
    return 0
