"""gtplus enhance-gt GT OUT.lmdb --variants ... --cfmg-opt --cfmg-weights --cond C."""
from gtplus_models.commands._shared import add_shard_arguments

HELP = ('Write the enhanced GT at a chosen c from a trained CFMG, the GT and its SR variants, as an LMDB, with '
        'OUT/preview.png (sources, enhanced GT, masks).')


def add_arguments(parser):
    parser.add_argument('gt', help='GT LMDB or folder')
    parser.add_argument('out', help='output LMDB')
    parser.add_argument('--variants', nargs='+', required=True, help='SR variant LMDBs/folders (same keys, GT size)')
    parser.add_argument('--cfmg-opt', required=True, help='YAML with the CFMG network mapping (or a network_g)')
    parser.add_argument('--cfmg-weights', required=True, help='CFMG checkpoint (basicsr .pth or official CFMG.pkl)')
    parser.add_argument('--cond', type=float, default=0.3, help='c in [0,1] (default 0.3)')
    parser.add_argument('--overwrite', action='store_true')
    parser.add_argument('--preview', type=int, default=4,
                        help='images in OUT/preview.png (sources, enhanced GT, masks; 0: none)')
    parser.add_argument('--device', default='cpu')
    add_shard_arguments(parser, 'merge the shards written by all ranks (and write the preview), then stop')


def run(args):
    import sys

    import torch

    from gtplus_data.lmdb_writer import is_complete, merge_shards
    from gtplus_models.checkpoints import build_frozen_network
    from gtplus_models.enhance_gt import write_enhanced_gt, write_enhanced_preview
    from gtplus_models.refine import read_network_opt
    try:
        if not 0 <= args.cond <= 1:
            raise ValueError(f'--cond must be in [0,1], got {args.cond}')
        device = torch.device(args.device)
        cfmg = build_frozen_network(read_network_opt(args.cfmg_opt, '--cfmg-opt'), args.cfmg_weights,
                                    '--cfmg-weights', device)
        if args.merge:
            merge_shards(args.out, overwrite=args.overwrite)
        else:
            write_enhanced_gt(cfmg, args.gt, args.variants, args.out, args.cond, args.overwrite, device, args.rank,
                              args.world_size)
        if is_complete(args.out) and args.preview > 0:  # sharded ranks: only after the merge
            write_enhanced_preview(cfmg, args.gt, args.variants, args.out, args.cond, args.preview, device)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as err:
        sys.stderr.write(f'gtplus enhance-gt: error: {err}\n')
        return 2
    return 0
