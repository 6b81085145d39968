"""VQ-VAE-2 (two levels) and VQ-VAE (one level) with EMA codebooks, for undertrained-reconstruction degradations.

After Razavi et al., "Generating Diverse High-Fidelity Images with VQ-VAE-2" (NeurIPS 2019), in the layout of
rosinality/vq-vae-2-pytorch (``vqvae.py``), the implementation the undertrained-reconstruction paper's setup follows
(METHODS.md §3). The state-dict keys and shapes are that repository's, so its ``VQVAE`` checkpoints load into
:class:`VQVAE2` with ``strict=True`` and give the same output:

- ``enc_b`` / ``enc_t`` / ``dec_t`` / ``dec``: an ``nn.Sequential`` called ``blocks`` (convolutions, ReLUs and
  residual blocks whose own ``nn.Sequential`` is called ``conv``);
- ``quantize_conv_t``, ``quantize_conv_b``: 1x1 convolutions into the codebook dimension;
- ``quantize_t``, ``quantize_b``: codebooks with the buffers ``embed`` [dim, n_embed], ``cluster_size`` [n_embed]
  and ``embed_avg`` [dim, n_embed] (no parameters: the codebook learns by EMA only);
- ``upsample_t``: the transposed convolution that brings the top codes to the bottom resolution.

The official repository has no one-level model; :class:`VQVAE` is the bottom level of the same blocks alone
(``enc_b``, ``quantize_conv_b``, ``quantize_b``, ``dec``).

Differences from the official code, none of which changes what an official checkpoint computes:

- Images are RGB in [0,1] at the public boundary; the networks see ``2x - 1`` in [-1,1], which is what the
  official training feeds them (torchvision ``Normalize`` with mean 0.5 and std 0.5), and the output is mapped
  back with ``(y + 1) / 2``.
- Any H, W: the image is reflect-padded at the bottom/right to the model's multiple and the output cropped back.
- The official ``VQVAE`` accepts ``decay`` but never passes it on, so its codebooks always use 0.99. Here
  ``decay`` reaches both codebooks; ``decay: 0.99`` (the default) is the official behaviour.
- The latent loss is a 0-dim tensor (the official one has shape [1]).
"""
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import distributed as dist
from torch import nn
from torch.nn import functional as F

from gtplus_arch.nafnet_arch import pad_to_multiple


def _sum_over_ranks(tensor):
    """Sum ``tensor`` in place over all processes when torch.distributed runs with more than one.

    The official code all-reduces its codebook statistics in the same way, so every rank makes the same update
    from the whole global batch and the codebooks stay identical without a broadcast.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


class EMACodebook(nn.Module):
    """A vector-quantisation codebook learned by exponential moving averages (VQ-VAE paper, appendix A.1).

    Hand-written rather than taken from diffusers: its ``VectorQuantizer`` learns the codebook by gradient with an
    ``embedding.weight`` parameter, while rosinality's checkpoints hold EMA buffers named ``embed``,
    ``cluster_size`` and ``embed_avg``, with ``embed`` stored transposed as [dim, n_embed].

    In training mode each forward pass updates the codebook from the codes it chose (before the update, so the
    output uses the codebook as it was):
    ``cluster_size = decay * cluster_size + (1 - decay) * count``,
    ``embed_avg = decay * embed_avg + (1 - decay) * sum of the vectors assigned to each code``,
    ``embed = embed_avg / smoothed`` with the Laplace-smoothed counts
    ``smoothed = (cluster_size + eps) / (n + n_embed * eps) * n`` and ``n = sum(cluster_size)``.
    In eval mode the codebook is frozen. As in the official code, unused codes are never restarted: with few codes
    and a short run at decay 0.99, every position can fall on one code (a tiny model then learns only colours).

    Args:
        dim (int): code dimension (channels of the latent).
        n_embed (int): number of codes.
        decay (float): EMA decay of the statistics, in (0, 1).
        eps (float): Laplace smoothing of the code counts.
    """

    def __init__(self, dim, n_embed, decay=0.99, eps=1e-5):
        super().__init__()
        self.dim = dim
        self.n_embed = n_embed
        self.decay = decay
        self.eps = eps
        embed = torch.randn(dim, n_embed)
        self.register_buffer('embed', embed)
        self.register_buffer('cluster_size', torch.zeros(n_embed))
        self.register_buffer('embed_avg', embed.clone())

    def forward(self, z):
        """
        Args:
            z (Tensor): [B, dim, H, W] latents.

        Returns:
            tuple[Tensor, Tensor, Tensor]: the quantised latents [B, dim, H, W] (the nearest codes, with a
            straight-through gradient to ``z``); the commitment loss ``mean((code - z)^2)`` (0-dim, gradient to
            ``z`` only: the codebook learns by EMA); the code indices [B, H, W] (int64).
        """
        batch, _, height, width = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.dim)
        # |z|^2 - 2 z.e + |e|^2, the expansion the official code uses, so that rounding picks the same codes.
        distance = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.embed
                    + self.embed.pow(2).sum(0, keepdim=True))
        indices = distance.argmin(1)
        quantized = self.lookup(indices.view(batch, height, width))  # before the update, as the official code
        if self.training:
            self._update(flat.detach(), indices)
        indices = indices.view(batch, height, width)
        loss = (quantized.detach() - z).pow(2).mean()
        return z + (quantized - z).detach(), loss, indices

    def lookup(self, indices):
        """Codes for indices.

        Args:
            indices (Tensor): [B, H, W] int64 code indices in [0, n_embed).

        Returns:
            Tensor: [B, dim, H, W] codes.
        """
        return F.embedding(indices, self.embed.t()).permute(0, 3, 1, 2)

    @torch.no_grad()
    def _update(self, flat, indices):
        # Counts and sums through a one-hot matmul rather than index_add_/bincount: it is deterministic on every
        # device, and costs no more memory than the distance matrix already built.
        flat = flat.to(self.embed_avg.dtype)  # statistics stay in the buffers' precision under autocast
        onehot = F.one_hot(indices, self.n_embed).to(flat.dtype)
        counts = _sum_over_ranks(onehot.sum(0))
        sums = _sum_over_ranks(flat.t() @ onehot)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        # Laplace smoothing: a code that has never been used keeps a finite vector instead of dividing by 0.
        smoothed = (self.cluster_size + self.eps) / (total + self.n_embed * self.eps) * total
        self.embed.copy_(self.embed_avg / smoothed.unsqueeze(0))


class ResBlock(nn.Module):
    """ReLU, 3x3 conv, ReLU, 1x1 conv, plus the input. ``conv`` holds the four layers (the official key names).

    Args:
        channel (int): input and output channels.
        res_channel (int): channels inside the block.
    """

    def __init__(self, channel, res_channel):
        super().__init__()
        # The first ReLU must not work in place: its input is also the skip.
        self.conv = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channel, res_channel, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(res_channel, channel, 1))

    def forward(self, x):
        return x + self.conv(x)


def _check_stride(stride):
    if stride not in (2, 4):
        raise ValueError(f'VQ-VAE encoders and decoders have stride 2 or 4, got {stride}')


class Encoder(nn.Module):
    """Downsamples by ``stride`` (2 or 4) with 4x4 stride-2 convolutions, then residual blocks and a ReLU.

    Args:
        in_channel (int): input channels.
        channel (int): output channels (half of it after the first stride-2 convolution).
        n_res_block (int): residual blocks.
        n_res_channel (int): channels inside each residual block.
        stride (int): 4 (two stride-2 convolutions and a 3x3 one) or 2 (one stride-2 convolution and a 3x3 one).
    """

    def __init__(self, in_channel, channel, n_res_block, n_res_channel, stride):
        super().__init__()
        _check_stride(stride)
        layers = [nn.Conv2d(in_channel, channel // 2, 4, stride=2, padding=1), nn.ReLU(inplace=True)]
        if stride == 4:
            layers += [nn.Conv2d(channel // 2, channel, 4, stride=2, padding=1), nn.ReLU(inplace=True),
                       nn.Conv2d(channel, channel, 3, padding=1)]
        else:
            layers.append(nn.Conv2d(channel // 2, channel, 3, padding=1))
        layers += [ResBlock(channel, n_res_channel) for _ in range(n_res_block)]
        layers.append(nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*layers)

    def forward(self, x):
        return self.blocks(x)


class Decoder(nn.Module):
    """A 3x3 convolution, residual blocks and a ReLU, then upsamples by ``stride`` (2 or 4) with 4x4 stride-2
    transposed convolutions.

    Args:
        in_channel (int): input channels.
        out_channel (int): output channels.
        channel (int): working channels (half of it between the two transposed convolutions of stride 4).
        n_res_block (int): residual blocks.
        n_res_channel (int): channels inside each residual block.
        stride (int): 4 or 2.
    """

    def __init__(self, in_channel, out_channel, channel, n_res_block, n_res_channel, stride):
        super().__init__()
        _check_stride(stride)
        layers = [nn.Conv2d(in_channel, channel, 3, padding=1)]
        layers += [ResBlock(channel, n_res_channel) for _ in range(n_res_block)]
        layers.append(nn.ReLU(inplace=True))
        if stride == 4:
            layers += [nn.ConvTranspose2d(channel, channel // 2, 4, stride=2, padding=1), nn.ReLU(inplace=True),
                       nn.ConvTranspose2d(channel // 2, out_channel, 4, stride=2, padding=1)]
        else:
            layers.append(nn.ConvTranspose2d(channel, out_channel, 4, stride=2, padding=1))
        self.blocks = nn.Sequential(*layers)

    def forward(self, x):
        return self.blocks(x)


class _VQAutoencoder(nn.Module):
    """The one wiring of both models: the bottom level, the optional top level, the [0,1] <-> [-1,1] conversion,
    padding and cropping. Modules are created in the official order, so ``state_dict()`` lists the keys as
    rosinality's checkpoints do.

    Args:
        levels (int): 2 (VQ-VAE-2: top codes at 1/8 of the image size as well) or 1 (bottom level alone).
        in_channel, channel, n_res_block, n_res_channel, embed_dim, n_embed, decay: as in :class:`VQVAE2`.
    """

    def __init__(self, levels, in_channel, channel, n_res_block, n_res_channel, embed_dim, n_embed, decay):
        super().__init__()
        if levels not in (1, 2):
            raise ValueError(f'A VQ-VAE here has 1 or 2 levels, got {levels}')
        self.levels = levels
        self.multiple = 4 * 2**(levels - 1)  # the total stride: 4 for the bottom codes, 8 for the top ones
        res = (n_res_block, n_res_channel)
        self.enc_b = Encoder(in_channel, channel, *res, stride=4)
        if levels == 2:
            self.enc_t = Encoder(channel, channel, *res, stride=2)
            self.quantize_conv_t = nn.Conv2d(channel, embed_dim, 1)
            self.quantize_t = EMACodebook(embed_dim, n_embed, decay)
            self.dec_t = Decoder(embed_dim, embed_dim, channel, *res, stride=2)
        # With a top level, the bottom codes also see the decoded top codes (concatenated first), and the decoder
        # sees the upsampled top codes (concatenated first) beside the bottom codes.
        self.quantize_conv_b = nn.Conv2d(channel + embed_dim * (levels - 1), embed_dim, 1)
        self.quantize_b = EMACodebook(embed_dim, n_embed, decay)
        if levels == 2:
            self.upsample_t = nn.ConvTranspose2d(embed_dim, embed_dim, 4, stride=2, padding=1)
        self.dec = Decoder(embed_dim * levels, in_channel, channel, *res, stride=4)

    def _codebooks(self):
        return (self.quantize_t, self.quantize_b) if self.levels == 2 else (self.quantize_b, )

    def _encode(self, x):
        """[B, C, H, W] in [-1,1], H and W multiples of ``self.multiple`` -> (quant_t, quant_b, latent_loss, id_t,
        id_b), or (quant_b, latent_loss, id_b) with one level."""
        enc_b = self.enc_b(x)
        if self.levels == 1:
            return self.quantize_b(self.quantize_conv_b(enc_b))
        quant_t, loss_t, id_t = self.quantize_t(self.quantize_conv_t(self.enc_t(enc_b)))
        quant_b, loss_b, id_b = self.quantize_b(self.quantize_conv_b(torch.cat([self.dec_t(quant_t), enc_b], 1)))
        return quant_t, quant_b, loss_t + loss_b, id_t, id_b

    def _decode(self, *quantized):
        """Quantised latents (top first) -> [B, C, H, W] in [-1,1] (nominally)."""
        if self.levels == 2:
            quant_t, quant_b = quantized
            quantized = (self.upsample_t(quant_t), quant_b)
        return self.dec(torch.cat(quantized, 1))

    def encode(self, x):
        """Encodes an image to quantised latents.

        The image is reflect-padded at the bottom/right to a multiple of ``self.multiple`` (replicate-padded where
        it is too small to reflect), so the latents describe the padded image; pass ``size`` to :meth:`decode`
        to crop back.

        Args:
            x (Tensor): [B, in_channel, H, W] RGB in [0,1], any H, W.

        Returns:
            tuple[Tensor, ...]: in the official order, the quantised latents [B, embed_dim, h, w] (top first), the
            latent loss (0-dim) and the code indices [B, h, w] (top first): (quant_t, quant_b, latent_loss, id_t,
            id_b) for VQVAE2, (quant_b, latent_loss, id_b) for VQVAE.
        """
        padded, _ = pad_to_multiple(x, self.multiple)
        return self._encode(padded * 2 - 1)

    def decode(self, *quantized, size=None):
        """Decodes quantised latents (top first, as :meth:`encode` returns them) to an image.

        Args:
            *quantized (Tensor): [B, embed_dim, h, w] latents, one per level.
            size (tuple[int, int] | None): crop the output to (H, W), e.g. the size of the image that was encoded.

        Returns:
            Tensor: [B, in_channel, H, W] RGB, nominally in [0,1] and not clamped (clamping would stop the
            reconstruction gradient at saturated pixels; clamp where a strict image is needed).
        """
        out = (self._decode(*quantized) + 1) / 2
        return out if size is None else out[..., :size[0], :size[1]]

    def decode_code(self, *indices, size=None):
        """Decodes code indices (top first, as :meth:`encode` returns them) to an image, as :meth:`decode` does.

        Args:
            *indices (Tensor): [B, h, w] int64 code indices, one per level.
            size (tuple[int, int] | None): crop the output to (H, W).

        Returns:
            Tensor: [B, in_channel, H, W] RGB, nominally in [0,1], not clamped.
        """
        return self.decode(*(codebook.lookup(ids) for codebook, ids in zip(self._codebooks(), indices)), size=size)

    def forward(self, x):
        """Reconstructs an image through the codebooks.

        The latent loss is the official one, computed on the [-1,1] scale the networks work in. The official
        training loss is ``MSE + 0.25 * latent`` with the MSE on [-1,1] images, which is four times the MSE on
        these [0,1] outputs: weight a [0,1] pixel MSE by 4 (or the latent loss by 0.0625) to keep that balance.

        Args:
            x (Tensor): [B, in_channel, H, W] RGB in [0,1], any H, W (padded inside, cropped back).

        Returns:
            tuple[Tensor, Tensor]: the reconstruction [B, in_channel, H, W], nominally in [0,1] and not clamped;
            the latent (commitment) loss, a 0-dim tensor summed over the levels.
        """
        latents = self.encode(x)
        return self.decode(*latents[:self.levels], size=x.shape[-2:]), latents[self.levels]


@ARCH_REGISTRY.register()
class VQVAE2(_VQAutoencoder):
    """Two-level VQ-VAE-2: bottom codes at 1/4 of the image size, top codes at 1/8, EMA codebooks.

    The top level is decoded to the bottom resolution and conditions the bottom codes; the decoder sees the bottom
    codes together with the upsampled top codes. Defaults are the usual setup (METHODS.md §3) and rosinality's.
    Inputs of any size are reflect-padded to a multiple of 8 and the output cropped back.

    Args:
        in_channel (int): image channels (3: RGB).
        channel (int): encoder/decoder channels.
        n_res_block (int): residual blocks in each encoder and decoder.
        n_res_channel (int): channels inside each residual block.
        embed_dim (int): code dimension of both codebooks.
        n_embed (int): codes per codebook.
        decay (float): EMA decay of both codebooks (the official class ignores its ``decay`` and uses 0.99).
    """

    def __init__(self, in_channel=3, channel=128, n_res_block=2, n_res_channel=32, embed_dim=64, n_embed=512,
                 decay=0.99):
        super().__init__(2, in_channel, channel, n_res_block, n_res_channel, embed_dim, n_embed, decay)


@ARCH_REGISTRY.register()
class VQVAE(_VQAutoencoder):
    """One-level VQ-VAE: codes at 1/4 of the image size, EMA codebook; the bottom level of :class:`VQVAE2` alone.

    The official repository has no one-level model, so the layout is VQVAE2's keys for that level: ``enc_b``,
    ``quantize_conv_b`` (channel -> embed_dim), ``quantize_b`` and ``dec`` (embed_dim -> in_channel). Inputs of
    any size are reflect-padded to a multiple of 4 and the output cropped back.

    Args:
        in_channel (int): image channels (3: RGB).
        channel (int): encoder/decoder channels.
        n_res_block (int): residual blocks in the encoder and the decoder.
        n_res_channel (int): channels inside each residual block.
        embed_dim (int): code dimension.
        n_embed (int): codes in the codebook.
        decay (float): EMA decay of the codebook.
    """

    def __init__(self, in_channel=3, channel=128, n_res_block=2, n_res_channel=32, embed_dim=64, n_embed=512,
                 decay=0.99):
        super().__init__(1, in_channel, channel, n_res_block, n_res_channel, embed_dim, n_embed, decay)
