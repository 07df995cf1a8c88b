"""The denoiser of the embedded toy prior: a small text-conditioned UNet for 32x32 images.

A stock ``UNet2DConditionModel`` of the same size was measured ~4x slower per sample on CPU
(cross-attention at every resolution), so this model keeps diffusers' building blocks
(ResnetBlock2D, Attention, timestep embeddings) but attends to the text only at 8x8 and adds a
pooled text embedding to the timestep embedding. It subclasses ModelMixin/ConfigMixin, so
``save_pretrained``/``from_pretrained`` (safetensors) work like any diffusers model, and its
``forward`` has UNet2DConditionModel's signature, so the prior code calls both the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from diffusers.utils import BaseOutput
from torch import Tensor, nn


@dataclass
class ToyUNetOutput(BaseOutput):
    sample: Tensor


class _AttentionBlock(nn.Module):
    """Self-attention then cross-attention to the text tokens, on a (B, C, h, w) feature map."""

    def __init__(self, channels: int, cross_attention_dim: int, heads: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels)
        self.self_attn = Attention(channels, heads=heads, dim_head=channels // heads, bias=True)
        self.norm2 = nn.GroupNorm(groups, channels)
        self.cross_attn = Attention(channels, cross_attention_dim=cross_attention_dim, heads=heads, dim_head=channels // heads, bias=True)

    def forward(self, h: Tensor, context: Tensor) -> Tensor:
        B, C, H, W = h.shape
        tokens = self.norm1(h).flatten(2).transpose(1, 2)
        h = h + self.self_attn(tokens).transpose(1, 2).reshape(B, C, H, W)
        tokens = self.norm2(h).flatten(2).transpose(1, 2)
        return h + self.cross_attn(tokens, encoder_hidden_states=context).transpose(1, 2).reshape(B, C, H, W)


CAMERA_FEATURES = 9


def camera_features(camera: Tensor | None, batch: int, device, dtype) -> Tensor:
    """(elevation, azimuth) in degrees (B, 2) -> [1, sin/cos of each angle and of twice it] (B, 9).

    None (or a row of NaN) is the null camera: all zeros (also used for camera dropout in training).
    """
    if camera is None:
        return torch.zeros(batch, CAMERA_FEATURES, device=device, dtype=dtype)
    angles = torch.deg2rad(camera.to(device=device, dtype=torch.float32))  # (B, 2)
    known = torch.isfinite(angles).all(dim=-1, keepdim=True)
    angles = torch.nan_to_num(angles)
    both = torch.cat([angles, 2.0 * angles], dim=-1)
    feats = torch.cat([torch.ones_like(angles[:, :1]), torch.sin(both), torch.cos(both)], dim=-1)
    return (feats * known).to(dtype)


class ToyUNet(ModelMixin, ConfigMixin):
    """epsilon-prediction UNet: 32x32 (c0) -> 16x16 (c1) -> 8x8 (c2, attention) and back."""

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        in_channels: int = 3,
        out_channels: int = 3,
        block_out_channels: tuple[int, ...] = (32, 64, 128),
        cross_attention_dim: int = 64,
        attention_heads: int = 4,
        norm_num_groups: int = 8,
        camera_conditioning: bool = False,
    ):
        super().__init__()
        c = list(block_out_channels)
        temb_dim = 4 * c[0]
        g = norm_num_groups
        self.time_proj = Timesteps(c[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(c[0], temb_dim)
        # Pooled text embedding added to the timestep embedding (global conditioning).
        self.text_embedding = TimestepEmbedding(cross_attention_dim, temb_dim)
        if camera_conditioning:
            # Camera embedding added to the timestep embedding, as in MVDream (Shi et al. 2023, Sec. 3.1):
            # the exact view sharpens the denoiser's posterior, which a coarse "front/side/back" word
            # cannot (SDS then averages over elevations and grows a skirt under the object). Zero-initialised
            # output, so a camera-free checkpoint fine-tunes from exactly its old function.
            self.camera_embedding = TimestepEmbedding(CAMERA_FEATURES, temb_dim)
            nn.init.zeros_(self.camera_embedding.linear_2.weight)
            nn.init.zeros_(self.camera_embedding.linear_2.bias)
        self.conv_in = nn.Conv2d(in_channels, c[0], 3, padding=1)

        def res(cin, cout):
            return ResnetBlock2D(in_channels=cin, out_channels=cout, temb_channels=temb_dim, groups=g)

        self.down = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        cin = c[0]
        for i, cout in enumerate(c):
            self.down.append(res(cin, cout))
            if i < len(c) - 1:
                self.downsamplers.append(Downsample2D(cout, use_conv=True, name="op"))
            cin = cout
        self.attn_down = _AttentionBlock(c[-1], cross_attention_dim, attention_heads, g)
        self.mid1, self.mid2 = res(c[-1], c[-1]), res(c[-1], c[-1])
        self.attn_mid = _AttentionBlock(c[-1], cross_attention_dim, attention_heads, g)
        self.up = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        cin = c[-1]
        for i, cout in reversed(list(enumerate(c))):
            self.up.append(res(cin + cout, cout))
            if i > 0:
                self.upsamplers.append(Upsample2D(cout, use_conv=True))
            cin = cout
        self.attn_up = _AttentionBlock(c[-1], cross_attention_dim, attention_heads, g)
        self.norm_out = nn.GroupNorm(g, c[0])
        self.conv_out = nn.Conv2d(c[0], out_channels, 3, padding=1)

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor | float | int,
        encoder_hidden_states: Tensor,
        camera: Tensor | None = None,
        return_dict: bool = True,
    ):
        """Predict the noise.

        Args:
            sample: x_t. Shape: (B, C, H, W).
            timestep: t, a scalar or (B,).
            encoder_hidden_states: text token embeddings. Shape: (B, S, D).
            camera: (elevation, azimuth) in degrees per sample, (B, 2), or None (the null camera);
                ignored unless the model was built with ``camera_conditioning``.
        """
        B = sample.shape[0]
        t = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(B)
        temb = self.time_embedding(self.time_proj(t).to(sample.dtype))
        temb = temb + self.text_embedding(encoder_hidden_states.mean(dim=1).to(sample.dtype))
        if self.config.camera_conditioning:
            temb = temb + self.camera_embedding(camera_features(camera, B, sample.device, sample.dtype))
        context = encoder_hidden_states.to(sample.dtype)

        h = self.conv_in(sample)
        skips = []
        n = len(self.down)
        for i, block in enumerate(self.down):
            h = block(h, temb)
            if i == n - 1:
                h = self.attn_down(h, context)
            skips.append(h)
            if i < n - 1:
                h = self.downsamplers[i](h)
        h = self.mid2(self.attn_mid(self.mid1(h, temb), context), temb)
        for i, block in enumerate(self.up):
            h = block(torch.cat([h, skips.pop()], dim=1), temb)
            if i == 0:
                h = self.attn_up(h, context)
            if i < n - 1:
                h = self.upsamplers[i](h)
        out = self.conv_out(torch.nn.functional.silu(self.norm_out(h)))
        return ToyUNetOutput(sample=out) if return_dict else (out,)
