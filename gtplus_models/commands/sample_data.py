"""gtplus sample-data OUT_DIR: the embedded photographs as PNG files."""
HELP = 'Write the real colour photographs that scikit-image installs (no download) as OUT_DIR/<name>.png.'


def add_arguments(parser):
    parser.add_argument('out_dir', help='folder to write <name>.png into (created if needed; rerunning is a no-op)')


def run(args):
    import sys

    from basicsr.utils import get_root_logger

    from gtplus_data.sample_photos import write_sample_photos
    try:
        paths = write_sample_photos(args.out_dir)
    except OSError as error:  # e.g. OUT_DIR is a file or not writable: a user error, no traceback
        sys.stderr.write(f'gtplus sample-data: error: {error}\n')
        return 2
    get_root_logger().info(f'{len(paths)} sample photos in {args.out_dir}')
    return 0
