"""Pieces every gtplus training model shares with basicsr's SRModel: the EMA copy of net_g and the net_g checkpoint
(one home; SRModel inlines both in methods that also build its losses, so they cannot be called alone)."""
from basicsr.archs import build_network


def build_ema(model, decay):
    """SRModel's EMA set-up: ``model.net_g_ema``, a copy of ``network_g`` in eval mode that starts from the
    ``params_ema`` of ``path.pretrain_network_g`` when given, else from ``model.net_g``'s current weights (so build
    it after any weights were copied into net_g). Nothing is built for ``decay`` 0.

    Args:
        model (BaseModel): the model (reads ``opt``, ``device``, ``net_g``).
        decay (float): ``train.ema_decay`` in [0, 1), already checked.
    """
    if decay <= 0:
        return
    model.net_g_ema = build_network(model.opt['network_g']).to(model.device)
    load_path = model.opt['path'].get('pretrain_network_g')
    if load_path is not None:
        model.load_network(model.net_g_ema, load_path, model.opt['path'].get('strict_load_g', True), 'params_ema')
    else:
        model.model_ema(0)
    model.net_g_ema.eval()


def save_generator(model, current_iter):
    """``net_g_<iter>.pth`` with ``params`` and, when the model keeps an EMA copy, ``params_ema`` (SRModel's
    layout, which basicsr's test and resume read)."""
    if getattr(model, 'net_g_ema', None) is not None:
        model.save_network([model.net_g, model.net_g_ema], 'net_g', current_iter, param_key=['params', 'params_ema'])
    else:
        model.save_network(model.net_g, 'net_g', current_iter)


def add_perceptual(criterion, output, gt, total, loss_dict):
    """``total`` plus basicsr's perceptual and style terms of ``output`` against ``gt`` (each logged under
    ``l_percep`` / ``l_style`` when the loss returns it; ``PerceptualLoss`` returns None for a weight of 0).

    Args:
        criterion (nn.Module | None): a basicsr loss returning ``(percep, style)``; None adds nothing.
        output, gt (Tensor): [B,3,H,W] RGB in [0,1].
        total (Tensor): the loss so far (0-dim).
        loss_dict (OrderedDict): where the terms are logged.

    Returns:
        Tensor: the new total.
    """
    if criterion is None:
        return total
    l_percep, l_style = criterion(output, gt)
    for name, value in (('l_percep', l_percep), ('l_style', l_style)):
        if value is not None:
            total = total + value
            loss_dict[name] = value
    return total


def add_quality(judge, weight, output, total, loss_dict):
    """``total`` plus the NR-IQA quality term ``l_quality = -weight * reward`` of ``output``, clamped to [0,1] first
    (pyiqa always receives [0,1]; IQPIR's official code fed it [-1,1] or raw outputs); the judge's raw scores are
    logged under their metric names.

    Args:
        judge (nn.Module): returns ``(reward, {name: raw score})`` (``GTPlusQualityReward``) or a bare reward;
            larger is better.
        weight (float): ``train.quality_loss_weight``.
        output (Tensor): [B,3,H,W] RGB, nominally [0,1].
        total (Tensor): the loss so far (0-dim).
        loss_dict (OrderedDict): where the terms are logged.

    Returns:
        Tensor: the new total.
    """
    result = judge(output.clamp(0, 1))
    reward, raw = result if isinstance(result, tuple) else (result, {})
    l_quality = -weight * reward
    loss_dict['l_quality'] = l_quality
    loss_dict.update((name, value.detach()) for name, value in raw.items())
    return total + l_quality
