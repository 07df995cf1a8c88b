"""Orbit videos: frames -> .mp4 (imageio-ffmpeg), or .gif when ffmpeg is unavailable."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
from torch import Tensor

from ..errors import UserError

log = logging.getLogger(__name__)


@dataclass
class OrbitConfig:
    """The orbit video of a finished run: ``frames`` views in a full turn at ``elevation_deg``,
    ``resolution`` pixels square (also the elevation of the validation renders)."""

    frames: int = 48
    resolution: int = 128
    elevation_deg: float = 20.0


def check_orbit_config(cfg: OrbitConfig) -> None:
    """Raise UserError naming the first invalid setting of ``cfg``."""
    if cfg.frames < 1 or cfg.resolution < 1:
        raise UserError(f"orbit.frames={cfg.frames} and orbit.resolution={cfg.resolution} must be positive (e.g. 48 and 128)")


def frames_to_uint8(frames: Tensor) -> np.ndarray:
    """(N, 3, H, W) floats in [0, 1] -> (N, H, W, 3) uint8."""
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"orbit frames must have shape (N, 3, H, W); got {tuple(frames.shape)}")
    x = frames.detach().float().clamp(0.0, 1.0).permute(0, 2, 3, 1).cpu().numpy()
    return np.round(x * 255.0).astype(np.uint8)


def write_orbit_video(frames: Tensor, path, fps: int = 24) -> Path:
    """Write frames as an H.264 .mp4, falling back to a .gif next to it.

    Args:
        frames: images in [0, 1]. Shape: (N, 3, H, W).
        path: target file (``.mp4``; a ``.gif`` suffix writes a gif directly).
        fps: frames per second.

    Returns:
        The path actually written (``path`` or ``path.with_suffix(".gif")``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = frames_to_uint8(frames)
    if path.suffix.lower() != ".gif":
        # yuv420p (the pixel format players accept) needs even sizes: pad by edge replication.
        h, w = images.shape[1:3]
        even = np.pad(images, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        try:
            with imageio.get_writer(path, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                    pixelformat="yuv420p", macro_block_size=1, quality=8) as writer:
                for im in even:
                    writer.append_data(im)
            return path
        except Exception as e:  # noqa: BLE001 -- any ffmpeg failure (missing binary, codec) falls back to gif
            log.warning("writing %s with ffmpeg failed (%s); writing a gif instead", path, e)
            path.unlink(missing_ok=True)
            path = path.with_suffix(".gif")
    imageio.mimsave(path, list(images), duration=1000.0 / fps, loop=0)
    return path
