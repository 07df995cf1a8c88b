"""What sds3d reads from a diffusers pipeline folder, and how: component classes from an allow-list,
weights from safetensors only, everything offline.

Files on disk are data, never code: a folder's ``model_index.json`` and config files *name*
classes, and those names are looked up in the allow-lists below (nothing is imported by the name a
file gives). Weights load only from ``.safetensors`` files (never a pickle: a ``.bin``-only folder
is refused), with ``local_files_only`` (sds3d never downloads at run time). Every failure is one
``PriorError`` line naming the folder and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .base import PriorError

#: model_index.json "_class_name" -> the prior family that loads it.
PIPELINES = {
    "StableDiffusionPipeline": "sd",
    "SDS3DToyPipeline": "sd",  # the toy priors (``sds3d train-prior``)
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusion3Pipeline": "sd3",
    "FluxPipeline": "flux",
}
#: Model classes by name, and the library that defines each (for its dtype keyword).
TRANSFORMERS_MODELS = ("CLIPTextModel", "CLIPTextModelWithProjection", "T5EncoderModel")
DIFFUSERS_MODELS = ("UNet2DConditionModel", "SD3Transformer2DModel", "FluxTransformer2DModel", "AutoencoderKL")
#: Tokenizer class names -> the tokenizer sds3d builds (transformers' fast tokenizers).
TOKENIZERS = {"CLIPTokenizer": "clip", "CLIPTokenizerFast": "clip", "T5Tokenizer": "t5", "T5TokenizerFast": "t5"}
#: Scheduler configs read as the DDPM family (their betas / prediction type; the sampler is sds3d's DDIM).
NOISE_SCHEDULERS = ("DDPMScheduler", "DDIMScheduler", "PNDMScheduler", "EulerDiscreteScheduler",
                    "EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler", "LMSDiscreteScheduler",
                    "UniPCMultistepScheduler", "HeunDiscreteScheduler")
FLOW_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler",)
#: transformers sets model_max_length to this when a tokenizer config has none.
_NO_MAX_LENGTH = 10**20
#: What tokenizer_config.json may hold for a CLIP tokenizer read from its tokenizer.json as it is
#: (``PipelineFolder._clip_tokenizer_file``); any other key takes CLIPTokenizer.from_pretrained.
_CLIP_SPECIAL = ("bos_token", "eos_token", "pad_token", "unk_token")
_CLIP_FILE_KEYS = ("tokenizer_class", "backend", "is_local", "local_files_only")  # where the tokenizer came from
_CLIP_CONFIG_KEYS = {*_CLIP_SPECIAL, *_CLIP_FILE_KEYS, "model_max_length", "padding_side", "truncation_side", "max_length",
                     "pad_to_multiple_of", "pad_token_type_id", "stride", "truncation_strategy", "clean_up_tokenization_spaces", "errors"}
_BPE_OPTIONS = ("dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", "byte_fallback", "ignore_merges")
_PICKLES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_SAFETENSORS_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}


def model_class(name: str) -> type[nn.Module]:
    """The class an allow-listed model name stands for."""
    if name == "ToyUNet":
        from .toy_unet import ToyUNet

        return ToyUNet
    if name in TRANSFORMERS_MODELS:
        import transformers

        return getattr(transformers, name)
    if name in DIFFUSERS_MODELS:
        import diffusers

        return getattr(diffusers, name)
    raise KeyError(name)


def dtype_kwarg(library: str, dtype: torch.dtype) -> dict:
    """from_pretrained's dtype keyword: transformers >= 4.56 calls it `dtype`, older ones and diffusers `torch_dtype`."""
    if library == "transformers":
        import transformers

        major, minor = (int(v) for v in transformers.__version__.split(".")[:2])
        return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}
    return {"torch_dtype": dtype}


def read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PriorError(f"{path.parent} is not a diffusers pipeline folder: {what} {path.name} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PriorError(f"{path} is corrupt ({e.__class__.__name__}); re-download or re-train the prior") from None


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


class PipelineFolder:
    """A diffusers pipeline folder: its index, its components' classes and weight files, loaded one by one.

    Args:
        path: the folder (``resolve_prior_path``'s answer).

    Raises:
        PriorError: no or corrupt model_index.json.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.index = read_json(self.path / "model_index.json", "the pipeline index")
        self.pipeline = self.index.get("_class_name")

    @property
    def family(self) -> str:
        """sd, sdxl, sd3 or flux (``PIPELINES``)."""
        if self.pipeline not in PIPELINES:
            raise PriorError(f"{self.path} is a {self.pipeline!r} folder; sds3d loads {', '.join(p for p in PIPELINES if p != 'SDS3DToyPipeline')} "
                             f"folders and toy priors")
        return PIPELINES[self.pipeline]

    def declared(self, slot: str) -> bool:
        """Whether model_index.json names a component for ``slot`` (diffusers writes [null, null] for a dropped one)."""
        entry = self.index.get(slot)
        return isinstance(entry, list) and len(entry) == 2 and entry[1] is not None

    def has(self, slot: str) -> bool:
        return (self.path / slot).is_dir()

    def require(self, *slots: str) -> None:
        """Raise PriorError naming every missing component folder."""
        missing = [s for s in slots if not self.has(s)]
        if missing:
            raise PriorError(f"{self.path} is not a complete diffusers pipeline: missing {', '.join(s + '/' for s in missing)} "
                             f"(re-download it, e.g. with the hf download command of the README)")

    def class_name(self, slot: str, allowed: tuple[str, ...]) -> str:
        """The class of a component, from its own config (else model_index.json), checked against ``allowed``."""
        folder = self.path / slot
        name = None
        for file, key in (("config.json", "_class_name"), ("config.json", "architectures"),
                          ("tokenizer_config.json", "tokenizer_class"), ("scheduler_config.json", "_class_name")):
            if (folder / file).is_file():
                value = read_json(folder / file, f"the {slot} config").get(key)
                name = value[0] if isinstance(value, list) and value else value
                if name:
                    break
        if not name and self.declared(slot):
            name = self.index[slot][1]
        if name not in allowed:
            raise PriorError(f"{folder} is a {name!r}; sds3d loads {' or '.join(allowed)} there (files name classes, "
                             f"sds3d never imports them: convert the component to one of these)")
        return name

    def weights(self, slot: str) -> tuple[list[Path], str | None]:
        """The component's .safetensors files and their variant ("fp16" for model.fp16.safetensors, else None).

        Raises:
            PriorError: only pickled weights (.bin/.pt/.ckpt), or none at all.
        """
        folder = self.path / slot
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            pickles = sorted(f.name for f in folder.iterdir() if f.suffix in _PICKLES) if folder.is_dir() else []
            if pickles:
                raise PriorError(f"{folder} holds only {pickles[0]} (a pickle, which sds3d never loads); download its .safetensors "
                                 f"weights (hf download <repo> --include \"{slot}/*.safetensors\"), or re-save it with "
                                 f"save_pretrained(safe_serialization=True) on a machine where you trust the file")
            raise PriorError(f"{folder} has no weights (no .safetensors file); re-download the folder")
        plain = [f for f in files if len(f.name.split(".")) == 2]
        variant = None if plain else files[0].name.split(".")[-2]
        return files, variant

    def shipped_dtype(self, slot: str) -> torch.dtype | None:
        """The dtype most of a component's weights are stored in (read from the safetensors header only)."""
        from safetensors import safe_open

        files, _ = self.weights(slot)
        counts: dict[str, int] = {}
        try:
            with safe_open(str(files[0]), framework="pt") as f:
                for key in list(f.keys())[:64]:
                    dtype = f.get_slice(key).get_dtype()
                    counts[dtype] = counts.get(dtype, 0) + 1
        except Exception as e:  # noqa: BLE001 -- a truncated or foreign file: say which
            raise PriorError(f"{files[0]} is not a readable safetensors file ({_first_line(e)}); re-download it") from None
        return _SAFETENSORS_DTYPES.get(max(counts, key=counts.get)) if counts else None

    def load_model(self, slot: str, allowed: tuple[str, ...], dtype: torch.dtype, what: str) -> nn.Module:
        """Load one model component (class checked, safetensors only, offline) in ``dtype``."""
        name = self.class_name(slot, allowed)
        _, variant = self.weights(slot)
        library = "transformers" if name in TRANSFORMERS_MODELS else "diffusers"
        kwargs = dict(subfolder=slot, local_files_only=True, use_safetensors=True, variant=variant, **dtype_kwarg(library, dtype))
        try:
            return model_class(name).from_pretrained(self.path, **kwargs)
        except Exception as e:  # noqa: BLE001 -- corrupt or truncated weights: say which, not a traceback
            raise PriorError(f"could not load the {what} of {self.path}: {_first_line(e)}") from None

    def load_tokenizer(self, slot: str, kinds: tuple[str, ...], max_positions: int | None = None):
        """A fast tokenizer of one of ``kinds`` ("clip", "t5"). A config without model_max_length (some
        community folders) gets ``max_positions`` (the text encoder's max_position_embeddings)."""
        from transformers import CLIPTokenizer, T5Tokenizer

        name = self.class_name(slot, tuple(n for n, k in TOKENIZERS.items() if k in kinds))
        cls = CLIPTokenizer if TOKENIZERS[name] == "clip" else T5Tokenizer
        try:
            tokenizer = (self._clip_tokenizer_file(slot) if cls is CLIPTokenizer else None) or \
                cls.from_pretrained(self.path, subfolder=slot, local_files_only=True)
        except Exception as e:  # noqa: BLE001
            raise PriorError(f"could not load the tokenizer {self.path / slot}: {_first_line(e)}") from None
        if tokenizer.model_max_length >= _NO_MAX_LENGTH and max_positions is not None:
            tokenizer.model_max_length = int(max_positions)
        return tokenizer

    def _clip_tokenizer_file(self, slot: str):
        """The folder's tokenizer.json read as it is, when it is the tokenizer ``CLIPTokenizer`` builds, else None.

        ``CLIPTokenizer.from_pretrained`` parses tokenizer.json in Python to rebuild the backend from its
        vocabulary and merges with the class's own pipeline (0.36 s for CLIP's 49k tokens); tokenizers
        reads the file in Rust (0.1 s). The file is used only when everything else the class would set
        is what the file holds: normalizer, pre-tokenizer, decoder, BPE options, the post-processor
        (RobertaProcessing of the file's bos/eos ids), no added tokens beyond the special ones, and
        tokenizer_config.json's settings; so the ids are those of from_pretrained's tokenizer.
        """
        from tokenizers import processors
        from transformers import CLIPTokenizer

        try:
            from transformers import TokenizersBackend
        except ImportError:  # transformers < 5
            return None
        folder = self.path / slot
        config = read_json(folder / "tokenizer_config.json", "the tokenizer config") if (folder / "tokenizer_config.json").is_file() else {}
        if not (folder / "tokenizer.json").is_file() or set(config) - _CLIP_CONFIG_KEYS:
            return None
        special = {k: config.get(k, "<|startoftext|>" if k == "bos_token" else "<|endoftext|>") for k in _CLIP_SPECIAL}
        if not all(isinstance(v, str) for v in special.values()):
            return None
        settings = {k: v for k, v in config.items() if k not in (*_CLIP_SPECIAL, *_CLIP_FILE_KEYS)}  # as from_pretrained passes them
        tokenizer = TokenizersBackend(tokenizer_file=str(folder / "tokenizer.json"), **special, **settings)
        ours, blank = tokenizer.backend_tokenizer, CLIPTokenizer(**special).backend_tokenizer
        post = processors.RobertaProcessing((special["eos_token"], tokenizer.eos_token_id), (special["bos_token"], tokenizer.bos_token_id), False, False)
        same = (all(getattr(ours, part).__getstate__() == getattr(blank, part).__getstate__() for part in ("normalizer", "pre_tokenizer", "decoder"))
                and type(ours.model) is type(blank.model)
                and all(getattr(ours.model, a) == getattr(blank.model, a) for a in _BPE_OPTIONS)
                and ours.post_processor.__getstate__() == post.__getstate__()
                and {t.content for t in ours.get_added_tokens_decoder().values()} <= set(special.values()))
        return tokenizer if same else None

    def scheduler_config(self, allowed: tuple[str, ...]) -> dict:
        """The scheduler config (its class checked against ``allowed``)."""
        self.class_name("scheduler", allowed)
        return read_json(self.path / "scheduler" / "scheduler_config.json", "the scheduler config")

    def config(self, slot: str) -> dict:
        """A model component's config.json."""
        return read_json(self.path / slot / "config.json", f"the {slot} config")

    def parameter_count(self, slot: str, allowed: tuple[str, ...]) -> int:
        """Parameters of a model component, from its config alone (built without weights, on the meta device)."""
        from accelerate import init_empty_weights

        name = self.class_name(slot, allowed)
        cls = model_class(name)
        try:
            if name in TRANSFORMERS_MODELS:
                config = cls.config_class.from_pretrained(self.path, subfolder=slot, local_files_only=True)
                with init_empty_weights():
                    model = cls(config)
                model.tie_weights()  # tied embeddings (T5's shared / embed_tokens) are one parameter, as when loaded
            else:
                with init_empty_weights():
                    model = cls.from_config(cls.load_config(self.path, subfolder=slot, local_files_only=True))
        except Exception as e:  # noqa: BLE001
            raise PriorError(f"{self.path / slot}/config.json does not build a {name} ({_first_line(e)}); re-download it") from None
        return sum(p.numel() for p in model.parameters())
