"""gtplus enhance-gt GT OUT.lmdb --variants ... --cfmg-opt --cfmg-weights --cond C."""
from gtplus_models.commands._shared import (add_cond_argument, add_shard_arguments, check_device, image_count,
                                            report_done, report_outputs)

HELP = ('Write the enhanced GT at a chosen c from a trained CFMG, the GT and its SR variants, as an LMDB, with '
        'OUT/preview.png (sources, enhanced GT, masks).')


def add_arguments(parser):
    parser.add_argument('gt', help='GT LMDB or folder')
    parser.add_argument('out', help='output LMDB')
    parser.add_argument('--variants', nargs='+', required=True, help='SR variant LMDBs/folders (same keys, GT size)')
    parser.add_argument('--cfmg-opt', required=True, help='YAML with the CFMG network mapping (or a network_g)')
    parser.add_argument('--cfmg-weights', required=True, help='CFMG checkpoint (basicsr .pth or official CFMG.pkl)')
    add_cond_argument(parser, 'c in [0,1]')
    parser.add_argument('--overwrite', action='store_true')
    parser.add_argument('--preview', type=int, default=4,
                        help='images in OUT/preview.png (sources, enhanced GT, masks; 0: none)')
    parser.add_argument('--device', default='cpu')
    add_shard_arguments(parser, 'merge the shards written by all ranks (and write the preview), then stop')


def run(args):
    check_device(args.device)
    import time

    from gtplus_models.tools.enhance_gt import enhance_gt
    started = time.monotonic()
    written = enhance_gt(args.gt, args.variants, args.out, args.cond, args.cfmg_opt, args.cfmg_weights,
                         args.overwrite, args.device, args.rank, args.world_size, args.merge, args.preview)
    report_outputs(written)
    report_done('enhance-gt', f'{image_count(written[0])} images at c={args.cond:g}', written[0], started)
    return 0
