"""gtplus sample-data OUT_DIR: the embedded photographs as PNG files."""
HELP = 'Write the real colour photographs that scikit-image installs (no download) as OUT_DIR/<name>.png.'


def add_arguments(parser):
    parser.add_argument('out_dir', help='folder to write <name>.png into (created if needed)')


def run(args):
    from basicsr.utils import get_root_logger

    from gtplus_data.sample_photos import write_sample_photos
    paths = write_sample_photos(args.out_dir)
    get_root_logger().info(f'{len(paths)} sample photos in {args.out_dir}')
    return 0
