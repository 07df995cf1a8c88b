"""Memory a run's largest allocations need at least, checked against the machine before anything runs.

Each estimate is a lower bound (the tensors the step cannot do without, float32), so a config it
refuses cannot fit, and a config it accepts may still be tight: the point is a one-line error for
``render.resolution=100000`` instead of a 40 GB allocation attempt.
"""

from __future__ import annotations

import os

import torch

F32 = 4


def _per_sample_floats(cfg) -> int:
    """Floats autograd keeps per ray sample: position, encoding features, hidden activations, outputs."""
    e, f = cfg.field.encoding, cfg.field
    return 3 + e.n_levels * e.n_features_per_level + f.hidden_dim * max(1, f.n_hidden_layers) + 4


def estimates(cfg) -> dict[str, tuple[int, str]]:
    """{part: (bytes at least, the config keys that size it)} of a RunConfig's largest allocations."""
    r, t, e = cfg.render, cfg.trainer, cfg.field.encoding
    sample = _per_sample_floats(cfg) * F32
    table = min(2**e.log2_hashmap_size, (max(e.max_resolution, e.base_resolution) + 1) ** 3)
    return {
        "a training step's ray samples": (cfg.camera.batch_size * r.resolution**2 * r.num_samples * sample,
                                          "camera.batch_size x render.resolution² x render.num_samples x the field's features"),
        "a no-grad render chunk": (min(r.chunk_size, max(t.val_views, 1) * r.resolution**2) * r.num_samples * sample,
                                   "render.chunk_size x render.num_samples"),
        "the validation images": (t.val_views * r.resolution**2 * 3 * F32 * 4, "trainer.val_views x render.resolution²"),
        "the orbit frames": (cfg.orbit.frames * cfg.orbit.resolution**2 * 3 * F32, "orbit.frames x orbit.resolution²"),
        "the hash-grid table and its Adam state": (e.n_levels * table * e.n_features_per_level * F32 * 4,
                                                   "field.encoding.n_levels x 2^log2_hashmap_size"),
        "the export density grid": (cfg.export.resolution**3 * F32 * 2, "export.resolution³"),
        "the export texture": (cfg.export.texture_size**2 * 3 * F32, "export.texture_size²"),
        "the evaluation grid": (cfg.eval.iou_resolution**3 * F32, "eval.iou_resolution³"),
    }


def available_bytes(device: str = "auto") -> int | None:
    """Memory of the device a run uses: the GPU's on CUDA, else the machine's RAM (None: unknown)."""
    if device != "cpu" and torch.cuda.is_available():
        index = int(device.split(":")[1]) if ":" in device else 0
        if index < torch.cuda.device_count():
            return torch.cuda.get_device_properties(index).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def too_large(cfg) -> str | None:
    """A one-line reason when an allocation of ``cfg`` cannot fit in the device's memory, else None."""
    limit = available_bytes(cfg.device)
    if limit is None:
        return None
    for part, (need, keys) in estimates(cfg).items():
        if need > limit:
            return (f"{part} needs at least {need / 2**30:.3g} GB ({keys}) but the device has {limit / 2**30:.3g} GB; "
                    "lower these settings")
    return None
