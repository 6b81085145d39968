"""IQPIR: a dual-codebook VQGAN (common + HQ+), a quality-conditioned CodeFormer-style transformer, and the VQGAN
patch discriminator for stage I.

After "IQPIR: image-quality prior" (METHODS.md §2), whose official code, fengyang1399-pixel/IQPIR, is a fork of
sczhou/CodeFormer. The state-dict keys and shapes here are that code's (``basicsr/archs/vqgan_arch.py``:
``VQAutoEncoder`` with ``quantizer='dual_codebook'``; ``basicsr/archs/codeformer_arch.py``: ``CodeFormer``), so its
checkpoints load with ``strict=True`` when the networks are configured at the same size:

- ``encoder.blocks.N`` / ``generator.blocks.N``: CodeFormer's VQGAN ``Encoder`` / ``Generator`` as one
  ``nn.ModuleList`` each (convolutions, ``ResBlock`` with ``norm1 conv1 norm2 conv2 [conv_out]``, ``AttnBlock`` with
  ``norm q k v proj_out``, ``Downsample`` / ``Upsample`` with ``conv``, a final ``GroupNorm`` and conv);
- ``quantize.embedding.weight``: the common codebook; ``quantize_aesthetic.embedding.weight``: the HQ+ codebook
  (the official name: the paper's HQ+ codebook is called "aesthetic" in the code);
- :class:`IQPIRNet` adds ``position_emb`` [tokens, dim_embd], ``feat_emb`` (Linear emb_dim -> dim_embd),
  ``score_embed`` (``nn.Embedding(num_bins, tokens * emb_dim)``), ``ft_layers.N`` (``self_attn`` an
  ``nn.MultiheadAttention``, ``linear1``, ``linear2``, ``norm1``, ``norm2``) and ``idx_pred_layer`` (``0`` a
  LayerNorm, ``1`` a bias-free Linear dim_embd -> 2 * codebook_size whose outputs interleave the two code heads:
  output ``2k`` is code k of the HQ+ codebook, ``2k + 1`` code k of the common codebook, as the official
  ``logits.reshape(..., n, 2)`` reads them);
- :class:`GTPlusVQGANDiscriminator` is the official ``VQGANDiscriminator`` (``main.N``), renamed in the registry.

Differences from the official code:

- Images are RGB in [0,1] at the public boundary; the networks see ``2x - 1`` in [-1,1] (CodeFormer's training
  normalises with mean 0.5 and std 0.5) and outputs are mapped back with ``(y + 1) / 2``, not clamped.
- The score bin is ``floor(num_bins * s)`` clamped to ``num_bins - 1``: the official ``floor(10 * s)`` indexes an
  ``nn.Embedding(10, ...)`` out of range at s = 1.0. Scores outside [0,1] are an error.
- The official HQ+ codebook always has 1024 codes; here both codebooks have ``codebook_size``.
- Only the official ``quantize_fusion='add'`` is built (common + fuse_weight * HQ+); its ``'attention'`` fusion and
  the ``'adain'`` score embedding are not.
- CodeFormer's stage-III fusion blocks (``fuse_convs_dict``, used when ``w > 0``) are built only for loading: with
  ``connect_list: ['32', '64', '128', '256']`` (the official stage-II/III options) an official checkpoint that
  carries them loads strictly, but they stay frozen and unused (no stage III here).
- The straight-through decode also passes a gradient to the code logits (see :meth:`IQPIRNet.decode_logits`);
  ``official_straight_through: true`` keeps the official estimator, which reaches the latent only.
"""
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.nn import functional as F


def _group_norm(channels):
    # CodeFormer's normalisation: 32 groups, so every width here must be a multiple of 32.
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


def _to_unit(tensor):
    return (tensor + 1) / 2


class ResBlock(nn.Module):
    """GroupNorm, swish, 3x3 conv, twice, plus the input (through a 1x1 ``conv_out`` when the widths differ).

    Args:
        in_channels (int): input channels, a multiple of 32.
        out_channels (int): output channels, a multiple of 32.
    """

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.norm1 = _group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm2 = _group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.conv_out = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (x if self.conv_out is None else self.conv_out(x))


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions of a feature map, plus the input.

    Args:
        channels (int): channels, a multiple of 32.
    """

    def __init__(self, channels):
        super().__init__()
        self.norm = _group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        normed = self.norm(x)
        q = self.q(normed).reshape(b, c, h * w).transpose(1, 2)
        k = self.k(normed).reshape(b, c, h * w)
        v = self.v(normed).reshape(b, c, h * w)
        weights = torch.softmax(torch.bmm(q, k) * c ** -0.5, dim=2)  # [b, query, key]
        out = torch.bmm(v, weights.transpose(1, 2)).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Stride-2 3x3 conv after zero padding at the bottom/right only (CodeFormer's asymmetric padding)."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 2, 0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest x2 upsampling and a 3x3 conv."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode='nearest'))


class VQGANEncoder(nn.Module):
    """CodeFormer's VQGAN encoder: [B, 3, H, W] in [-1,1] -> [B, emb_dim, H / 2^(L-1), W / 2^(L-1)] latents.

    Args:
        nf (int): base width; level i has ``nf * ch_mult[i]`` channels.
        emb_dim (int): latent (code) dimension.
        ch_mult (sequence[int]): width multipliers, one level each; L = len(ch_mult).
        res_blocks (int): residual blocks per level.
        img_size (int): input size, used to place the attention blocks.
        attn_resolutions (sequence[int]): feature sizes after whose residual blocks an attention block follows.
    """

    def __init__(self, nf, emb_dim, ch_mult, res_blocks, img_size, attn_resolutions):
        super().__init__()
        blocks = [nn.Conv2d(3, nf, 3, 1, 1)]
        size, in_ch = img_size, nf
        for level, mult in enumerate(ch_mult):
            for _ in range(res_blocks):
                blocks.append(ResBlock(in_ch, nf * mult))
                in_ch = nf * mult
                if size in attn_resolutions:
                    blocks.append(AttnBlock(in_ch))
            if level != len(ch_mult) - 1:
                blocks.append(Downsample(in_ch))
                size //= 2
        blocks += [ResBlock(in_ch, in_ch), AttnBlock(in_ch), ResBlock(in_ch, in_ch), _group_norm(in_ch),
                   nn.Conv2d(in_ch, emb_dim, 3, 1, 1)]
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


class VQGANGenerator(nn.Module):
    """CodeFormer's VQGAN decoder (``Generator``): [B, emb_dim, h, w] latents -> [B, 3, H, W] in [-1,1] nominally.

    Args: as :class:`VQGANEncoder`.
    """

    def __init__(self, nf, emb_dim, ch_mult, res_blocks, img_size, attn_resolutions):
        super().__init__()
        in_ch = nf * ch_mult[-1]
        size = img_size // 2 ** (len(ch_mult) - 1)
        blocks = [nn.Conv2d(emb_dim, in_ch, 3, 1, 1), ResBlock(in_ch, in_ch), AttnBlock(in_ch), ResBlock(in_ch, in_ch)]
        for level in reversed(range(len(ch_mult))):
            for _ in range(res_blocks):
                blocks.append(ResBlock(in_ch, nf * ch_mult[level]))
                in_ch = nf * ch_mult[level]
                if size in attn_resolutions:
                    blocks.append(AttnBlock(in_ch))
            if level != 0:
                blocks.append(Upsample(in_ch))
                size *= 2
        blocks += [_group_norm(in_ch), nn.Conv2d(in_ch, 3, 3, 1, 1)]
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


class VectorQuantizer(nn.Module):
    """A codebook learned by gradient (``embedding.weight`` [codebook_size, emb_dim]), CodeFormer's nearest VQ.

    Args:
        codebook_size (int): number of codes.
        emb_dim (int): code dimension.
        beta (float): weight of the second term of the official codebook loss (see :meth:`forward`).
    """

    def __init__(self, codebook_size, emb_dim, beta=0.25):
        super().__init__()
        self.codebook_size = codebook_size
        self.emb_dim = emb_dim
        self.beta = beta
        self.embedding = nn.Embedding(codebook_size, emb_dim)
        self.embedding.weight.data.uniform_(-1.0 / codebook_size, 1.0 / codebook_size)

    def forward(self, z):
        """
        Args:
            z (Tensor): [B, emb_dim, h, w] latents.

        Returns:
            tuple[Tensor, Tensor, Tensor]: the quantised latents [B, emb_dim, h, w] (the nearest codes, with a
            straight-through gradient to ``z`` only); the per-sample codebook loss [B], the official
            ``mean((sg[q] - z)^2) + beta * mean((q - sg[z])^2)`` over each sample (the first term reaches ``z``,
            the second the codebook); the code indices [B, h, w] (int64).
        """
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c)
        weight = self.embedding.weight
        # The official |z|^2 + |e|^2 - 2 z.e expansion, so that rounding picks the same codes.
        distance = flat.pow(2).sum(1, keepdim=True) + weight.pow(2).sum(1) - 2 * flat @ weight.t()
        indices = distance.argmin(1).view(b, h, w)
        quantized = self.lookup(indices)
        loss = ((quantized.detach() - z).pow(2).flatten(1).mean(1)
                + self.beta * (quantized - z.detach()).pow(2).flatten(1).mean(1))
        return z + (quantized - z).detach(), loss, indices

    def lookup(self, indices, detach=False):
        """Codes for indices.

        Args:
            indices (Tensor): [B, h, w] int64 code indices in [0, codebook_size).
            detach (bool): read the codebook without a gradient to it.

        Returns:
            Tensor: [B, emb_dim, h, w] codes.
        """
        weight = self.embedding.weight.detach() if detach else self.embedding.weight
        return F.embedding(indices, weight).permute(0, 3, 1, 2)


def _check_score(score, batch, device):
    """``score`` as a float Tensor[B] on ``device``; a Python number applies to every sample."""
    score = torch.as_tensor(score, dtype=torch.float32, device=device)
    if score.dim() == 0:
        score = score.expand(batch)
    if score.shape != (batch, ):
        raise ValueError(f'score must be a number or a Tensor[{batch}] (one per sample), got shape '
                         f'{tuple(score.shape)}')
    # One check (one device sync): NaN fails both comparisons.
    if not bool(((score >= 0) & (score <= 1)).all()):
        raise ValueError(f'scores must lie in [0, 1], got {score.tolist()}')
    return score


def score_bin(score, num_bins):
    """``floor(num_bins * s)``, with s = 1.0 in the top bin (the official code indexes past the table there).

    The one home of the binning rule: :class:`IQPIRNet` and
    :class:`gtplus_arch.score_conditioned_arch.ScoreConditionedRestorer` both use it.

    Args:
        score (Tensor): [B] scores in [0,1].
        num_bins (int): bins over [0,1].

    Returns:
        Tensor: [B] int64 bins in [0, num_bins).
    """
    return torch.floor(score * num_bins).long().clamp(0, num_bins - 1)


@ARCH_REGISTRY.register()
class DualCodebookVQAutoEncoder(nn.Module):
    """IQPIR stage I: CodeFormer's VQGAN with a common and an HQ+ codebook on the same latent.

    Both quantizers see the encoder latent. The HQ+ codes and the HQ+ codebook loss are multiplied by 0 for the
    samples whose quality score is at or below ``hq_threshold``, so the HQ+ codebook learns only from good images.
    The decoder sees ``common + fuse_weight * HQ+``. At CodeFormer size (the defaults) the state dict is the
    official one (see the module docstring).

    Args:
        img_size (int): image size the attention placement (and, in :class:`IQPIRNet`, the token count) is built
            for; the autoencoder itself takes any H, W divisible by 2^(len(ch_mult) - 1).
        nf (int): base width, a multiple of 32.
        ch_mult (sequence[int]): width multipliers per level; each downsampling halves the size.
        res_blocks (int): residual blocks per level.
        attn_resolutions (sequence[int]): feature sizes with attention blocks.
        codebook_size (int): codes per codebook (both).
        emb_dim (int): code dimension.
        beta (float): codebook loss weight (official 0.25).
        hq_threshold (float): S_thr in [0,1]: samples with score <= S_thr give the HQ+ branch nothing (official
            ``aesthetic_threshold``, 0.70 in its stage-I options).
        fuse_weight (float): lambda in ``common + lambda * HQ+`` (official ``aesthetic_weight``, 0.8).
    """

    def __init__(self, img_size=512, nf=64, ch_mult=(1, 2, 2, 4, 4, 8), res_blocks=2, attn_resolutions=(16, ),
                 codebook_size=1024, emb_dim=256, beta=0.25, hq_threshold=0.7, fuse_weight=0.8):
        super().__init__()
        if not 0 <= hq_threshold <= 1:
            raise ValueError(f'hq_threshold must lie in [0, 1], got {hq_threshold}')
        widths = [nf * m for m in ch_mult]
        if any(w % 32 for w in widths):
            raise ValueError(f'every width nf * ch_mult must be a multiple of 32 (GroupNorm with 32 groups), got '
                             f'{widths}')
        self.img_size = img_size
        self.downscale = 2 ** (len(ch_mult) - 1)
        self.emb_dim = emb_dim
        self.codebook_size = codebook_size
        self.hq_threshold = float(hq_threshold)
        self.fuse_weight = float(fuse_weight)
        arch = (nf, emb_dim, tuple(ch_mult), res_blocks, img_size, tuple(attn_resolutions))
        self.encoder = VQGANEncoder(*arch)
        self.quantize = VectorQuantizer(codebook_size, emb_dim, beta)
        self.quantize_aesthetic = VectorQuantizer(codebook_size, emb_dim, beta)
        self.generator = VQGANGenerator(*arch)

    def hq_mask(self, score, batch, device):
        """Which samples feed the HQ+ branch.

        Args:
            score (Tensor | float | None): [B] quality scores in [0,1]; None counts every sample as above S_thr.
            batch (int): B.
            device (torch.device): where the mask lives.

        Returns:
            Tensor: [B] float, 1 where score > S_thr, else 0.
        """
        if score is None:
            return torch.ones(batch, device=device)
        return (_check_score(score, batch, device) > self.hq_threshold).float()

    def encode(self, x):
        """
        Args:
            x (Tensor): [B, 3, H, W] RGB in [0,1], H and W divisible by 2^(len(ch_mult) - 1).

        Returns:
            Tensor: [B, emb_dim, H / 2^(L-1), W / 2^(L-1)] latents.
        """
        if x.shape[-2] % self.downscale or x.shape[-1] % self.downscale:
            raise ValueError(f'image size {tuple(x.shape[-2:])} is not divisible by {self.downscale}')
        return self.encoder(x * 2 - 1)

    def fuse(self, common, hq):
        """``common + fuse_weight * hq``, both [B, emb_dim, h, w]."""
        return common + self.fuse_weight * hq

    def decode(self, quant):
        """
        Args:
            quant (Tensor): [B, emb_dim, h, w] fused codes.

        Returns:
            Tensor: [B, 3, h * 2^(L-1), w * 2^(L-1)] RGB, nominally in [0,1] and not clamped (clamping would stop
            the reconstruction gradient at saturated pixels).
        """
        return _to_unit(self.generator(quant))

    def quantize_dual(self, z, score=None):
        """Both quantisations of a latent, HQ+ masked by score.

        Args:
            z (Tensor): [B, emb_dim, h, w] latents.
            score (Tensor | float | None): [B] scores in [0,1] (None: all above S_thr).

        Returns:
            tuple[Tensor, Tensor, Tensor, Tensor, Tensor]: the fused codes [B, emb_dim, h, w]; the common codebook
            loss (0-dim, mean over the batch); the HQ+ codebook loss (0-dim, mean over the whole batch with the
            samples at or below S_thr counted as 0, as the official code does); the common and the HQ+ code
            indices, [B, h, w] int64 each (HQ+ indices are given for every sample).
        """
        mask = self.hq_mask(score, z.shape[0], z.device)
        common, loss_common, idx_common = self.quantize(z)
        hq, loss_hq, idx_hq = self.quantize_aesthetic(z)
        # A multiplication rather than skipping the samples: the batch stays whole and the masked samples give
        # exactly zero gradient to the HQ+ codebook and to the encoder through the HQ+ branch.
        hq = hq * mask.view(-1, 1, 1, 1)
        return self.fuse(common, hq), loss_common.mean(), (loss_hq * mask).mean(), idx_common, idx_hq

    def forward(self, x, score=None):
        """Reconstructs an image through both codebooks.

        Args:
            x (Tensor): [B, 3, H, W] RGB in [0,1], H and W divisible by 2^(len(ch_mult) - 1).
            score (Tensor | float | None): [B] quality scores in [0,1] (e.g. the ``gtplus score`` side file);
                samples with score <= ``hq_threshold`` do not use or train the HQ+ codebook. None counts every
                sample as above the threshold (both codebooks, as stage II decodes).

        Returns:
            tuple[Tensor, Tensor, Tensor]: the reconstruction [B, 3, H, W], nominally in [0,1] and not clamped; the
            common codebook loss (0-dim); the HQ+ codebook loss (0-dim, zero when no sample is above S_thr). The
            losses are the official ones on the [-1,1] scale the network works in.
        """
        quant, loss_common, loss_hq, _, _ = self.quantize_dual(self.encode(x), score)
        return self.decode(quant), loss_common, loss_hq

    @torch.no_grad()
    def code_indices(self, x):
        """The codes of an image in both codebooks (stage II's cross-entropy targets) and the fused codes.

        Call it on the trained stage-I autoencoder for GT targets: an :class:`IQPIRNet` inherits it, but its
        encoder is retrained on degraded inputs.

        Args:
            x (Tensor): [B, 3, H, W] RGB in [0,1].

        Returns:
            tuple[Tensor, Tensor, Tensor]: common indices [B, h, w], HQ+ indices [B, h, w] (int64), and the fused
            codes ``common + fuse_weight * HQ+`` [B, emb_dim, h, w] (stage II's feature target).
        """
        z = self.encode(x)
        _, _, idx_common = self.quantize(z)
        _, _, idx_hq = self.quantize_aesthetic(z)
        return idx_common, idx_hq, self.fuse(self.quantize.lookup(idx_common), self.quantize_aesthetic.lookup(idx_hq))


class FuseSFTBlock(nn.Module):
    """CodeFormer's ``Fuse_sft_block`` (stage III's encoder-to-decoder fusion), kept for its checkpoint keys.

    Args:
        channels (int): feature channels at its resolution.
    """

    def __init__(self, channels):
        super().__init__()
        self.encode_enc = ResBlock(2 * channels, channels)
        self.scale = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.LeakyReLU(0.2, True),
                                   nn.Conv2d(channels, channels, 3, padding=1))
        self.shift = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.LeakyReLU(0.2, True),
                                   nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, enc_feat, dec_feat, w=1):
        """Both [B, C, h, w]; returns ``dec + w * (dec * scale + shift)`` with scale, shift from both."""
        enc_feat = self.encode_enc(torch.cat([enc_feat, dec_feat], dim=1))
        return dec_feat + w * (dec_feat * self.scale(enc_feat) + self.shift(enc_feat))


class TransformerSALayer(nn.Module):
    """CodeFormer's pre-norm self-attention layer on [L, B, dim] tokens (sequence first, as the official code).

    Args:
        embed_dim (int): token width.
        nhead (int): attention heads.
        dim_mlp (int): hidden width of the feed-forward part.
    """

    def __init__(self, embed_dim, nhead=8, dim_mlp=2048):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(embed_dim, nhead, dropout=0.0)
        self.linear1 = nn.Linear(embed_dim, dim_mlp)
        self.linear2 = nn.Linear(dim_mlp, embed_dim)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.norm2 = nn.LayerNorm(embed_dim)

    def forward(self, tgt, query_pos):
        normed = self.norm1(tgt)
        q = k = normed + query_pos  # positions enter the queries and keys, not the values (CodeFormer)
        tgt = tgt + self.self_attn(q, k, value=normed, need_weights=False)[0]
        return tgt + self.linear2(F.gelu(self.linear1(self.norm2(tgt))))


@ARCH_REGISTRY.register()
class IQPIRNet(DualCodebookVQAutoEncoder):
    """IQPIR stage II: encoder + score-bin embedding + transformer with two code heads + frozen dual-codebook decoder.

    The latent of the (trainable) encoder plus the embedding of the score bin goes through a CodeFormer
    transformer that predicts, for each token, a code of the common and a code of the HQ+ codebook. The chosen
    codes are fused (``common + fuse_weight * HQ+``) and decoded by the frozen stage-I decoder. The codebooks and
    the decoder come from a :class:`DualCodebookVQAutoEncoder` checkpoint (same keys); they are frozen here
    (``fix_modules``) and also read detached, so no loss can move them.

    Args:
        img_size (int): the (square) input size; the token grid is (img_size / 2^(L-1))^2 (16x16 at 512^2).
        nf, ch_mult, res_blocks, attn_resolutions, codebook_size, emb_dim, beta, hq_threshold, fuse_weight: as
            :class:`DualCodebookVQAutoEncoder` (CodeFormer size by default).
        dim_embd (int): transformer width (512).
        n_head (int): attention heads (8).
        n_layers (int): transformer layers (9).
        num_bins (int): score bins over [0,1] (official ``num_class``, 10).
        score_embedding (bool): add the score-bin embedding (``score_embed``, zero-initialised); False builds the
            layout of the official stage-II options, whose ``score_embedding: None`` is the string 'None' and so no
            embedding.
        fix_modules (sequence[str]): submodules frozen (requires_grad False); CodeFormer freezes
            ``quantize`` and ``generator``, here the HQ+ codebook too.
        official_straight_through (bool): decode with the official estimator only, ``q = z + sg[q - z]``, whose
            gradient reaches the latent (encoder and score embedding) but not the transformer.
        connect_list (sequence[str | int]): feature sizes of CodeFormer's stage-III fusion blocks
            (``fuse_convs_dict``), built frozen and unused so that official checkpoints that carry them load
            strictly: ``['32', '64', '128', '256']`` in the official stage-II/III options; empty by default.
    """

    def __init__(self, img_size=512, nf=64, ch_mult=(1, 2, 2, 4, 4, 8), res_blocks=2, attn_resolutions=(16, ),
                 codebook_size=1024, emb_dim=256, beta=0.25, hq_threshold=0.7, fuse_weight=0.8, dim_embd=512,
                 n_head=8, n_layers=9, num_bins=10, score_embedding=True,
                 fix_modules=('quantize', 'quantize_aesthetic', 'generator'), official_straight_through=False,
                 connect_list=()):
        super().__init__(img_size, nf, ch_mult, res_blocks, attn_resolutions, codebook_size, emb_dim, beta,
                         hq_threshold, fuse_weight)
        self.latent_hw = img_size // self.downscale
        tokens = self.latent_hw ** 2
        self.num_bins = num_bins
        self.official_straight_through = official_straight_through
        self.position_emb = nn.Parameter(torch.zeros(tokens, dim_embd))
        self.feat_emb = nn.Linear(emb_dim, dim_embd)
        self.score_embed = nn.Embedding(num_bins, tokens * emb_dim) if score_embedding else None
        if self.score_embed is not None:
            # Zeros, not nn.Embedding's N(0, 1) (the official init): a bin that no training GT falls in (a score range
            # the data lacks, common on small or one-sided sets) then leaves the latent as it is instead of adding
            # unit noise to each of its values, which decoded to garbage at that target score.
            nn.init.zeros_(self.score_embed.weight)
        self.ft_layers = nn.Sequential(*[TransformerSALayer(dim_embd, n_head, dim_embd * 2) for _ in range(n_layers)])
        # One Linear for both heads, outputs interleaved (HQ+, common) per code: the official layout.
        self.idx_pred_layer = nn.Sequential(nn.LayerNorm(dim_embd), nn.Linear(dim_embd, 2 * codebook_size, bias=False))
        sizes = {img_size // 2 ** level: nf * mult for level, mult in enumerate(ch_mult)}
        unknown = [size for size in connect_list or () if int(size) not in sizes]
        if unknown:
            raise ValueError(f'connect_list sizes {unknown} are not feature sizes of this network ({sorted(sizes)})')
        self.fuse_convs_dict = nn.ModuleDict({str(size): FuseSFTBlock(sizes[int(size)]) for size in connect_list or ()})
        # Frozen: nothing here uses them, and trainable parameters without gradients trouble DDP.
        for name in tuple(fix_modules or ()) + ('fuse_convs_dict', ):
            for param in getattr(self, name).parameters():
                param.requires_grad = False

    def score_bin(self, score):
        """``floor(num_bins * s)``, with s = 1.0 in the top bin (the official code indexes past the table there).

        Args:
            score (Tensor): [B] scores in [0,1].

        Returns:
            Tensor: [B] int64 bins in [0, num_bins).
        """
        return score_bin(score, self.num_bins)

    def forward(self, x, score, code_only=False):
        """Predicts both codes per token for a target quality and decodes them.

        Args:
            x (Tensor): [B, 3, img_size, img_size] RGB in [0,1] (degraded input).
            score (Tensor | float): [B] target quality scores in [0,1] (training: the GT's own score; inference: the
                quality asked for), or one number for the whole batch.
            code_only (bool): stop after the code logits (training without the quality loss).

        Returns:
            tuple[Tensor, ...]: ``(logits_common, logits_hq, lq_feat)`` when ``code_only``, else
            ``(out, logits_common, logits_hq, lq_feat)``: ``out`` the decoded image [B, 3, H, W], nominally in
            [0,1] and not clamped, with the straight-through gradient of :meth:`decode_logits`; the logits
            [B, tokens, codebook_size] of each codebook (raw, for cross-entropy); ``lq_feat`` the encoder latent
            plus the score embedding [B, emb_dim, h, w] (the official feature-loss input).
        """
        if tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            raise ValueError(f'IQPIRNet is built for {self.img_size}x{self.img_size} inputs (its token grid and '
                             f'score embedding are fixed), got {tuple(x.shape[-2:])}')
        score = _check_score(score, x.shape[0], x.device)
        lq_feat = self.encode(x)
        if self.score_embed is not None:
            lq_feat = lq_feat + self.score_embed(self.score_bin(score)).view(lq_feat.shape)
        tokens = self.feat_emb(lq_feat.flatten(2).permute(2, 0, 1))  # [B, C, h, w] -> [hw, B, dim]
        pos = self.position_emb.unsqueeze(1)
        for layer in self.ft_layers:
            tokens = layer(tokens, pos)
        logits = self.idx_pred_layer(tokens).permute(1, 0, 2)  # [B, hw, 2 * codebook_size]
        logits = logits.reshape(*logits.shape[:2], self.codebook_size, 2)
        logits_hq, logits_common = logits[..., 0], logits[..., 1]
        if code_only:
            return logits_common, logits_hq, lq_feat
        return self.decode_logits(logits_common, logits_hq, lq_feat), logits_common, logits_hq, lq_feat

    def decode_logits(self, logits_common, logits_hq, lq_feat=None):
        """Decodes the most likely codes, with a straight-through gradient.

        The value is always the decoder's image of the argmax codes. The gradient of a loss on it (the NR-IQA
        quality loss) reaches, through the frozen decoder:

        - the latent ``lq_feat`` as if the codes were the latent (the official ``q = z + sg[q - z]``);
        - unless ``official_straight_through``, also the logits, as if the codes were their softmax expectation
          over the (detached) codebook, so the transformer learns which codes to pick; only code choices change,
          never the codes themselves.

        Args:
            logits_common (Tensor): [B, tokens, codebook_size] common-codebook logits.
            logits_hq (Tensor): [B, tokens, codebook_size] HQ+ logits.
            lq_feat (Tensor | None): [B, emb_dim, h, w] latent to pass gradients to; None decodes without it.

        Returns:
            Tensor: [B, 3, H, W] RGB, nominally in [0,1], not clamped.
        """
        b = logits_common.shape[0]
        grid = (b, self.latent_hw, self.latent_hw)
        hard = self.fuse(self.quantize.lookup(logits_common.argmax(-1).view(grid), detach=True),
                         self.quantize_aesthetic.lookup(logits_hq.argmax(-1).view(grid), detach=True))
        quant = hard
        if lq_feat is not None:
            quant = quant + (lq_feat - lq_feat.detach())
        if not self.official_straight_through:
            soft = self.fuse(self._expected_code(logits_common, self.quantize),
                             self._expected_code(logits_hq, self.quantize_aesthetic))
            quant = quant + (soft - soft.detach())
        return self.decode(quant)

    def _expected_code(self, logits, quantizer):
        """[B, tokens, N] logits -> [B, emb_dim, h, w] softmax-weighted mean of the detached codes."""
        codes = torch.softmax(logits, -1) @ quantizer.embedding.weight.detach()
        return codes.transpose(1, 2).reshape(logits.shape[0], self.emb_dim, self.latent_hw, self.latent_hw)


@ARCH_REGISTRY.register()
class GTPlusVQGANDiscriminator(nn.Module):
    """CodeFormer's (and IQPIR's) VQGAN patch discriminator, for stage I's hinge GAN loss.

    The official ``VQGANDiscriminator`` layout (``main``: an ``nn.Sequential`` of 4x4 convolutions, BatchNorm and
    LeakyReLU), so its ``net_d`` checkpoints load with ``strict=True``; renamed because CodeFormer's basicsr fork
    registers that name. It takes images in [0,1] and, as the official one was trained, looks at ``2x - 1``.

    Args:
        nc (int): input channels.
        ndf (int): width of the first layer; layer n has ``ndf * min(2^n, 8)``.
        n_layers (int): stride-2 layers.
    """

    def __init__(self, nc=3, ndf=64, n_layers=4):
        super().__init__()
        layers = [nn.Conv2d(nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            # the last of these keeps the size (stride 1), as in pix2pix's PatchGAN
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 2 if n < n_layers else 1, 1, bias=False),
                       nn.BatchNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)

    def forward(self, x):
        """
        Args:
            x (Tensor): [B, nc, H, W] RGB in [0,1].

        Returns:
            Tensor: [B, 1, h, w] real/fake logits per patch (unbounded).
        """
        return self.main(x * 2 - 1)


__all__ = ['DualCodebookVQAutoEncoder', 'FuseSFTBlock', 'GTPlusVQGANDiscriminator', 'IQPIRNet', 'TransformerSALayer',
           'VectorQuantizer', 'VQGANEncoder', 'VQGANGenerator']
