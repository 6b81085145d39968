"""``gtplus super-resolve-gt``: GT-size variants of a GT dataset, the extra sources the CFMG mixes with the GT.

For each scale s: bicubic-upsample the GT by s, run the enhancer, optionally align its colours to the enhancer's
input (AdaIN or wavelet), and resize back to the GT size (area). N scales give N variants. Each is written as its own
LMDB (``OUT_DIR/sr_x<s>.lmdb``, same keys as the GT; ``--variant-name`` changes the name) through the one LMDB
writer, so it is resumable, sharded by rank and atomic. A rerun after a kill skips the variants already complete
(logging each), resumes the one that was being written and writes the rest; a rerun with every variant complete is
refused unless ``--overwrite``. The writer records each GT image's size and modification time (or an LMDB value's
checksum), so resuming after the GT changed is refused too.

Cost: a xs variant runs the enhancer on s²·H·W pixels (x4: 16 times the GT's time and activation memory).
``at_gt_size`` (``--at-gt-size``) gives the enhancer the GT itself instead (scale 1 does the same), for detail
enhancers and for SR models trained on inputs of that kind; an enhancer that returns a larger image (an SR model) is
area-resized back.

Enhancers:
- a BasicSR-registered arch with local weights (``--enhancer-opt`` YAML + ``--enhancer-weights``; no weights for a
  network without parameters, such as ``GTPlusDetailEnhancer``); it receives [1,3,sH,sW] in [0,1];
- a diffusers pipeline loaded from a local folder (``--diffusers-pipeline DIR``, ``local_files_only``), called as
  ``pipe(image=PIL, **kwargs).images[0]``: the route for OSEDiff-class one-step diffusion SR exported to diffusers;
- a detail sweep (``--detail-sweep usm wiener:1.0 rl:1.5``): several training-free ``GTPlusDetailEnhancer``
  settings run on the GT itself, each written as ``OUT_DIR/detail_<mode>[_s<sigma>].lmdb``. These are an offline
  stand-in for the paper's OSEDiff, usable next to or instead of SR variants in ``enhance-gt --variants`` and a
  CFMG's ``dataroot_variants``.
"""
import inspect
import os.path as osp
from typing import Callable, NamedTuple

import numpy as np
import torch
from basicsr.utils import get_root_logger
from torch.nn import functional as F

from gtplus_arch.colour_align import align_colour
from gtplus_arch.detail_enhancer_arch import GTPlusDetailEnhancer
from gtplus_data.degradations import key_seed
from gtplus_data.image_source import ImageSource, describe_key_mismatch, input_source
from gtplus_data.image_util import image_to_tensor, tensor_to_image, tensor_to_uint8
from gtplus_data.lmdb_shards import merge_shards, write_sharded
from gtplus_data.lmdb_writer import is_complete
from gtplus_models.checkpoints import load_frozen_network
from gtplus_data.figures import write_sources_preview
from gtplus_models.tools.tiling import check_tiling, tiled_forward

DETAIL_DEFAULT_SIGMA = inspect.signature(GTPlusDetailEnhancer).parameters['sigma'].default


def arch_enhancer(network, tile=0, tile_pad=32):
    """Enhancer from a frozen network: Tensor[1,3,H,W] [0,1] -> Tensor[1,3,H',W']."""
    check_tiling(tile, tile_pad)  # before any output exists

    @torch.no_grad()
    def enhance(img):
        return tiled_forward(network, img, tile, tile_pad).clamp(0, 1)

    return enhance


def diffusers_enhancer(pipeline_dir, device, call_kwargs=None):
    """Enhancer from a diffusers pipeline saved in a local folder (never downloads).

    Args:
        pipeline_dir (str): a folder written by ``pipe.save_pretrained``.
        device (torch.device): where the pipeline runs.
        call_kwargs (dict | None): extra keyword arguments of every ``pipe(image=..., **call_kwargs)`` call, e.g.
            ``{'num_inference_steps': 1, 'prompt': ''}``.

    Returns:
        callable: Tensor[1,3,H,W] in [0,1] -> Tensor[1,3,H',W'] in [0,1] (the pipeline's output size).
    """
    if not osp.isdir(pipeline_dir):
        raise FileNotFoundError(f'--diffusers-pipeline: {pipeline_dir} is not a folder. Save the pipeline there with '
                                'pipe.save_pretrained(DIR) on a machine with the weights.')
    from diffusers import DiffusionPipeline
    from PIL import Image
    try:
        pipe = DiffusionPipeline.from_pretrained(pipeline_dir, local_files_only=True).to(device)
    except (OSError, ValueError) as err:  # diffusers reports a missing model_index.json / weight file as OSError
        raise FileNotFoundError(f'--diffusers-pipeline: {pipeline_dir} does not hold a complete diffusers pipeline '
                                f'(model_index.json and each component\'s weights, as written by '
                                f'pipe.save_pretrained(DIR)): {err}') from err
    pipe.set_progress_bar_config(disable=True)
    call_kwargs = dict(call_kwargs or {})

    @torch.no_grad()
    def enhance(img):
        out = pipe(image=Image.fromarray(tensor_to_uint8(img)), **call_kwargs).images[0]
        out = np.asarray(out, dtype=np.float32) / 255. if not isinstance(out, np.ndarray) else out
        return image_to_tensor(out, img.device)

    return enhance


def resize_to(img, size):
    """Resize [B,C,h,w] to ``size`` (H, W): area averaging when shrinking (no aliasing), bicubic otherwise."""
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    shrinking = img.shape[-2] >= size[0] and img.shape[-1] >= size[1]
    return F.interpolate(img, size=tuple(size), mode='area' if shrinking else 'bicubic',
                         align_corners=None if shrinking else False)


def super_resolve_variant(gt, scale, enhancer, colour_align=None):
    """One GT-size variant.

    Args:
        gt (Tensor): [1,3,H,W] RGB in [0,1].
        scale (int): bicubic upsampling factor before the enhancer; 1 gives the enhancer the GT itself. The enhancer
            then sees s²·H·W pixels: its time and memory grow with s².
        enhancer (callable): Tensor[1,3,sH,sW] -> Tensor[1,3,*,*] in [0,1] (an SR model may return a larger image).
        colour_align (str | None): None, 'adain' or 'wavelet' (against the enhancer's input).

    Returns:
        Tensor: [1,3,H,W] in [0,1].
    """
    height, width = gt.shape[-2:]
    reference = gt
    if scale != 1:
        reference = F.interpolate(gt, scale_factor=scale, mode='bicubic', align_corners=False).clamp(0, 1)
    enhanced = resize_to(enhancer(reference), reference.shape[-2:])
    enhanced = align_colour(enhanced, reference, colour_align)
    return resize_to(enhanced, (height, width)).clamp(0, 1)


DEFAULT_SCALES = (2, 3, 4)
DEFAULT_VARIANT_NAME = 'sr_x{scale}'
# Short names of the detail modes in output names: detail_rl_s1.5 rather than detail_richardson_lucy_s1.5.
DETAIL_SHORT_NAMES = {'usm': 'usm', 'wiener': 'wiener', 'richardson_lucy': 'rl'}


class Variant(NamedTuple):
    """One GT-size source to write: ``OUT_DIR/<name>.lmdb``.

    Attributes:
        name (str): the LMDB's name without ``.lmdb``; also the tag of its per-image seeds.
        enhancer (callable): Tensor[1,3,h,w] in [0,1] -> Tensor[1,3,*,*] in [0,1].
        upscale (int): bicubic factor of the GT before the enhancer (1: the enhancer sees the GT itself).
    """
    name: str
    enhancer: Callable
    upscale: int


def source_path(out_dir, name):
    """``OUT_DIR/<name>.lmdb``."""
    return osp.join(out_dir, f'{name}.lmdb')


def variant_name(template, scale):
    """The output name of scale ``scale`` under ``--variant-name`` ``template`` (``'sr_x{scale}'`` -> 'sr_x2')."""
    try:
        name = template.format(scale=scale)
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(f'--variant-name {template!r}: only {{scale}} may appear in braces ({err})') from None
    if not name or name != osp.basename(name) or name.startswith('.'):
        raise ValueError(f'--variant-name {template!r} must give a plain folder name, got {name!r}')
    return name


def variant_path(out_dir, scale, name=DEFAULT_VARIANT_NAME):
    """``OUT_DIR/sr_x<s>.lmdb`` (or the ``name`` template's)."""
    return source_path(out_dir, variant_name(name, scale))


def scale_variants(scales, enhancer, at_gt_size=False, name=DEFAULT_VARIANT_NAME):
    """The variants of one enhancer at several scales.

    Args:
        scales (list[int]): upsampling factors, each >= 1.
        enhancer (callable | None): see :class:`Variant` (None: only the names are needed, e.g. to merge).
        at_gt_size (bool): run the enhancer on the GT itself, not on its bicubic upsampling; then exactly one scale
            is allowed, and it only names the output (the scale of an SR model trained on GT-size input, say).
        name (str): output name template with ``{scale}`` (``--variant-name``).

    Returns:
        list[Variant]
    """
    if not scales or any(int(s) != s or s < 1 for s in scales):
        raise ValueError(f'--scales must be positive integers, got {scales!r}')
    if at_gt_size and len(scales) != 1:
        raise ValueError(f'--at-gt-size runs the enhancer once, on the GT itself: give one --scales value (it names '
                         f'the output), got {list(scales)}')
    variants = [Variant(variant_name(name, s), enhancer, 1 if at_gt_size else int(s)) for s in scales]
    if len({v.name for v in variants}) != len(variants):
        raise ValueError(f'--variant-name {name!r} gives the same name to several scales: put {{scale}} in it')
    return variants


def detail_options(spec):
    """A ``--detail-sweep`` item as (output name, GTPlusDetailEnhancer keywords).

    Args:
        spec (str | dict): ``'MODE'`` or ``'MODE:SIGMA'`` with MODE usm, wiener, rl or richardson_lucy (SIGMA: the
            PSF std of wiener / rl, the one blur radius of usm); or a mapping of GTPlusDetailEnhancer keywords with
            an optional ``name``.

    Returns:
        tuple[str, dict]: e.g. ('detail_wiener_s1.0', {'mode': 'wiener', 'sigma': 1.0}).
    """
    if isinstance(spec, dict):
        opt = dict(spec)
        name = opt.pop('name', None)
    else:
        mode, _, sigma = str(spec).strip().partition(':')
        opt, name = {'mode': {'rl': 'richardson_lucy'}.get(mode, mode)}, None
        if sigma:
            try:
                value = float(sigma)
            except ValueError:
                raise ValueError(f'--detail-sweep item {spec!r}: SIGMA must be a number (MODE:SIGMA)') from None
            opt.update({'radii': [value]} if opt['mode'] == 'usm' else {'sigma': value})
    mode = opt.get('mode', 'usm')
    if mode not in DETAIL_SHORT_NAMES:
        raise ValueError(f"--detail-sweep item {spec!r}: mode must be one of usm, wiener, rl, richardson_lucy")
    if name is None:
        name = f'detail_{DETAIL_SHORT_NAMES[mode]}'
        if mode == 'usm' and 'radii' in opt:
            name += '_r' + '-'.join(str(float(r)) for r in np.atleast_1d(opt['radii']))
        elif mode != 'usm':
            name += f"_s{float(opt.get('sigma', DETAIL_DEFAULT_SIGMA))}"
    return name, opt


def detail_variants(specs, tile=0, device='cpu'):
    """GT-size variants from training-free :class:`~gtplus_arch.detail_enhancer_arch.GTPlusDetailEnhancer` settings.

    Args:
        specs (list[str | dict]): see :func:`detail_options`.
        tile (int): tile size (0: whole image).
        device (str | torch.device): where they run.

    Returns:
        list[Variant]: one per spec, each with upscale 1 (the GT itself).
    """
    variants = []
    for spec in specs:
        name, opt = detail_options(spec)
        try:
            network = GTPlusDetailEnhancer(**opt).to(device).eval()
        except TypeError as err:  # an unknown keyword in a mapping
            raise ValueError(f'--detail-sweep item {spec!r}: {err}') from None
        variants.append(Variant(variant_name(name, 1), arch_enhancer(network, tile=tile), 1))
    names = [v.name for v in variants]
    if not names or len(set(names)) != len(names):
        raise ValueError(f'--detail-sweep needs items with distinct names, got {names} (give a mapping a name: key)')
    return variants


def write_sources(gt_path, out_dir, variants, colour_align=None, overwrite=False, device='cpu', rank=None,
                  world_size=None, seed=0):
    """Write ``OUT_DIR/<name>.lmdb`` for each variant (resumable and shardable, through the one LMDB writer).

    With world_size > 1 (arguments or torchrun's RANK/WORLD_SIZE) each rank writes its shard of every variant;
    merge them with :func:`merge_sources` (``--merge``) once all ranks are done.

    A variant whose LMDB is already complete is skipped (and logged) unless ``overwrite``, so a run killed during
    its second variant resumes there; when every variant is complete, the run is refused instead.

    Args:
        gt_path (str): GT LMDB or folder.
        out_dir (str): where the LMDBs go.
        variants (list[Variant]): what to write (:func:`scale_variants`, :func:`detail_variants`).
        colour_align (str | None): see :func:`super_resolve_variant`.
        seed (int): base of the per-image seeds of stochastic enhancers.

    Returns:
        list[str]: the LMDB paths this rank completed (or found complete), in order.

    Raises:
        FileExistsError: if every variant is complete already (without ``overwrite``).
        ValueError: if a complete variant holds other keys than the GT (made from another GT).
    """
    source = input_source(gt_path)
    done = [] if overwrite else [v.name for v in variants if is_complete(source_path(out_dir, v.name))]
    if done and len(done) == len(variants):
        raise FileExistsError(f'output already exists and is complete: '
                              f'{", ".join(source_path(out_dir, name) for name in done)} (pass --overwrite to replace '
                              f'{"it" if len(done) == 1 else "them"})')
    for name in done:
        mismatch = describe_key_mismatch(source.keys, ImageSource(source_path(out_dir, name)).keys, f'GT {gt_path}',
                                         source_path(out_dir, name))
        if mismatch:
            raise ValueError(f'{source_path(out_dir, name)} is complete but was not made from this GT ({mismatch}); '
                             'pass --overwrite to make it again')
        get_root_logger().info(f'{name}: already complete, skipped: {source_path(out_dir, name)}')
    paths = []
    for variant in variants:
        if variant.name in done:
            paths.append(source_path(out_dir, variant.name))
            continue

        def load(key, variant=variant):
            gt = image_to_tensor(source.read(key), device)
            # A stochastic enhancer (a diffusion pipeline) draws from torch's global generator: seeding it per key
            # and variant makes the output independent of sharding, resuming and processing order.
            torch.manual_seed(key_seed(seed, f'{key}/{variant.name}'))
            return tensor_to_image(super_resolve_variant(gt, variant.upscale, variant.enhancer, colour_align))

        paths.append(write_sharded(source_path(out_dir, variant.name), source.keys, load, rank, world_size,
                                   overwrite, desc=variant.name, fingerprint=source.fingerprint))
    return paths


def write_variants(gt_path, out_dir, scales, enhancer, colour_align=None, overwrite=False, device='cpu', rank=None,
                   world_size=None, seed=0, at_gt_size=False, name=DEFAULT_VARIANT_NAME):
    """Write ``OUT_DIR/sr_x<s>.lmdb`` for each scale: :func:`write_sources` of :func:`scale_variants`.

    Returns:
        list[str]: the LMDB paths this rank completed, in scale order.
    """
    return write_sources(gt_path, out_dir, scale_variants(scales, enhancer, at_gt_size, name), colour_align,
                         overwrite, device, rank, world_size, seed)


def merge_sources(out_dir, names, overwrite=False):
    """Merge the shards of every ``OUT_DIR/<name>.lmdb`` written by several ranks."""
    return [merge_shards(source_path(out_dir, name), overwrite=overwrite) for name in names]


def write_variants_preview(gt_path, out_dir, names, path, num_keys=4):
    """A figure of the first ``num_keys`` images: GT | each variant, whole and centre-zoomed.

    Returns:
        str: ``path``.
    """
    sources = [('GT', ImageSource(gt_path))] + [(name, ImageSource(source_path(out_dir, name))) for name in names]
    return write_sources_preview(sources, path, num_keys)


def preview_path(out_dir, name=DEFAULT_VARIANT_NAME, detail_sweep=False):
    """``OUT_DIR/preview.png`` for the default names, ``preview_<name without {scale}>.png`` for a
    ``--variant-name``, ``preview_detail.png`` for a ``--detail-sweep``, so runs into one folder keep their figures."""
    if detail_sweep:
        return osp.join(out_dir, 'preview_detail.png')
    if name == DEFAULT_VARIANT_NAME:
        return osp.join(out_dir, 'preview.png')
    return osp.join(out_dir, f"preview_{name.replace('{scale}', '')}.png")


def build_enhancer(enhancer_opt=None, enhancer_weights=None, diffusers_pipeline=None, pipeline_kwargs=None, tile=0,
                   device='cpu'):
    """The enhancer from local files: a BasicSR arch (YAML + weights) or a diffusers pipeline folder, exactly one.

    Args:
        enhancer_opt (str | None): YAML with a BasicSR network mapping (or a ``network_g`` entry).
        enhancer_weights (str | None): its checkpoint (None for a network without parameters).
        diffusers_pipeline (str | None): a folder written by ``pipe.save_pretrained``.
        pipeline_kwargs (dict | None): extra call arguments of the pipeline.
        tile (int): tile size for the arch enhancer (0: whole image).
        device (str | torch.device): where it runs.

    Returns:
        callable: Tensor[1,3,H,W] in [0,1] -> Tensor[1,3,H',W'] in [0,1].
    """
    if bool(enhancer_opt) == bool(diffusers_pipeline):
        raise ValueError('give exactly one enhancer: --enhancer-opt (+ --enhancer-weights unless it has no '
                         'parameters), --diffusers-pipeline, or --detail-sweep')
    device = torch.device(device)
    if diffusers_pipeline:
        return diffusers_enhancer(diffusers_pipeline, device, pipeline_kwargs)
    network = load_frozen_network(enhancer_opt, enhancer_weights, device, '--enhancer-opt', '--enhancer-weights')
    return arch_enhancer(network, tile=tile)


def super_resolve_gt(gt_path, out_dir, scales=None, enhancer=None, colour_align=None, overwrite=False, device='cpu',
                     rank=None, world_size=None, seed=0, merge=False, preview=4, at_gt_size=False,
                     name=DEFAULT_VARIANT_NAME, detail_sweep=None, tile=0):
    """``gtplus super-resolve-gt``: write (or, with ``merge``, join the shards of) every variant LMDB, then the
    preview figure once every variant is complete.

    Args:
        gt_path (str): GT LMDB or folder.
        out_dir (str): where the LMDBs and the preview go.
        scales (list[int] | None): upsampling factors, each >= 1 (default 2, 3, 4). A xs variant runs the
            enhancer on s²·H·W pixels.
        enhancer (callable | None): see :func:`build_enhancer`; not needed with ``merge`` or ``detail_sweep``.
        colour_align, overwrite, device, rank, world_size, seed: see :func:`write_sources`.
        merge (bool): merge the shards written by all ranks instead of writing.
        preview (int): images in the preview figure (0: none); see :func:`preview_path`.
        at_gt_size (bool): the enhancer sees the GT itself (one scale, which only names the output).
        name (str | None): output name template, ``{scale}`` replaced (None: ``sr_x{scale}``).
        detail_sweep (list[str | dict] | None): instead of ``enhancer``: training-free detail enhancers run on the
            GT itself, one LMDB each (:func:`detail_options`); excludes scales, at_gt_size and name.
        tile (int): tile size of the detail sweep's enhancers (0: whole image).

    Returns:
        list[str]: the variant LMDBs (complete, or this rank's shards) and the preview, if written.
    """
    name = name or DEFAULT_VARIANT_NAME
    if detail_sweep:
        if enhancer is not None or scales or at_gt_size or name != DEFAULT_VARIANT_NAME:
            raise ValueError('--detail-sweep runs each detail enhancer on the GT itself and names its output: leave '
                             'out --scales, --at-gt-size, --variant-name and the other enhancers')
        variants = detail_variants(detail_sweep, tile, device)
    else:
        variants = scale_variants(scales or DEFAULT_SCALES, enhancer, at_gt_size, name)
    names = [v.name for v in variants]
    if merge:
        merge_sources(out_dir, names, overwrite)
        written = [source_path(out_dir, n) for n in names]
    else:
        if not detail_sweep and enhancer is None:
            raise ValueError('super_resolve_gt needs an enhancer (see build_enhancer) or a detail_sweep')
        written = write_sources(gt_path, out_dir, variants, colour_align, overwrite, device, rank, world_size, seed)
    if all(is_complete(source_path(out_dir, n)) for n in names) and preview > 0:
        # Sharded ranks get here only after --merge: the figure needs every image.
        written.append(write_variants_preview(gt_path, out_dir, names,
                                              preview_path(out_dir, name, bool(detail_sweep)), preview))
    return written
