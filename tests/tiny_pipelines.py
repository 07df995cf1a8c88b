"""Tiny random-weight pipelines of the modern prior families, built and ``save_pretrained`` like a
downloaded folder: SDXL, SD3 (CLIP-L + CLIP-G + T5), Flux (CLIP + T5, guidance embedding) and a
toy flow prior (ToyUNet + FlowMatchEulerDiscreteScheduler). Offline tokenizers: the real CLIP BPE
from open-clip-torch's wheel (``build_tokenizer``) and a T5-style Unigram tokenizer trained here
with ``tokenizers`` and wrapped as transformers' fast T5 tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TEXT_LEN = 16  # CLIP tokenizer.model_max_length of the tiny pipelines (SD: 77)
T5_LEN = 12  # T5 tokens per prompt (SD3: 256, Flux-dev: 512)
LATENT = 8  # latent side; the VAEs halve once, so images are 16 x 16
CORPUS = ["a red cube", "a green cone", "a blue sphere", "a yellow torus", "a DSLR photo of a hamburger",
          "blurry, low quality", "front view", "side view", "back view", "overhead view", "a corgi"]


def clip_tokenizer(folder: Path):
    from sds3d.toyworld.train_prior import build_tokenizer

    return build_tokenizer(TEXT_LEN, folder.parent / f"{folder.name}-tokenizer-src")


def t5_tokenizer():
    """A Unigram tokenizer trained on CORPUS, with T5's special tokens (<pad> 0, </s> 1, <unk> 2) and </s> appended."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import T5Tokenizer

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(CORPUS, trainer=trainers.UnigramTrainer(vocab_size=120, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))])
    return T5Tokenizer(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0, model_max_length=T5_LEN)


def t5_encoder(vocab_size: int, d_model: int):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=48, num_layers=1, num_heads=4,
                                   relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))


def clip_config(tokenizer, hidden: int = 32, projection: int = 32):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, max_position_embeddings=TEXT_LEN, projection_dim=projection,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def flow_vae(latent_channels: int = 4):
    """An SD3/Flux-style AutoencoderKL (shift and scaling factors, no quant convs)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels, layers_per_block=1, block_out_channels=(8, 16),
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8,
                         sample_size=2 * LATENT, shift_factor=0.0609, scaling_factor=1.5035, use_quant_conv=False, use_post_quant_conv=False)


def build_tiny_sdxl(folder: Path, seed: int = 0) -> Path:
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer(folder)
    unet = UNet2DConditionModel(
        sample_size=LATENT, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1), projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=64, norm_num_groups=8,
    )
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, block_out_channels=(8, 16),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8,
                        sample_size=2 * LATENT, scaling_factor=0.13025, force_upcast=True)
    # SDXL base's scheduler_config.json (EulerDiscreteScheduler, scaled-linear betas, epsilon).
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                                       timestep_spacing="leading", prediction_type="epsilon")
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=CLIPTextModel(clip_config(tokenizer)),
                                     text_encoder_2=CLIPTextModelWithProjection(clip_config(tokenizer)), tokenizer=tokenizer,
                                     tokenizer_2=tokenizer, unet=unet, scheduler=scheduler)
    pipe.save_pretrained(folder)
    return folder


def build_tiny_sd3(folder: Path, seed: int = 0, t5: bool = True) -> Path:
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer(folder)
    tokenizer_3 = t5_tokenizer() if t5 else None
    transformer = SD3Transformer2DModel(sample_size=LATENT, patch_size=2, in_channels=4, out_channels=4, num_layers=1, attention_head_dim=8,
                                        num_attention_heads=4, joint_attention_dim=64, caption_projection_dim=32, pooled_projection_dim=64,
                                        pos_embed_max_size=LATENT)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=flow_vae(),
        text_encoder=CLIPTextModelWithProjection(clip_config(tokenizer)), tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(clip_config(tokenizer)), tokenizer_2=tokenizer,
        text_encoder_3=t5_encoder(tokenizer_3.vocab_size, 64) if t5 else None, tokenizer_3=tokenizer_3,
    )
    pipe.save_pretrained(folder)
    return folder


def build_tiny_flux(folder: Path, seed: int = 0) -> Path:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    tokenizer, tokenizer_2 = clip_tokenizer(folder), t5_tokenizer()
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                                         num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
                                         axes_dims_rope=(4, 4, 8))
    # FLUX.1-dev's scheduler_config.json.
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    pipe = FluxPipeline(transformer=transformer, scheduler=scheduler, vae=flow_vae(), text_encoder=CLIPTextModel(clip_config(tokenizer)),
                        tokenizer=tokenizer, text_encoder_2=t5_encoder(tokenizer_2.vocab_size, 32), tokenizer_2=tokenizer_2)
    pipe.save_pretrained(folder)
    return folder


def build_tiny_toy_flow(folder: Path, seed: int = 0) -> Path:
    """ToyUNet + CLIP text model with random weights and a flow-matching scheduler, in the toy priors' layout."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from transformers import CLIPTextModel

    from sds3d.priors.toy_unet import ToyUNet

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer(folder)
    ToyUNet(sample_size=32, block_out_channels=(8, 16, 16), cross_attention_dim=16, attention_heads=2, norm_num_groups=4,
            camera_conditioning=True).save_pretrained(folder / "unet")
    CLIPTextModel(clip_config(tokenizer, hidden=16)).save_pretrained(folder / "text_encoder")
    tokenizer.save_pretrained(folder / "tokenizer")
    FlowMatchEulerDiscreteScheduler(shift=1.0).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "SDS3DToyPipeline", "unet": ["sds3d.priors.toy_unet", "ToyUNet"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]}))
    return folder
