"""gtplus super-resolve-gt GT OUT_DIR: x2/x3/x4 GT-size SR variants through an enhancer."""
from gtplus_models.commands._shared import add_shard_arguments

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


def build_enhancer(args, device):
    from gtplus_models.checkpoints import build_frozen_network
    from gtplus_models.refine import read_network_opt
    from gtplus_models.super_resolve import arch_enhancer, diffusers_enhancer
    if bool(args.enhancer_opt) == bool(args.diffusers_pipeline):
        raise ValueError('give exactly one enhancer: --enhancer-opt + --enhancer-weights, or --diffusers-pipeline')
    if args.diffusers_pipeline:
        return diffusers_enhancer(args.diffusers_pipeline, device, parse_pipeline_kwargs(args.pipeline_kwargs))
    network = build_frozen_network(read_network_opt(args.enhancer_opt, '--enhancer-opt'), args.enhancer_weights,
                                   '--enhancer-weights', device)
    return arch_enhancer(network, tile=args.tile)


def parse_pipeline_kwargs(text):
    """``--pipeline-kwargs`` as a dict, read with the safe YAML loader (values are never evaluated)."""
    import yaml
    try:
        kwargs = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f'--pipeline-kwargs is not valid YAML: {err}') from err
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ValueError(f'--pipeline-kwargs must be a YAML mapping of argument names, got {text!r}')
    return kwargs


def run(args):
    import sys

    import torch

    from gtplus_data.lmdb_writer import is_complete
    from gtplus_models.super_resolve import merge_variants, variant_path, write_variants, write_variants_preview
    try:
        scales = [int(s) for s in args.scales.split(',') if s.strip()]
        if not scales or min(scales) < 1:
            raise ValueError(f'--scales must be positive integers, got {args.scales!r}')
        if args.merge:
            merge_variants(args.out_dir, scales, args.overwrite)
        else:
            device = torch.device(args.device)
            enhancer = build_enhancer(args, device)
            write_variants(args.gt, args.out_dir, scales, enhancer, args.colour_align, args.overwrite, device,
                           args.rank, args.world_size, args.seed)
        if all(is_complete(variant_path(args.out_dir, s)) for s in scales) and args.preview > 0:
            # Sharded ranks get here only after --merge: the figure needs every image.
            write_variants_preview(args.gt, args.out_dir, scales, args.preview)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as err:
        sys.stderr.write(f'gtplus super-resolve-gt: error: {err}\n')
        return 2
    return 0
