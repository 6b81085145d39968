"""gtplus refine INPUT OUT_DIR: a restorer, then ORNet at one or more c values."""
from gtplus_models.commands._shared import add_cond_argument, check_device, parse_conds, report_done

HELP = 'Run any BasicSR restorer + ORNet at chosen c over a folder or LMDB (tiled); write PNGs and a c-sweep strip.'


def add_arguments(parser):
    parser.add_argument('input', help='image folder or BasicSR LMDB')
    parser.add_argument('out_dir', help='output folder (restored/, refined_c<c>/, sweep/)')
    parser.add_argument('--ornet-opt', required=True, help='YAML with the ORNet network mapping (or a network_g)')
    parser.add_argument('--ornet-weights', required=True, help='ORNet checkpoint (basicsr .pth or official .pkl)')
    parser.add_argument('--restorer-opt', help='YAML with the restorer network mapping; omit to refine INPUT as is')
    parser.add_argument('--restorer-weights', help='restorer checkpoint')
    add_cond_argument(parser, 'c, or a comma list for a sweep', sweep=True)
    parser.add_argument('--tile', type=int, default=0, help='tile size in pixels (0: whole image)')
    parser.add_argument('--tile-pad', type=int, default=32, help='context pixels around each tile')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")


def run(args):
    check_device(args.device)
    import time

    from gtplus_models.tools.refine import refine
    started, conds = time.monotonic(), parse_conds(args.cond)
    keys = refine(args.input, args.out_dir, args.ornet_opt, args.ornet_weights, conds, args.restorer_opt,
                  args.restorer_weights, args.tile, args.tile_pad, args.device)
    report_done('refine', f'{len(keys)} images x {len(conds)} c values', args.out_dir, started)
    return 0
