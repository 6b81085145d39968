"""gtplus refine INPUT OUT_DIR: a restorer, then ORNet at one or more c values."""
HELP = 'Run any BasicSR restorer + ORNet at chosen c over a folder or LMDB (tiled); write PNGs and a c-sweep strip.'


def add_arguments(parser):
    parser.add_argument('input', help='image folder or BasicSR LMDB')
    parser.add_argument('out_dir', help='output folder (restored/, refined_c<c>/, sweep/)')
    parser.add_argument('--ornet-opt', required=True, help='YAML with the ORNet network mapping (or a network_g)')
    parser.add_argument('--ornet-weights', required=True, help='ORNet checkpoint (basicsr .pth or official .pkl)')
    parser.add_argument('--restorer-opt', help='YAML with the restorer network mapping; omit to refine INPUT as is')
    parser.add_argument('--restorer-weights', help='restorer checkpoint')
    parser.add_argument('--cond', default='0.3', help='c, or a comma list for a sweep (default 0.3)')
    parser.add_argument('--tile', type=int, default=0, help='tile size in pixels (0: whole image)')
    parser.add_argument('--tile-pad', type=int, default=32, help='context pixels around each tile')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")


def parse_conds(text):
    conds = [float(v) for v in str(text).split(',') if v.strip()]
    if not conds or any(not 0 <= c <= 1 for c in conds):
        raise ValueError(f'--cond must be numbers in [0,1], got {text!r}')
    return conds


def run(args):
    import sys

    import torch

    from gtplus_data.image_source import ImageSource
    from gtplus_models.refine import load_refine_networks, refine_source
    try:
        conds = parse_conds(args.cond)
        if bool(args.restorer_opt) != bool(args.restorer_weights):
            raise ValueError('--restorer-opt and --restorer-weights go together')
        source = ImageSource(args.input)
        restorer, ornet = load_refine_networks(args, torch.device(args.device))
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        sys.stderr.write(f'gtplus refine: error: {err}\n')
        return 2
    refine_source(source, args.out_dir, restorer, ornet, conds, args.tile, args.tile_pad, torch.device(args.device))
    return 0
