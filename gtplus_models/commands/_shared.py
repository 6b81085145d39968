"""Arguments shared by several subcommands (not a subcommand itself: the leading underscore hides it)."""


def add_shard_arguments(parser, merge_help):
    """--rank / --world-size / --merge of the tools that write LMDBs through the one writer.

    Without flags the torchrun environment (RANK, WORLD_SIZE) decides, so ``torchrun --nproc_per_node=N -m``-style
    launches shard on their own; every rank writes its shard, then one ``--merge`` run joins them.
    """
    parser.add_argument('--rank', type=int, help='this process writes shard RANK (default: $RANK, else 0)')
    parser.add_argument('--world-size', type=int, help='number of shards (default: $WORLD_SIZE, else 1)')
    parser.add_argument('--merge', action='store_true', help=merge_help)
