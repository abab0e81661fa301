"""The one mapping table from ComfyUI class types to Loom node types.

Each entry names the Loom node, ComfyUI's widget order (how the UI format's positional
`widgets_values` read; `seed+` is a seed followed by its "control after generate" value, and
names after `|` may be absent in files from older ComfyUI versions), how ComfyUI's input
names become Loom's, the order of ComfyUI's outputs as Loom output names, and converters
for values whose units or spellings differ. A converter returns the Loom value, or raises
`Lossy(value, why)` to carry a nearest value and report what changed, or `Drop(why)` to
carry nothing and report it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn


class Lossy(Exception):
    def __init__(self, value: Any, why: str):
        super().__init__(why)
        self.value, self.why = value, why


class Drop(Exception):
    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


@dataclass(frozen=True)
class Map:
    loom: str
    widgets: tuple[str, ...] = ()
    inputs: dict[str, str] = field(default_factory=dict)  # ComfyUI name -> Loom name
    outputs: tuple[str, ...] = ()  # ComfyUI output slots, as Loom output names
    values: dict[str, Callable[[Any], Any]] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)  # Loom params set regardless
    ignore: dict[str, Any] = field(default_factory=dict)  # dropped; reported unless default
    title: str = ""  # ComfyUI's default display name

    @property
    def widget_names(self) -> list[str]:
        return [w.rstrip("+") for w in self.widgets if w != "|"]

    def required_widgets(self) -> int:
        n = 0
        for w in self.widgets:
            if w == "|":
                break
            n += 2 if w.endswith("+") else 1
        return n

    def max_widgets(self) -> int:
        return sum(2 if w.endswith("+") else 1 for w in self.widgets if w != "|")


# ---- value spellings ------------------------------------------------------------------------

# ComfyUI's KSampler sampler and scheduler names: Loom's Sampler means the same by each
# (nodes/diffusion/ksampling), so they map onto themselves.
COMFY_SAMPLERS = (
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2",
    "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis",
    "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp",
    "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "exp_heun_2_x0",
    "exp_heun_2_x0_sde", "ddim", "uni_pc", "uni_pc_bh2")
COMFY_SCHEDULERS = ("simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta",
                    "normal", "linear_quadratic", "kl_optimal")
SAMPLER_NAMES = {n: n for n in COMFY_SAMPLERS}
SCHEDULER_NAMES = {n: n for n in COMFY_SCHEDULERS}
RESIZE = {"nearest-exact": "nearest", "bilinear": "bilinear", "area": "area",
          "bicubic": "bicubic", "lanczos": "lanczos"}
LATENT_RESIZE = {"nearest-exact": "nearest", "bilinear": "bilinear", "area": "area",
                 "bicubic": "bicubic"}


def _name(table: dict[str, str], nearest: dict[str, str], what: str, default: str
          ) -> Callable[[Any], Any]:
    def conv(v: Any) -> Any:
        if not isinstance(v, str):
            raise Drop(f"expected the name of a {what}, got {v!r}")
        if v in table:
            return table[v]
        if v in nearest:
            raise Lossy(nearest[v], f"Loom has no {what} {v!r}; using {nearest[v]!r}")
        raise Lossy(default, f"unknown {what} {v!r}; using {default!r}")
    return conv


sampler_name = _name(SAMPLER_NAMES, {}, "sampler", "euler")
scheduler_name = _name(SCHEDULER_NAMES, {}, "scheduler", "normal")
resize_method = _name(RESIZE, {"bislerp": "bicubic"}, "resize method", "bilinear")
latent_method = _name(LATENT_RESIZE, {"bislerp": "bilinear"}, "latent resize method",
                      "bilinear")


def model_name(v: Any) -> Any:
    """ComfyUI stores Windows sub-folder names with backslashes."""
    return v.replace("\\", "/") if isinstance(v, str) else v


def enable(v: Any) -> Any:
    if isinstance(v, bool):
        return v
    if v in ("enable", "disable"):
        return v == "enable"
    raise Drop(f"expected 'enable' or 'disable', got {v!r}")


def threshold_255(v: Any) -> Any:
    """ComfyUI's Canny thresholds are 0..1; Loom's are 0..255."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return max(0, min(255, round(v * 255)))
    raise Drop(f"expected a number, got {v!r}")


def color_int(v: Any) -> Any:
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 0xFFFFFF:
        return f"#{v:06x}"
    raise Drop(f"expected a colour as an integer 0xRRGGBB, got {v!r}")


def crop_fit(v: Any) -> Any:
    if not isinstance(v, str):
        raise Drop(f"expected 'disabled' or 'center', got {v!r}")
    return {"disabled": "stretch", "center": "fill"}.get(v) or _drop(f"unknown crop {v!r}")


def mask_channel(v: Any) -> Any:
    if v in ("red", "green", "blue"):
        return v
    if v == "alpha":
        raise Lossy("luminance", "Loom's images have no alpha channel here; using luminance "
                    "(load the file with Load Image Mask for its alpha)")
    raise Drop(f"unknown channel {v!r}")


def _drop(why: str) -> NoReturn:
    raise Drop(why)


# UNETLoader's weight dtypes, which Load Diffusion Model takes by the same names
WEIGHT_DTYPES = ("default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2")
weight_dtype = _name({n: n for n in WEIGHT_DTYPES}, {}, "weight dtype", "default")


def clip_type(*known: str) -> Callable[[Any], Any]:
    """A CLIPLoader's type: Loom reads the types of the families it runs."""
    def conv(v: Any) -> Any:
        if v in known:
            return v
        raise Lossy(known[0], f"Loom has no text encoders of type {v!r}; using {known[0]!r}")
    return conv


def vae_family(v: Any) -> Any:
    return v


SEED = {"noise_seed": "seed"}

# ---- the table ----------------------------------------------------------------------------

MAPPING: dict[str, Map] = {
    # loaders
    "CheckpointLoaderSimple": Map("load_checkpoint", ("ckpt_name",),
                                  outputs=("model", "clip", "vae"),
                                  values={"ckpt_name": model_name}, title="Load Checkpoint"),
    "CheckpointLoader": Map("load_checkpoint", ("config_name", "ckpt_name"),
                            outputs=("model", "clip", "vae"), values={"ckpt_name": model_name},
                            ignore={"config_name": None},
                            title="Load Checkpoint With Config (DEPRECATED)"),
    "VAELoader": Map("load_vae", ("vae_name",), outputs=("vae",),
                     values={"vae_name": model_name}, title="Load VAE"),
    "LoraLoader": Map("load_lora", ("lora_name", "strength_model", "strength_clip"),
                      outputs=("model", "clip"), values={"lora_name": model_name},
                      title="Load LoRA"),
    "LoraLoaderModelOnly": Map("load_lora", ("lora_name", "strength_model"), outputs=("model",),
                               values={"lora_name": model_name}, fixed={"strength_clip": 0.0},
                               title="LoraLoaderModelOnly"),
    "ControlNetLoader": Map("load_controlnet", ("control_net_name",), outputs=("control_net",),
                            values={"control_net_name": model_name},
                            title="Load ControlNet Model"),
    "DiffControlNetLoader": Map("load_controlnet", ("control_net_name",),
                                outputs=("control_net",),
                                values={"control_net_name": model_name}, ignore={"model": None},
                                title="Load ControlNet Model (diff)"),
    "UNETLoader": Map("load_diffusion_model", ("unet_name", "weight_dtype"), outputs=("model",),
                      values={"unet_name": model_name, "weight_dtype": weight_dtype},
                      title="Load Diffusion Model"),
    "UpscaleModelLoader": Map("load_upscale_model", ("model_name",),
                              inputs={"model_name": "upscale_model_name"},
                              outputs=("upscale_model",), values={"model_name": model_name},
                              title="Load Upscale Model"),
    # text encoders from their own files
    "CLIPLoader": Map("load_text_encoder", ("clip_name", "type", "|", "device"),
                      inputs={"type": "clip_type"}, outputs=("clip",),
                      values={"clip_name": model_name,
                              "type": clip_type("stable_diffusion", "sd3")},
                      ignore={"device": "default"}, title="Load CLIP"),
    "DualCLIPLoader": Map("load_dual_text_encoders", ("clip_name1", "clip_name2", "type", "|",
                                                      "device"),
                          inputs={"type": "clip_type"}, outputs=("clip",),
                          values={"clip_name1": model_name, "clip_name2": model_name,
                                  "type": clip_type("flux", "sdxl", "sd3")},
                          ignore={"device": "default"}, title="DualCLIPLoader"),
    "TripleCLIPLoader": Map("load_triple_text_encoders",
                            ("clip_name1", "clip_name2", "clip_name3"), outputs=("clip",),
                            values={"clip_name1": model_name, "clip_name2": model_name,
                                    "clip_name3": model_name}, title="TripleCLIPLoader"),
    "CLIPTextEncodeFlux": Map("text_encode_flux", ("clip_l", "t5xxl", "guidance"),
                              outputs=("conditioning",), title="CLIPTextEncodeFlux"),
    "CLIPTextEncodeSD3": Map("text_encode_sd3", ("clip_l", "clip_g", "t5xxl", "empty_padding"),
                             outputs=("conditioning",), title="CLIPTextEncodeSD3"),
    # conditioning
    "CLIPSetLastLayer": Map("clip_set_last_layer", ("stop_at_clip_layer",), outputs=("clip",),
                            title="CLIP Set Last Layer"),
    "CLIPTextEncode": Map("text_encode", ("text",), outputs=("conditioning",),
                          title="CLIP Text Encode (Prompt)"),
    "CLIPTextEncodeSDXL": Map("text_encode_sdxl", (
        "width", "height", "crop_w", "crop_h", "target_width", "target_height", "text_g",
        "text_l"), outputs=("conditioning",), title="CLIPTextEncodeSDXL"),
    "CLIPTextEncodeSDXLRefiner": Map("text_encode_sdxl_refiner",
                                     ("ascore", "width", "height", "text"),
                                     outputs=("conditioning",),
                                     title="CLIPTextEncodeSDXLRefiner"),
    "ConditioningCombine": Map("conditioning_combine", outputs=("conditioning",),
                               title="Conditioning (Combine)"),
    "ConditioningSetArea": Map("conditioning_set_area",
                               ("width", "height", "x", "y", "strength"),
                               outputs=("conditioning",), title="Conditioning (Set Area)"),
    "ConditioningZeroOut": Map("conditioning_zero_out", outputs=("conditioning",),
                               title="ConditioningZeroOut"),
    "ControlNetApply": Map("apply_controlnet", ("strength",), outputs=("conditioning",),
                           title="Apply ControlNet (OLD)"),
    "ControlNetApplyAdvanced": Map("apply_controlnet_pair",
                                   ("strength", "start_percent", "end_percent"),
                                   outputs=("positive", "negative"), ignore={"vae": None},
                                   title="Apply ControlNet"),
    # latents and sampling
    "EmptyLatentImage": Map("empty_latent", ("width", "height", "batch_size"),
                            outputs=("latent",), title="Empty Latent Image"),
    "KSampler": Map("sampler", ("seed+", "steps", "cfg", "sampler_name", "scheduler", "denoise"),
                    inputs={"latent_image": "latent", "sampler_name": "sampler"},
                    outputs=("latent",),
                    values={"sampler_name": sampler_name, "scheduler": scheduler_name},
                    title="KSampler"),
    "KSamplerAdvanced": Map("sampler_advanced", (
        "add_noise", "noise_seed+", "steps", "cfg", "sampler_name", "scheduler",
        "start_at_step", "end_at_step", "return_with_leftover_noise"),
        inputs={"latent_image": "latent", "sampler_name": "sampler", **SEED},
        outputs=("latent",),
        values={"sampler_name": sampler_name, "scheduler": scheduler_name, "add_noise": enable,
                "return_with_leftover_noise": enable}, title="KSampler (Advanced)"),
    "LatentFromBatch": Map("latent_from_batch", ("batch_index", "length"),
                           inputs={"samples": "latent"}, outputs=("latent",),
                           title="Latent From Batch"),
    "RepeatLatentBatch": Map("repeat_latent_batch", ("amount",), inputs={"samples": "latent"},
                             outputs=("latent",), title="Repeat Latent Batch"),
    "VAEDecode": Map("vae_decode", inputs={"samples": "latent"}, outputs=("image",),
                     title="VAE Decode"),
    "VAEEncode": Map("vae_encode", inputs={"pixels": "image"}, outputs=("latent",),
                     title="VAE Encode"),
    "VAEDecodeTiled": Map("vae_decode", ("tile_size", "|", "overlap", "temporal_size",
                                         "temporal_overlap"),
                          inputs={"samples": "latent"}, outputs=("image",),
                          fixed={"tiled": True},
                          ignore={"tile_size": 512, "overlap": 64, "temporal_size": 64,
                                  "temporal_overlap": 8}, title="VAE Decode (Tiled)"),
    "VAEEncodeTiled": Map("vae_encode", ("tile_size", "|", "overlap", "temporal_size",
                                         "temporal_overlap"),
                          inputs={"pixels": "image"}, outputs=("latent",), fixed={"tiled": True},
                          ignore={"tile_size": 512, "overlap": 64, "temporal_size": 64,
                                  "temporal_overlap": 8}, title="VAE Encode (Tiled)"),
    "VAEEncodeForInpaint": Map("vae_encode_inpaint", ("grow_mask_by",),
                               inputs={"pixels": "image"}, outputs=("latent",),
                               title="VAE Encode (for Inpainting)"),
    "SetLatentNoiseMask": Map("set_latent_noise_mask", inputs={"samples": "latent"},
                              outputs=("latent",), title="Set Latent Noise Mask"),
    "InpaintModelConditioning": Map("inpaint_model_conditioning", ("|", "noise_mask"),
                                    outputs=("positive", "negative", "latent"),
                                    title="InpaintModelConditioning"),
    "LatentUpscale": Map("upscale_latent", ("upscale_method", "width", "height", "crop"),
                         inputs={"samples": "latent", "upscale_method": "method"},
                         outputs=("latent",), values={"upscale_method": latent_method},
                         ignore={"crop": "disabled"}, title="Upscale Latent"),
    "LatentUpscaleBy": Map("upscale_latent_by", ("upscale_method", "scale_by"),
                           inputs={"samples": "latent", "upscale_method": "method"},
                           outputs=("latent",), values={"upscale_method": latent_method},
                           title="Upscale Latent By"),
    # custom sampling
    "SamplerCustom": Map("custom_sampler", ("add_noise", "noise_seed+", "cfg"),
                         inputs={"latent_image": "latent", **SEED},
                         outputs=("output", "denoised_output"), title="SamplerCustom"),
    "SamplerCustomAdvanced": Map("custom_sampler_advanced", inputs={"latent_image": "latent"},
                                 outputs=("output", "denoised_output"),
                                 title="SamplerCustomAdvanced"),
    "KSamplerSelect": Map("sampler_select", ("sampler_name",),
                          inputs={"sampler_name": "sampler"}, outputs=("sampler",),
                          values={"sampler_name": sampler_name}, title="KSamplerSelect"),
    "BasicScheduler": Map("schedule_sigmas", ("scheduler", "steps", "denoise"),
                          outputs=("sigmas",), values={"scheduler": scheduler_name},
                          title="BasicScheduler"),
    "KarrasScheduler": Map("karras_sigmas", ("steps", "sigma_max", "sigma_min", "rho"),
                           outputs=("sigmas",), title="KarrasScheduler"),
    "SDTurboScheduler": Map("turbo_sigmas", ("steps", "denoise"), outputs=("sigmas",),
                            title="SDTurboScheduler"),
    "SetFirstSigma": Map("set_first_sigma", ("sigma",), outputs=("sigmas",),
                         title="SetFirstSigma"),
    "BasicGuider": Map("basic_guider", outputs=("guider",), title="BasicGuider"),
    "CFGGuider": Map("cfg_guider", ("cfg",), outputs=("guider",), title="CFGGuider"),
    "RandomNoise": Map("random_noise", ("noise_seed+",), inputs=dict(SEED), outputs=("noise",),
                       title="RandomNoise"),
    "DisableNoise": Map("disable_noise", outputs=("noise",), title="DisableNoise"),
    # flow-matching families (Flux, SD 3.5, ...)
    "FluxGuidance": Map("flux_guidance", ("guidance",), outputs=("conditioning",),
                        title="FluxGuidance"),
    "ReferenceLatent": Map("reference_latent", outputs=("conditioning",),
                           title="ReferenceLatent"),
    "EmptySD3LatentImage": Map("empty_latent_16", ("width", "height", "batch_size"),
                               outputs=("latent",), title="EmptySD3LatentImage"),
    "ModelSamplingFlux": Map("model_sampling_flux", ("max_shift", "base_shift", "width",
                                                     "height"),
                             outputs=("model",), title="ModelSamplingFlux"),
    "ModelSamplingSD3": Map("model_sampling_sd3", ("shift",), outputs=("model",),
                            title="ModelSamplingSD3"),
    "ModelSamplingAuraFlow": Map("model_sampling_auraflow", ("shift",), outputs=("model",),
                                 title="ModelSamplingAuraFlow"),
    # images
    "LoadImage": Map("load_image", ("image", "upload"), inputs={"image": "path"},
                     outputs=("image", "mask"), ignore={"upload": "image"}, title="Load Image"),
    "LoadImageMask": Map("load_image_mask", ("image", "channel", "upload"),
                         inputs={"image": "path"}, outputs=("mask",),
                         ignore={"upload": "image"}, title="Load Image (as Mask)"),
    "SaveImage": Map("save_image", ("filename_prefix",), title="Save Image"),
    "PreviewImage": Map("preview_image", title="Preview Image"),
    "ImageScale": Map("resize_image", ("upscale_method", "width", "height", "crop"),
                      inputs={"upscale_method": "method", "crop": "fit"}, outputs=("image",),
                      values={"upscale_method": resize_method, "crop": crop_fit},
                      title="Upscale Image"),
    "ImageScaleBy": Map("upscale_image_by", ("upscale_method", "scale_by"),
                        inputs={"upscale_method": "method"}, outputs=("image",),
                        values={"upscale_method": resize_method}, title="Upscale Image By"),
    "ImageScaleToTotalPixels": Map("scale_to_megapixels", ("upscale_method", "megapixels", "|",
                                                           "resolution_steps"),
                                   inputs={"upscale_method": "method"}, outputs=("image",),
                                   values={"upscale_method": resize_method},
                                   ignore={"resolution_steps": 1},
                                   title="ImageScaleToTotalPixels"),
    "ImagePadForOutpaint": Map("pad_for_outpaint", ("left", "top", "right", "bottom",
                                                    "feathering"),
                               outputs=("image", "mask"), title="Pad Image for Outpainting"),
    # from Acly's comfyui-inpaint-nodes, the usual way to pre-fill before a repaint
    "INPAINT_MaskedFill": Map("fill_masked_area", ("fill", "falloff"), inputs={"fill": "mode"},
                              outputs=("image",), ignore={"falloff": 0},
                              title="Fill Masked Area"),
    "ImageCompositeMasked": Map("composite_images", ("x", "y", "resize_source"),
                                outputs=("image",), ignore={"resize_source": False},
                                title="ImageCompositeMasked"),
    "ImageInvert": Map("invert_image", outputs=("image",), title="Invert Image"),
    "ImageBlend": Map("blend_images", ("blend_factor", "blend_mode"),
                      inputs={"image1": "image_a", "image2": "image_b",
                              "blend_factor": "factor", "blend_mode": "mode"},
                      outputs=("image",), title="Image Blend"),
    "ImageCrop": Map("crop_image", ("width", "height", "x", "y"), outputs=("image",),
                     title="Image Crop"),
    "EmptyImage": Map("empty_image", ("width", "height", "batch_size", "color"),
                      outputs=("image",), values={"color": color_int}, title="EmptyImage"),
    "Canny": Map("canny", ("low_threshold", "high_threshold"), outputs=("image",),
                 values={"low_threshold": threshold_255, "high_threshold": threshold_255},
                 title="Canny"),
    "ImageUpscaleWithModel": Map("upscale_with_model", outputs=("image",),
                                 title="Upscale Image (using Model)"),
    # masks
    "GrowMask": Map("grow_mask", ("expand", "tapered_corners"), inputs={"expand": "pixels"},
                    outputs=("mask",), ignore={"tapered_corners": True}, title="GrowMask"),
    "InvertMask": Map("invert_mask", outputs=("mask",), title="InvertMask"),
    "SolidMask": Map("solid_mask", ("value", "width", "height"), outputs=("mask",),
                     title="SolidMask"),
    "MaskComposite": Map("mask_composite", ("x", "y", "operation"), outputs=("mask",),
                         title="MaskComposite"),
    "ImageToMask": Map("image_to_mask", ("channel",), outputs=("mask",),
                       values={"channel": mask_channel}, title="Convert Image to Mask"),
    "MaskToImage": Map("mask_to_image", outputs=("image",), title="Convert Mask to Image"),
    "ThresholdMask": Map("threshold_mask", ("value",), inputs={"value": "threshold"},
                         outputs=("mask",), title="ThresholdMask"),
    "FeatherMask": Map("feather_mask", ("left", "top", "right", "bottom"), outputs=("mask",),
                       title="FeatherMask"),
    "MaskPreview": Map("preview_mask", inputs={"mask": "mask"}, title="MaskPreview"),
    # notes
    "Note": Map("note", ("text",), title="Note"),
    "MarkdownNote": Map("note", ("text",), fixed={"markdown": True}, title="Markdown Note"),
}

# UI-only helpers the converter resolves itself, and the nodes it knows Loom lacks.
STRUCTURAL = ("Reroute", "PrimitiveNode")
KNOWN_MISSING = {
    "CLIPVisionLoader": "Loom has no CLIP vision nodes yet",
    "CLIPVisionEncode": "Loom has no CLIP vision nodes yet",
    "unCLIPConditioning": "Loom has no unCLIP nodes yet",
    "unCLIPCheckpointLoader": "Loom has no unCLIP nodes yet",
    "GLIGENLoader": "Loom has no GLIGEN nodes yet",
    "GLIGENTextBoxApply": "Loom has no GLIGEN nodes yet",
}


def reverse() -> dict[str, str]:
    """Loom node type -> the ComfyUI class type it is exported as (the first mapping)."""
    out: dict[str, str] = {}
    for comfy, m in MAPPING.items():
        out.setdefault(m.loom, comfy)
    return out
