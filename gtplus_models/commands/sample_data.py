"""gtplus sample-data OUT_DIR: the embedded photographs as PNG files."""
from gtplus_models.commands._shared import report_outputs

HELP = 'Write the real colour photographs that scikit-image installs (no download) as OUT_DIR/<name>.png.'


def add_arguments(parser):
    parser.add_argument('out_dir', help='folder to write <name>.png into (created if needed; rerunning is a no-op)')


def run(args):
    from gtplus_data.sample_photos import write_sample_photos
    paths = write_sample_photos(args.out_dir)
    report_outputs([f'{len(paths)} sample photos in {args.out_dir}'])
    return 0
