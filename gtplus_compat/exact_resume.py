"""Exact resume for basicsr's training loop: a resumed run trains on the same batches, with the same random
augmentations and the same random states as an uninterrupted run, so its weights are equal bit for bit.

basicsr 1.4.2 resumes at the saved iteration, but it starts the saved epoch again from its first batch, and the new
process keeps the random states that ``manual_seed`` gave it. gtplus writes an ``exact_resume`` entry into each
training state. The prefetcher of basicsr's loop (``CPUPrefetcher`` / ``CUDAPrefetcher``, patched in place) fills
it in:

- ``batches``: the batches of the saved epoch that the model has trained on. ``batches_per_epoch`` lets a resume
  detect a changed loader (batch size, dataset).
- ``epoch_start_rng``: the random states (python ``random``, numpy's global state, torch CPU and, when used, CUDA)
  just before the epoch's DataLoader iterator was created. Creating the iterator draws the workers' base seed from
  torch's generator.
- ``rng``: the random states at the checkpoint, after the optimisation step of that iteration.
- ``rng_before_pending`` (CUDAPrefetcher only): the states before it loaded the batch that it holds in advance.

The first ``reset()`` of a resumed run restores ``epoch_start_rng``, creates the iterator and skips ``batches``
batches, then restores ``rng``. With workers, the skipped batches are loaded and dropped: each worker's random
state lives in the worker process, where no checkpoint can reach it, so only replaying its batches advances it as
before. Without workers, only the sampler's indices are advanced: augmentations then draw from the main process's
states, which are restored afterwards anyway. At an epoch boundary every batch is skipped, so basicsr's loop moves
on to the next epoch.

basicsr validates right after a checkpoint at the same iteration. Validation uses random numbers (each DataLoader
iterator draws a seed, and a model may sample), and a resumed run does not repeat it. So the prefetcher restores
the checkpoint's states before it loads the next batch: validation after a checkpoint cannot change the training.

Limits (not exact, or exact only where noted):
- Several processes (DDP): basicsr writes the training state on rank 0 only. Every rank skips the same number of
  batches (``EnlargedSampler`` gives each rank a fixed order per epoch), but only rank 0 restores random states,
  because rank 0's states on the other ranks would make their random streams copies of rank 0's. The resume is
  exact for a single process only.
- ``persistent_workers: true`` with workers: the workers carry their random states from epoch to epoch, which a new
  process cannot rebuild. Logged as a warning.
- ``prefetch_mode: cpu`` without workers loads batches in a background thread that races with the model for the
  main process's random states, so not even an uninterrupted run repeats there.
- Random state that lives elsewhere (a model's own ``torch.Generator``, nondeterministic GPU kernels) is not saved.
- A training state written before this entry existed still loads: the run resumes as basicsr does, with a warning.
"""
import random
import weakref

STATE_KEY = 'exact_resume'

# The LoaderPosition of the training loop running in this process (basicsr runs one loop per process). A weak
# reference, so a finished loop's position is never written into a later, unrelated training state.
_ACTIVE = {'position': None}
# The exact_resume entry of the state that ``resume_training`` just loaded, kept for the next prefetcher that basicsr
# builds (``train_pipeline`` builds it right after resuming the model); ``False`` for a state without the entry.
_PENDING = {'resume': None}


def capture_rng_state():
    """The process's random states, in types that ``torch.load(weights_only=True)`` accepts.

    Returns:
        dict: ``python`` (``random.getstate()``: nested tuples of ints), ``numpy`` (the MT19937 key as an int64
        tensor of 624 values, plus position and cached Gaussian), ``torch`` (CPU generator state, uint8 tensor) and,
        when CUDA has been initialised, ``cuda`` (one uint8 tensor per device).
    """
    import numpy as np
    import torch
    numpy_state = np.random.get_state(legacy=False)
    state = {
        'python': random.getstate(),
        'numpy': {'key': torch.from_numpy(numpy_state['state']['key'].astype(np.int64)),
                  'pos': int(numpy_state['state']['pos']), 'has_gauss': int(numpy_state['has_gauss']),
                  'gauss': float(numpy_state['gauss'])},
        'torch': torch.get_rng_state(),
    }
    # Only when already initialised: asking an unused CUDA for its states would initialise it (and a CPU run on a
    # machine with a GPU would then restore CUDA states it never used, which is harmless but costs a context).
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state):
    """Set the process's random states.

    Args:
        state (dict): :func:`capture_rng_state`'s dict, possibly loaded back with its tensors on a GPU.

    Returns:
        str | None: why the CUDA states were not restored (device count differs, or no CUDA), else None.
    """
    import numpy as np
    import torch
    version, internal, gauss_next = state['python']
    random.setstate((version, tuple(internal), gauss_next))
    numpy_state = state['numpy']
    np.random.set_state({'bit_generator': 'MT19937',
                         'state': {'key': numpy_state['key'].cpu().numpy().astype(np.uint32),
                                   'pos': numpy_state['pos']},
                         'has_gauss': numpy_state['has_gauss'], 'gauss': numpy_state['gauss']})
    # load_resume_state maps every tensor to the training GPU; generator states must be CPU byte tensors.
    torch.set_rng_state(state['torch'].cpu())
    cuda = state.get('cuda')
    if cuda is None:
        return None
    if not torch.cuda.is_available() or torch.cuda.device_count() != len(cuda):
        return f'the checkpoint has CUDA random states for {len(cuda)} device(s), this process sees ' \
               f'{torch.cuda.device_count() if torch.cuda.is_available() else 0}'
    torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    return None


def _logger():
    from basicsr.utils import get_root_logger
    return get_root_logger()


def _world():
    """(rank, world_size) of this process."""
    from basicsr.utils.dist_util import get_dist_info
    return get_dist_info()


class LoaderPosition:
    """Where a prefetcher is in the current epoch, and the random states needed to come back to it.

    Args:
        loader (torch.utils.data.DataLoader): the prefetcher's training loader (``ori_loader``).
        resume (dict | bool | None): the ``exact_resume`` entry of the state being resumed, False for a state
            without one (resume as basicsr does), None for a fresh start.
    """

    def __init__(self, loader, resume=None):
        self.loader = loader
        self.resume = resume
        self.epoch = None
        self.epoch_start_rng = None
        self.batches = 0
        self.rng_before_pending = None
        # The checkpoint's random states, restored before the next batch is loaded (undoes validation's use).
        self.rollback = None

    def start_epoch(self):
        """Called by ``reset()`` before it creates the epoch's iterator.

        Returns:
            dict | None: the resume entry to apply to this epoch's new iterator (first reset of a resumed run).
        """
        resume, self.resume = self.resume, None
        self.epoch = getattr(getattr(self.loader, 'sampler', None), 'epoch', None)
        self.batches = 0
        self.rollback = None
        if resume:
            resume = self._usable(resume)
        if resume and resume['restore_rng']:
            restore_rng_state(resume['epoch_start_rng'])
        self.epoch_start_rng = capture_rng_state()
        return resume or None

    def _usable(self, resume):
        """The resume entry with ``restore_rng`` set, or None (with a warning) if it does not fit this loader."""
        logger = _logger()
        batches_per_epoch = len(self.loader)
        if resume['batches_per_epoch'] != batches_per_epoch:
            logger.warning(f"Resume is not exact: the training state's epoch had {resume['batches_per_epoch']} "
                           f'batches, the loader now has {batches_per_epoch} (batch size or data changed); the '
                           'epoch starts again from its first batch.')
            return None
        if getattr(self.loader, 'persistent_workers', False) and getattr(self.loader, 'num_workers', 0) > 0:
            logger.warning('Resume is not exact: persistent_workers keeps worker random states across epochs, '
                           'which a new process cannot rebuild.')
        rank, world_size = _world()
        if world_size > 1 and rank == 0:
            logger.warning(f'Resume is exact for a single process only: the {world_size} ranks skip the batches '
                           "already used, but only rank 0 gets its saved random states back.")
        return dict(resume, restore_rng=rank == 0)

    def skip(self, iterator, count):
        """Advance a new epoch iterator past ``count`` batches.

        Without workers only the sampler advances (no loading: the main process's random states are restored
        afterwards, so the augmentations the loading would draw do not matter). With workers the batches are
        loaded and dropped, so every worker's random state advances as in the interrupted run.
        """
        # _next_index is private to torch's iterators (stable across torch 1.x and 2.x); without it, load instead.
        if getattr(self.loader, 'num_workers', 0) == 0 and hasattr(iterator, '_next_index'):
            for _ in range(count):
                iterator._next_index()
        else:
            for _ in range(count):
                next(iterator)
        self.batches = count

    def finish_resume(self, resume):
        """Restore the checkpoint's random states once the resumed iterator is positioned."""
        if resume['restore_rng']:
            problem = restore_rng_state(resume['rng'])
            if problem:
                _logger().warning(f'Resume is not exact: {problem}.')
        _logger().info(f"Exact resume: skipped {resume['batches']} of {len(self.loader)} batches of epoch "
                       f'{self.epoch} and restored the random states of the training state.')

    def before_load(self):
        """Called before each batch is loaded: undo any random numbers used since the last checkpoint."""
        if self.rollback is not None:
            restore_rng_state(self.rollback)
            self.rollback = None

    def checkpoint(self, epoch):
        """The ``exact_resume`` entry for a checkpoint of ``epoch`` (None if this position is of another epoch)."""
        if self.epoch_start_rng is None or (self.epoch is not None and self.epoch != epoch):
            return None
        rng = capture_rng_state()
        self.rollback = rng
        return {'batches': self.batches, 'batches_per_epoch': len(self.loader),
                'epoch_start_rng': self.epoch_start_rng, 'rng': rng, 'rng_before_pending': self.rng_before_pending}


def checkpoint_entry(epoch):
    """The ``exact_resume`` entry of a training state saved now, in ``epoch``; None outside a training loop."""
    position = _ACTIVE['position']() if _ACTIVE['position'] is not None else None
    return position.checkpoint(epoch) if position is not None else None


def expect_resume(resume_state):
    """Keep ``resume_state``'s entry for the next prefetcher; warn when the state predates exact resume."""
    entry = resume_state.get(STATE_KEY)
    if entry is None:
        _logger().warning(f"Resume is not exact: training state of iter {resume_state.get('iter')} has no "
                          f"'{STATE_KEY}' entry (written before gtplus saved data-loader positions and random "
                          'states); the saved epoch starts again from its first batch, with fresh random states.')
    _PENDING['resume'] = entry if entry is not None else False


def _position(prefetcher):
    """The prefetcher's LoaderPosition, made (and made the active one) on first use."""
    position = getattr(prefetcher, '_gtplus_position', None)
    if position is None:
        position = LoaderPosition(prefetcher.ori_loader, _PENDING['resume'])
        _PENDING['resume'] = None
        prefetcher._gtplus_position = position
        _ACTIVE['position'] = weakref.ref(position)
    return position


def prefetcher_methods(original, loads_ahead):
    """Replacements for a basicsr prefetcher's methods; ``original`` maps each name to basicsr's method.

    Args:
        original (dict): basicsr's ``__init__``, ``next``, ``reset`` (and ``preload``) of the class.
        loads_ahead (bool): True for CUDAPrefetcher, which loads the next batch (``preload``) before the model has
            trained on the current one. Without workers that batch's augmentations draw from the main process's
            random states of that moment, so they are kept too, and restored before the batch is loaded again.

    Returns:
        dict: name -> method, to set on the class.
    """

    def __init__(self, loader, *args):
        original['__init__'](self, loader, *args)
        _position(self)

    def reset(self):
        position = _position(self)
        resume = position.start_epoch()
        self.loader = iter(self.ori_loader)
        if resume:
            position.skip(self.loader, resume['batches'])
        if loads_ahead:
            if resume and resume['restore_rng'] and resume.get('rng_before_pending') is not None:
                restore_rng_state(resume['rng_before_pending'])
            self.preload()
        if resume:
            position.finish_resume(resume)

    def next(self):
        position = _position(self)
        position.before_load()
        batch = original['next'](self)
        if batch is not None:
            position.batches += 1
        return batch

    methods = {'__init__': __init__, 'reset': reset, 'next': next}
    if loads_ahead:

        def preload(self):
            _position(self).rng_before_pending = capture_rng_state()
            return original['preload'](self)

        methods['preload'] = preload
    return methods
