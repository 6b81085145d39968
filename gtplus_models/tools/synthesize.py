"""``gtplus synthesize``: (LQ, GT) training pairs made offline from HR images by a registered degradation synthesizer.

Outputs, the paired layout of ``gtplus make-lmdb --lq --gt`` (:func:`gtplus_data.make_lmdb.paired_lmdb_paths`),
which basicsr's ``PairedImageDataset`` reads with ``io_backend: {type: lmdb}``:

- ``OUT_PREFIX_gt.lmdb``: the GT of every pair, the HR image cropped to a multiple of the synthesizer's scale (its
  top-left part, as basicsr's ``mod_crop``), so that GT size = scale x LQ size exactly;
- ``OUT_PREFIX_lq.lmdb``: the synthesizer's output for that GT, 8-bit as the synthesizer rounds it;
- ``OUT_PREFIX_lq.lmdb/synthesis.json``: the provenance side file (below);
- ``OUT_PREFIX_lq.lmdb/preview.png``: per HR image, its bicubic downscaling (HR↓, MATLAB ``imresize``) beside
  each LQ made from it, whole and with the centre enlarged.

Keys: with ``variants=1`` a pair has its HR image's key. With ``variants=K > 1`` each HR image gives K pairs,
``<key>_v0`` ... ``<key>_v<K-1>``, and the GT LMDB holds the HR image once per pair, under the same keys (K
copies: the pair layout stays the one basicsr reads, at the cost of K times the GT storage).

Seeds: pair ``(key, i)`` is made by one ``forward`` of the synthesizer on that image alone, with a fresh
``torch.Generator`` (on the synthesizer's device) seeded with ``key_seed(seed, '<key>/synth/v<i>')``
(:func:`gtplus_data.degradations.key_seed`: the base seed plus the CRC-32 of the tag, mod 2^32). The output thus
depends only on (seed, key, i), never on sharding, resuming or processing order, and the same seed on the same
device gives byte-identical LMDBs. Variant 0 of a K-variant run equals the single pair of a 1-variant run. Images
go one at a time because a synthesizer may draw some choices once per batch (``RealESRGANSynthesizer``'s resize
and noise types), which would tie an image's LQ to its batch mates.

Provenance side file (:mod:`gtplus_data.side_file` layout)::

    {"format": "gtplus-side-file-1", "description": "...",
     "synthesizers": {ID: {"provenance": Synthesizer.provenance(),       # type and every constructor keyword
                           "weights": null | {"path", "size", "sha256", "epoch"}}},
     "records": {lq_key: {"hr_key", "variant", "base_seed", "seed", "synthesizer": type name,
                          "synthesizer_id": ID, "epoch": int | null, "weights_sha256": str | null}}}

The parameters are stored once, under a content id (``synth-`` + 12 hex digits of the SHA-256 of the provenance,
weights hash and epoch), and each record names its id: a record stays small on a large set, and side files of
sets made by different synthesizers merge by taking the union of both mappings. ``epoch`` is the reconstruction
snapshot's epoch: an integer ``epoch`` entry of the checkpoint, else ``epoch<K>`` in the file name
(``net_g_epoch8.pth``), else null.

Writing goes through the one LMDB writer (:mod:`gtplus_data.lmdb_shards`): resumable (a rerun skips written keys),
atomic (``meta_info.txt`` last), shardable (``rank``/``world_size``, then ``merge``) and refusing to overwrite a
complete output. A resumed or merged run is refused when the side file already there names another synthesizer,
weights or seed: its images would be mixed with the new ones.
"""
import functools
import hashlib
import json
import numbers
import os.path as osp

import torch

from gtplus_data.degradations import key_seed
from gtplus_data.image_source import ImageSource, input_source
from gtplus_data.image_util import image_to_tensor, tensor_to_image, to_uint8, write_png
from gtplus_data.lmdb_shards import dist_rank_world, find_shards, merge_shards, shard_keys, shard_path, write_sharded
from gtplus_data.lmdb_writer import check_key, is_complete, refuse_complete
from gtplus_data.make_lmdb import paired_lmdb_paths
from gtplus_data.side_file import SIDE_FILE_FORMAT, side_file_path, write_json
from gtplus_models.checkpoints import read_checkpoint
from gtplus_models.synthesis import load_synthesizer, snapshot_epoch
from gtplus_data.figures import preview_rows, stack_rows

SIDE_FILE_NAME = 'synthesis'
DESCRIPTION = ('Provenance of each LQ image of this LMDB (gtplus synthesize). records[key]: hr_key (the HR image it '
               'was made from; its GT is that image cropped to a multiple of the scale), variant (index among the '
               'LQs of that HR image), base_seed (--seed), seed (the torch.Generator seed of this image, '
               'key_seed(base_seed, "<hr_key>/synth/v<variant>")), synthesizer (type), synthesizer_id (its entry in '
               'synthesizers: the provenance() keywords that rebuild it and its weights file: path, size, sha256, '
               'epoch), epoch (of the reconstruction snapshot, null if none or unknown), weights_sha256.')


def check_synthesis_arguments(seed, variants, preview):
    """Refuse a seed, variant count or preview count that cannot be used, naming the flag."""
    for flag, value, lowest in (('--seed', seed, 0), ('--variants', variants, 1), ('--preview', preview, 0)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lowest:
            raise ValueError(f'{flag} must be an integer >= {lowest}, got {value!r}')


def variant_keys(hr_keys, variants):
    """Map each pair's key to (HR key, variant index).

    Args:
        hr_keys (list[str]): the HR images' keys.
        variants (int): LQ images per HR image (>= 1).

    Returns:
        dict[str, tuple[str, int]]: ``{key: (key, 0)}`` for one variant, else ``{'<key>_v<i>': (key, i)}``, in
        HR key order then variant order. Every key is checked as an LMDB key (ValueError naming it).
    """
    pairs = {}
    for hr_key in hr_keys:
        for index in range(variants):
            key = hr_key if variants == 1 else f'{hr_key}_v{index}'
            pairs[check_key(key)] = (hr_key, index)
    return pairs


def image_seed(seed, hr_key, index):
    """The torch.Generator seed of variant ``index`` of HR image ``hr_key`` under base ``seed`` (32-bit)."""
    return key_seed(seed, f'{hr_key}/synth/v{index}')


def weights_record(path, key='--synth-weights'):
    """What identifies a weights file: ``{'path': absolute path, 'size': bytes, 'sha256': hex, 'epoch': int|None}``.

    The checkpoint is read (``weights_only``) for its ``epoch`` entry only when the file name has none.
    """
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(functools.partial(f.read, 1 << 20), b''):
            digest.update(block)
    epoch = snapshot_epoch(path)
    if epoch is None:
        epoch = snapshot_epoch(path, read_checkpoint(path, key))
    return {'path': osp.abspath(path), 'size': osp.getsize(path), 'sha256': digest.hexdigest(), 'epoch': epoch}


def synthesizer_entry(synth, weights):
    """(id, entry) of a synthesizer in the side file's ``synthesizers`` mapping.

    The id hashes what makes the images (provenance, weights hash and epoch), not where the weights file lies, so a
    moved file keeps its id.
    """
    entry = {'provenance': synth.provenance(), 'weights': weights}
    identity = {'provenance': entry['provenance'],
                'weights': None if weights is None else {k: weights[k] for k in ('sha256', 'epoch')}}
    text = json.dumps(identity, sort_keys=True)
    return f'synth-{hashlib.sha256(text.encode()).hexdigest()[:12]}', entry


def synthesis_payload(pairs, keys, synth, weights, seed):
    """The side-file payload for ``keys`` (a subset of ``pairs``), see the module docstring."""
    synth_id, entry = synthesizer_entry(synth, weights)
    records = {}
    for key in keys:
        hr_key, index = pairs[key]
        records[key] = {'hr_key': hr_key, 'variant': index, 'base_seed': seed, 'seed': image_seed(seed, hr_key, index),
                        'synthesizer': entry['provenance']['type'], 'synthesizer_id': synth_id,
                        'epoch': None if weights is None else weights['epoch'],
                        'weights_sha256': None if weights is None else weights['sha256']}
    return {'format': SIDE_FILE_FORMAT, 'description': DESCRIPTION, 'synthesizers': {synth_id: entry},
            'records': {key: records[key] for key in sorted(records)}}


def record_synthesis(lmdb_path, payload, replace=False):
    """Write ``payload`` as ``lmdb_path/synthesis.json``, refusing when the one there describes other images.

    A side file already there (a run being resumed, shards being merged) must name the same synthesizer and give
    every key it shares with ``payload`` the same record: otherwise the LMDB holds images of another synthesizer,
    weights or seed, and adding these would mix the two. ``replace`` skips the check (the images it described are
    being replaced).

    Raises:
        ValueError: naming the side file and the first key (or the synthesizer) that differs.
    """
    path = side_file_path(lmdb_path, SIDE_FILE_NAME)
    if osp.isfile(path) and not replace:
        with open(path) as f:
            old = json.load(f)
        old_ids, new_ids = set(old.get('synthesizers', {})), set(payload['synthesizers'])
        differs = [key for key in sorted(set(old.get('records', {})) & set(payload['records']))
                   if old['records'][key] != payload['records'][key]]
        if old_ids != new_ids or differs:
            what = f'key {differs[0]!r}' if differs else f'synthesizer {sorted(old_ids)} (now {sorted(new_ids)})'
            raise ValueError(f'{path} records another synthesizer, weights or seed ({what} differs): rerun with the '
                             'same --synth-opt, --synth-weights and --seed to resume, or pass --overwrite')
        if old == payload:
            return path
    write_json(path, payload)
    return path


def gt_image(img, scale):
    """The GT of a pair: ``img`` (H, W, 3) cropped to its top-left (H - H % scale, W - W % scale) part."""
    from basicsr.data.transforms import mod_crop
    return mod_crop(img, scale)


@torch.no_grad()
def synthesize_image(synth, gt, seed, device='cpu'):
    """One LQ image: the synthesizer on ``gt`` alone, every random draw from a generator seeded with ``seed``.

    Args:
        synth (Synthesizer): frozen, on ``device``.
        gt (ndarray): (H, W, 3) float32 RGB in [0,1], sides multiples of ``synth.scale``.
        seed (int): see :func:`image_seed`.
        device (str | torch.device): where it runs (the generator lives there too).

    Returns:
        ndarray: (H/scale, W/scale, 3) float32 RGB in [0,1].
    """
    generator = torch.Generator(device=torch.device(device)).manual_seed(int(seed))
    return tensor_to_image(synth(image_to_tensor(gt, device), generator=generator))


@torch.no_grad()
def bicubic_down(gt, scale):
    """HR↓: MATLAB-style bicubic downscaling of ``gt`` (H, W, 3) [0,1] by ``scale`` (sides its multiples), rounded to
    8 bits as an LQ is: the reference LQ without degradation that previews and the degradation report compare to."""
    from gtplus_arch.synthesizer_arch import BicubicSynthesizer
    return tensor_to_image(BicubicSynthesizer(scale=scale, method='matlab')(image_to_tensor(gt)))


def write_pairs(source, lq_out, gt_out, pairs, synth, weights, seed, device='cpu', rank=None, world_size=None,
                overwrite=False):
    """Write this rank's share of the LQ and GT LMDBs (the whole of each with one rank) and the LQ side file.

    Args:
        source (ImageSource): the HR images.
        lq_out, gt_out (str): the output LMDBs.
        pairs (dict): key -> (HR key, variant index), see :func:`variant_keys`.
        synth (Synthesizer): frozen, on ``device``.
        weights (dict | None): :func:`weights_record` of its weights file.
        seed (int): the base seed.
        device, rank, world_size, overwrite: as in :func:`synthesize`.

    Returns:
        list[str]: the LQ and GT LMDBs (or shards) this rank completed.
    """
    rank, world_size = dist_rank_world(rank, world_size)
    target = lq_out if world_size == 1 else shard_path(lq_out, rank, world_size)
    payload = synthesis_payload(pairs, shard_keys(pairs, rank, world_size), synth, weights, seed)
    if not overwrite and osp.isdir(target):
        record_synthesis(target, payload)  # a resumed run: refuse before adding images of another synthesizer

    @functools.lru_cache(maxsize=1)  # the variants of an HR image come one after the other: read it once
    def read_gt(hr_key):
        gt = gt_image(source.read(hr_key), synth.scale)
        height, width = gt.shape[:2]
        if min(height, width) < synth.min_size():
            raise ValueError(f'{source.describe(hr_key)}: {height}x{width} (cropped to a multiple of scale '
                             f'{synth.scale}) is smaller than the {synth.min_size()} pixels a side '
                             f'{type(synth).__name__} needs with these options')
        return gt

    def load_lq(key):
        if not osp.isfile(side_file_path(target, SIDE_FILE_NAME)):
            # Written with the first image (the writer has made, or with overwrite emptied, the folder by now), so
            # a run killed at any later point leaves a side file that a resumed run is checked against.
            record_synthesis(target, payload)
        hr_key, index = pairs[key]
        return synthesize_image(synth, read_gt(hr_key), image_seed(seed, hr_key, index), device)

    written = [write_sharded(lq_out, list(pairs), load_lq, rank, world_size, overwrite, desc='synthesize LQ')]
    record_synthesis(target, payload)  # a shard with no key to write has none yet
    written.append(write_sharded(gt_out, list(pairs), lambda key: read_gt(pairs[key][0]), rank, world_size,
                                 overwrite, desc='GT'))
    return written


def merge_pairs(lq_out, gt_out, payload, overwrite=False):
    """Merge the shards of both LMDBs and write the whole side file, after checking each shard's side file.

    Returns:
        list[str]: the two LMDBs.
    """
    if not is_complete(lq_out) or overwrite:
        for shard in find_shards(lq_out):
            shard_payload = dict(payload, records={key: payload['records'][key] for key in ImageSource(shard).keys
                                                   if key in payload['records']})
            record_synthesis(shard, shard_payload)
    for path in (lq_out, gt_out):
        merge_shards(path, overwrite=overwrite)
    keys = ImageSource(lq_out).keys
    if keys != sorted(payload['records']):
        raise ValueError(f'{lq_out} holds {len(keys)} keys but HR_SRC gives {len(payload["records"])}: merge the '
                         'shards of the run with the same HR_SRC and --variants')
    record_synthesis(lq_out, payload, replace=overwrite)
    return [lq_out, gt_out]


def write_synthesis_preview(lq_out, gt_out, pairs, scale, path, num_images=4):
    """Per HR image (the first ``num_images``): HR↓ (bicubic) and each of its LQs, whole and centre-enlarged.

    Returns:
        str: ``path``.
    """
    lq_source, gt_source = ImageSource(lq_out), ImageSource(gt_out)
    by_image = {}
    for key, (hr_key, index) in pairs.items():
        by_image.setdefault(hr_key, []).append((index, key))
    rows = []
    for hr_key in list(by_image)[:num_images]:
        variants = sorted(by_image[hr_key])
        gt = gt_source.read(variants[0][1])
        panels = [(f'HR bicubic x{scale}', to_uint8(bicubic_down(gt, scale)))]
        panels += [(f'LQ v{index}' if len(variants) > 1 else 'LQ', to_uint8(lq_source.read(key)))
                   for index, key in variants]
        rows += preview_rows(hr_key, panels)
    write_png(path, stack_rows(rows))
    return path


def synthesize(hr_path, out_prefix, synth_opt, seed, weights_path=None, variants=1, device='cpu', rank=None,
               world_size=None, merge=False, overwrite=False, preview=4):
    """``gtplus synthesize``: write (or, with ``merge``, join the shards of) the pair LMDBs, then the preview once
    both are complete. See the module docstring for the layout, the seeds and the side file.

    Args:
        hr_path (str): HR image folder or LMDB.
        out_prefix (str): writes ``OUT_PREFIX_lq.lmdb`` and ``OUT_PREFIX_gt.lmdb``.
        synth_opt (dict): a ``network_synth`` block, ``{'type': <registered Synthesizer>, ...}``.
        seed (int): base seed, >= 0.
        weights_path (str | None): weights of the synthesizer's network (required exactly when it has one).
        variants (int): LQ images per HR image, >= 1.
        device (str | torch.device): where the synthesizer runs.
        rank, world_size (int | None): this process's shard (default: torchrun's RANK / WORLD_SIZE, else 0 of 1).
        merge (bool): merge the shards written by all ranks (same arguments) instead of writing.
        overwrite (bool): replace complete outputs.
        preview (int): HR images in ``OUT_PREFIX_lq.lmdb/preview.png`` (0: none).

    Returns:
        list[str]: the two LMDBs (or this rank's shards) and the preview, if written.
    """
    check_synthesis_arguments(seed, variants, preview)
    synth = load_synthesizer(synth_opt, weights_path, device)
    weights = weights_record(weights_path) if weights_path else None
    source = input_source(hr_path)
    pairs = variant_keys(source.keys, variants)
    lq_out, gt_out = paired_lmdb_paths(out_prefix)
    if merge:
        written = merge_pairs(lq_out, gt_out, synthesis_payload(pairs, pairs, synth, weights, seed), overwrite)
    else:
        if not overwrite:  # both before either is touched
            refuse_complete(lq_out)
            refuse_complete(gt_out)
        written = write_pairs(source, lq_out, gt_out, pairs, synth, weights, seed, device, rank, world_size,
                              overwrite)
    if preview > 0 and is_complete(lq_out) and is_complete(gt_out):  # sharded ranks: only after the merge
        written.append(write_synthesis_preview(lq_out, gt_out, pairs, synth.scale, osp.join(lq_out, 'preview.png'),
                                               preview))
    return written
