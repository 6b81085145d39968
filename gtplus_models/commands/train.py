"""gtplus train -opt X.yml: train with basicsr's loop (CPU with num_gpu: 0, GPUs, or torchrun)."""
from gtplus_models.options import add_pipeline_arguments

HELP = 'Train a model from a BasicSR option file (same flags as basicsr/train.py).'


def add_arguments(parser):
    add_pipeline_arguments(parser)


def run(args):
    from gtplus_models.train import train_main
    return train_main(args)
