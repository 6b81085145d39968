"""Run-time fixes for basicsr 1.4.2. Each ``patch_*`` function replaces one basicsr attribute and is idempotent.

The fixes, and what breaks without them:

- ``patch_registry_lookup``: an unknown name raised a bare KeyError (after a ``print``); now the error names the
  registry and the closest registered names.
- ``patch_jpeg_quality``: ``add_jpg_compression`` passed a float quality to ``cv2.imencode``; OpenCV 5 rejects it.
- ``patch_init_dist``: ``init_dist`` divided by ``torch.cuda.device_count()`` and forced NCCL; a CPU-only
  ``torchrun`` crashed. Now CPU ranks use gloo and GPU ranks keep NCCL.
- ``patch_model_to_device``: DDP was built with ``device_ids=[torch.cuda.current_device()]`` even on CPU.
- ``patch_resume``: ``load_resume_state`` called ``torch.cuda.current_device()`` and unpickled with full pickle;
  resumed pretrain paths were redirected even for frozen networks that are never saved; training states were
  written in place, so a kill during the write left a corrupt latest state that ``--auto_resume`` then picked.
- ``patch_exact_resume``: a resumed run started the saved epoch again from its first batch, with fresh random
  states, so its weights drifted from an uninterrupted run's; now training states carry the data-loader position
  and the random states, and the prefetchers skip what was used (:mod:`gtplus_compat.exact_resume`).
- ``patch_safe_yaml``: option files were read with ``yaml.Loader``, which can construct arbitrary objects.
- ``patch_optimizers``: ``get_optimizer`` only knew Adam; any ``torch.optim`` class (AdamW, SGD, ...) now works.
- ``patch_vgg_weights``: a missing ``VGG_PRETRAIN_PATH`` made the VGG perceptual loss download weights (which
  hangs on a closed network) through a ``pretrained=`` argument current torchvision no longer takes; now a missing
  file is an immediate error saying where to put it, and a present one loads with ``weights_only=True``.
- ``patch_diffjpeg_contiguous``: under torch 2.x ``DiffJPEG`` returned a tensor with channels-last strides, and
  ``filter2D`` (which calls ``.view`` on its padded input) then failed on it: ``RealESRGANModel.feed_data`` crashed
  at its first blur after a JPEG step. Now ``DiffJPEG.forward`` returns a contiguous tensor (same values).
"""
import difflib
import os
import os.path as osp

from gtplus_compat import exact_resume

_PATCHED = set()
# (owner, attribute) -> the basicsr original, so tests can show each fix is needed.
ORIGINALS = {}


def _replace(owner, attribute, replacement):
    """Set ``owner.attribute = replacement``, remembering basicsr's original the first time."""
    key = (getattr(owner, '__name__', repr(owner)), attribute)
    ORIGINALS.setdefault(key, getattr(owner, attribute))
    setattr(owner, attribute, replacement)


def _once(func):
    """Run a patch function only once per process."""

    def wrapper():
        if func.__name__ in _PATCHED:
            return
        func()
        _PATCHED.add(func.__name__)

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper


def closest_names(name, candidates, limit=5):
    """Registered names closest to ``name``: fuzzy matches first, then case-insensitive substrings."""
    candidates = sorted(candidates)
    close = difflib.get_close_matches(name, candidates, n=limit, cutoff=0.5)
    lowered = name.lower()
    close += [c for c in candidates if (lowered in c.lower() or c.lower() in lowered) and c not in close]
    return close[:limit]


def unknown_name_message(registry_name, name, candidates):
    """The message for a name missing from a registry; shared by the registry patch and the YAML checks."""
    close = closest_names(str(name), candidates)
    hint = f' Closest registered names: {", ".join(close)}.' if close else ''
    return (f"No object named '{name}' in basicsr's {registry_name.upper()} registry ({len(candidates)} "
            f'registered).{hint} Did you import the package that registers it (e.g. gtplus_arch)?')


@_once
def patch_registry_lookup():
    from basicsr.utils.registry import Registry

    def get(self, name, suffix='basicsr'):
        found = self._obj_map.get(name)
        if found is None:
            found = self._obj_map.get(f'{name}_{suffix}')
        if found is None:
            raise KeyError(unknown_name_message(self._name, name, list(self._obj_map)))
        return found

    _replace(Registry, 'get', get)


@_once
def patch_jpeg_quality():
    import cv2
    import numpy as np
    from basicsr.data import degradations

    def add_jpg_compression(img, quality=90):
        """Add JPEG artifacts. img: (h, w, c) float32 in [0, 1]; quality is rounded to an int for OpenCV 5."""
        img = np.clip(img, 0, 1)
        encode_param = [int(cv2.IMWRITE_JPEG_QUALITY), int(round(float(quality)))]
        _, encoded = cv2.imencode('.jpg', img * 255., encode_param)
        return np.float32(cv2.imdecode(encoded, 1)) / 255.

    # random_add_jpg_compression looks the function up in the module globals, so it picks this up too.
    _replace(degradations, 'add_jpg_compression', add_jpg_compression)


def init_dist(launcher, backend=None, **kwargs):
    """CUDA-free replacement for ``basicsr.utils.dist_util.init_dist``.

    Args:
        launcher (str): 'pytorch' (torchrun environment) or 'slurm'.
        backend (str | None): None picks 'nccl' when CUDA is available, else 'gloo'.
    """
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    from basicsr.utils import dist_util

    if dist.is_initialized():
        return
    if mp.get_start_method(allow_none=True) is None:
        mp.set_start_method('spawn')
    use_cuda = torch.cuda.is_available() and torch.cuda.device_count() > 0
    backend = backend or ('nccl' if use_cuda else 'gloo')
    if launcher == 'pytorch':
        if use_cuda:
            local_rank = int(os.environ.get('LOCAL_RANK', os.environ.get('RANK', 0)))
            torch.cuda.set_device(local_rank % torch.cuda.device_count())
        dist.init_process_group(backend=backend, **kwargs)
    elif launcher == 'slurm':
        if not use_cuda:
            raise RuntimeError('The slurm launcher in basicsr needs GPUs; on CPU use torchrun --launcher pytorch.')
        dist_util._init_dist_slurm(backend, **kwargs)
    else:
        raise ValueError(f'Invalid launcher type: {launcher}. Use none, pytorch or slurm.')


@_once
def patch_init_dist():
    from basicsr.utils import dist_util, options
    _replace(dist_util, 'init_dist', init_dist)
    _replace(options, 'init_dist', init_dist)


@_once
def patch_model_to_device():
    import torch
    from basicsr.models.base_model import BaseModel
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    def model_to_device(self, net):
        """Move ``net`` to ``self.device``; wrap in DDP (any device) or DataParallel (several GPUs)."""
        net = net.to(self.device)
        if self.opt['dist']:
            find_unused = self.opt.get('find_unused_parameters', False)
            device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
            net = DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=find_unused)
        elif self.opt['num_gpu'] > 1:
            net = DataParallel(net)
        return net

    _replace(BaseModel, 'model_to_device', model_to_device)


def latest_training_state(states_dir):
    """Path of the highest-iteration ``<iter>.state`` file in ``states_dir``, or None."""
    if not osp.isdir(states_dir):
        return None
    iters = [int(name[:-len('.state')]) for name in os.listdir(states_dir)
             if name.endswith('.state') and name[:-len('.state')].isdigit()]
    return osp.join(states_dir, f'{max(iters)}.state') if iters else None


def redirect_pretrain_paths(opt, resume_iter):
    """Point each trained network's pretrain path at its checkpoint of ``resume_iter``.

    Unlike basicsr's ``check_resume``, a network with no saved checkpoint (a frozen restorer, a frozen CFMG) keeps
    the path the user gave, instead of being sent to a file that was never written. It logs nothing: basicsr's
    root logger must first be created by the training loop with its log file (the new paths appear in the logged
    options).
    """
    ignored = opt['path'].get('ignore_resume_networks') or []
    for network in [key for key in opt if key.startswith('network_')]:
        basename = network[len('network_'):]
        saved = osp.join(opt['path']['models'], f'net_{basename}_{resume_iter}.pth')
        if network not in ignored and osp.isfile(saved):
            opt['path'][f'pretrain_{network}'] = saved
            # A saved trained network resumes from its raw weights (its EMA copy loads 'params_ema' itself), as
            # basicsr does; a frozen network's key is left alone: it was never saved, and rewriting it would load
            # the non-EMA weights of its original checkpoint after a resume (IQPIR's stage-I network_vqgan).
            if opt['path'].get(f'param_key_{basename}') == 'params_ema':
                opt['path'][f'param_key_{basename}'] = 'params'


def resume_map_location(opt):
    """Where resumed tensors go: the current GPU when training on GPUs, else the CPU."""
    import torch
    if opt.get('num_gpu', 0) != 0 and torch.cuda.is_available():
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')


def load_resume_state(opt):
    """CPU-safe replacement for ``basicsr.train.load_resume_state``.

    Args:
        opt (dict): Parsed options; reads ``auto_resume``, ``path.resume_state`` and ``path.training_states``.

    Returns:
        dict | None: The training state (epoch, iter, optimizers, schedulers), or None for a fresh start.
    """
    import torch
    if opt.get('auto_resume'):
        states_dir = opt['path'].get('training_states') or osp.join('experiments', opt['name'], 'training_states')
        state_path = latest_training_state(states_dir)
        if state_path is not None:
            opt['path']['resume_state'] = state_path
    else:
        state_path = opt['path'].get('resume_state')
    if not state_path:
        return None
    if not osp.isfile(state_path):
        raise FileNotFoundError(f'path.resume_state points to {state_path}, which does not exist.')
    state = torch.load(state_path, map_location=resume_map_location(opt), weights_only=True)
    redirect_pretrain_paths(opt, state['iter'])
    return state


def save_training_state(self, epoch, current_iter):
    """Atomic replacement for ``BaseModel.save_training_state``: write ``<iter>.state.tmp``, then rename.

    An interrupted write therefore never leaves a truncated ``.state`` for ``--auto_resume`` to pick up. Inside
    basicsr's training loop the state also carries the ``exact_resume`` entry (data-loader position, random states).
    """
    import torch
    from basicsr.utils.dist_util import get_dist_info
    if current_iter == -1:
        return
    # Before the rank check: every rank restores its checkpoint random states after validation (see exact_resume).
    exact_entry = exact_resume.checkpoint_entry(epoch)
    if get_dist_info()[0] != 0:
        return
    state = {'epoch': epoch, 'iter': current_iter, 'optimizers': [o.state_dict() for o in self.optimizers],
             'schedulers': [s.state_dict() for s in self.schedulers]}
    if exact_entry is not None:
        state[exact_resume.STATE_KEY] = exact_entry
    save_path = osp.join(self.opt['path']['training_states'], f'{current_iter}.state')
    tmp_path = save_path + '.tmp'
    torch.save(state, tmp_path)
    os.replace(tmp_path, save_path)


@_once
def patch_exact_resume():
    """Prefetchers that record and skip the epoch's used batches; ``resume_training`` that hands them the entry.

    Patched in place on basicsr's classes, not by replacing ``basicsr.train.CPUPrefetcher``: ``python
    basicsr/train.py`` runs as ``__main__`` and bound the class names when it was imported, before gtplus was.
    """
    from basicsr.data.prefetch_dataloader import CPUPrefetcher, CUDAPrefetcher
    from basicsr.models.base_model import BaseModel
    for prefetcher, loads_ahead in ((CPUPrefetcher, False), (CUDAPrefetcher, True)):
        for name, method in exact_resume.prefetcher_methods(dict(vars(prefetcher)), loads_ahead).items():
            _replace(prefetcher, name, method)
    resume_training = BaseModel.resume_training

    def resume_training_exactly(self, resume_state):
        """basicsr's ``resume_training``, then keep the state's ``exact_resume`` entry for the loop's prefetcher."""
        resume_training(self, resume_state)
        exact_resume.expect_resume(resume_state)

    _replace(BaseModel, 'resume_training', resume_training_exactly)


@_once
def patch_resume():
    import basicsr.train
    from basicsr.models.base_model import BaseModel
    _replace(basicsr.train, 'load_resume_state', load_resume_state)
    _replace(BaseModel, 'save_training_state', save_training_state)


def safe_ordered_loader():
    """A ``yaml.SafeLoader`` subclass that builds mappings as OrderedDict (basicsr keeps option order)."""
    from collections import OrderedDict

    import yaml

    class SafeOrderedLoader(yaml.SafeLoader):
        pass

    def construct_ordered(loader, node):
        return OrderedDict(loader.construct_pairs(node))

    SafeOrderedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_ordered)
    return SafeOrderedLoader


@_once
def patch_safe_yaml():
    from basicsr.utils import options
    unsafe_ordered_yaml = ORIGINALS.get(('basicsr.utils.options', 'ordered_yaml'), options.ordered_yaml)

    def ordered_yaml():
        """basicsr's (Loader, Dumper) pair, with the loader made safe."""
        return safe_ordered_loader(), unsafe_ordered_yaml()[1]

    _replace(options, 'ordered_yaml', ordered_yaml)


def torch_optimizer_class(name):
    """The ``torch.optim`` optimizer class called ``name``; ValueError listing the choices otherwise."""
    import torch
    optimizer_class = getattr(torch.optim, str(name), None)
    if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, torch.optim.Optimizer)):
        choices = sorted(n for n, c in vars(torch.optim).items()
                         if isinstance(c, type) and issubclass(c, torch.optim.Optimizer) and n != 'Optimizer')
        raise ValueError(f"Unknown optimizer type '{name}'. Closest: {', '.join(closest_names(str(name), choices))}; "
                         f"choices: {', '.join(choices)}.")
    return optimizer_class


@_once
def patch_optimizers():
    from basicsr.models.base_model import BaseModel

    def get_optimizer(self, optim_type, params, lr, **kwargs):
        """Build any ``torch.optim`` optimizer by class name (basicsr 1.4.2 knew only Adam)."""
        return torch_optimizer_class(optim_type)(params, lr, **kwargs)

    _replace(BaseModel, 'get_optimizer', get_optimizer)


@_once
def patch_vgg_weights():
    from basicsr.archs import vgg_arch
    from torchvision.models import vgg as torchvision_vgg

    def vgg_builder(vgg_type):

        def build(pretrained=False, **kwargs):
            # basicsr asks for pretrained=True only after finding no file at VGG_PRETRAIN_PATH, i.e. it wants a
            # download: refuse at once, saying where the file goes. Otherwise it loads the file itself.
            if pretrained:
                raise FileNotFoundError(
                    f'The VGG perceptual loss needs ImageNet {vgg_type} weights and gtplus never downloads. Put '
                    f"torchvision's {vgg_type} state dict (e.g. vgg19-dcbb9e9d.pth) at "
                    f'{osp.abspath(vgg_arch.VGG_PRETRAIN_PATH)}, or set basicsr.archs.vgg_arch.VGG_PRETRAIN_PATH.')
            return getattr(torchvision_vgg, vgg_type)(weights=None, **kwargs)

        return build

    class NoDownloadVGGModule:
        """Stands in for ``torchvision.models.vgg`` inside basicsr's vgg_arch (``vgg19(pretrained=...)``)."""

        def __getattr__(self, name):
            return vgg_builder(name) if name.startswith('vgg') else getattr(torchvision_vgg, name)

    _replace(vgg_arch, 'vgg', NoDownloadVGGModule())


@_once
def patch_diffjpeg_contiguous():
    from basicsr.utils.diffjpeg import DiffJPEG
    forward = DiffJPEG.forward

    def contiguous_forward(self, x, quality):
        """basicsr's ``DiffJPEG.forward`` (x: [B,3,H,W] RGB in [0,1]; quality: a number or one per sample), its
        result made contiguous: its colour conversions permute to channels-last and back, and the strides stay
        channels-last, which ``.view`` in basicsr's ``filter2D`` cannot take."""
        return forward(self, x, quality).contiguous()

    _replace(DiffJPEG, 'forward', contiguous_forward)


def apply_basicsr_patches():
    """Apply every fix above (imports basicsr)."""
    patch_registry_lookup()
    patch_jpeg_quality()
    patch_init_dist()
    patch_model_to_device()
    patch_resume()
    patch_exact_resume()
    patch_safe_yaml()
    patch_optimizers()
    patch_vgg_weights()
    patch_diffjpeg_contiguous()
