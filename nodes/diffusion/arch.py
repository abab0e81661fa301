"""Model architectures ("families") and what each is, in one table: code asks an `Arch`
(is_sdxl_like, text encoders, latent channels, prediction type, native resolution)
instead of testing family names. A family is a row here; the flow-model families (Flux,
SD 3.5, Qwen-Image, Z-Image) become rows with a transformer denoiser and flow
prediction, and the code that asks these questions needs no new branch per name."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class Prediction(StrEnum):
    epsilon = "epsilon"
    v = "v_prediction"
    flow = "flow"  # rectified flow (velocity along a straight path)


class Denoiser(StrEnum):
    unet = "unet"
    transformer = "transformer"


@dataclass(frozen=True)
class ArchInfo:
    base: str  # the family its ControlNets and VAEs are made for (sd15_inpaint -> sd15)
    context_dim: int  # width of the text context its denoiser reads
    text_encoders: tuple[str, ...]
    native_resolution: int
    prediction: Prediction = Prediction.epsilon
    latent_channels: int = 4
    in_channels: int = 4  # the denoiser's input: latent, plus mask and masked image (9)
    denoiser: Denoiser = Denoiser.unet
    # a transformer reads patch x patch latent pixels as one token: in_channels counts a
    # token's channels (Flux: 16 x 2 x 2 = 64; Fill 384 with mask and masked image)
    patch: int = 1
    guidance: bool = False  # a distilled-guidance embedding (Flux dev) instead of CFG only
    control_concat: bool = False  # extra input channels are a control image's latent
    vae_factors: tuple[float, float] = (0.18215, 0.0)  # (scaling, shift) of its latents
    sdxl_like: bool = False  # pooled embedding and size conditioning (SDXL's micro-conds)
    refiner: bool = False  # reads only the aesthetic score, not the target size
    # shipped config folders for other prediction types than the family's own
    other_configs: tuple[tuple[Prediction, str], ...] = ()


class Arch(StrEnum):
    """A family; equal to its name, which model refs and config folders carry."""

    sd15 = "sd15"
    sd2 = "sd2"
    sdxl = "sdxl"
    sdxl_refiner = "sdxl_refiner"
    sd15_inpaint = "sd15_inpaint"
    sd2_inpaint = "sd2_inpaint"
    sdxl_inpaint = "sdxl_inpaint"
    flux = "flux"  # dev, and Kontext (the same shapes; it reads reference latents)
    flux_schnell = "flux_schnell"
    flux_fill = "flux_fill"
    flux_control = "flux_control"  # Canny and Depth: the same shapes, a control latent

    @property
    def info(self) -> ArchInfo:
        return _INFO[self]

    @property
    def base(self) -> Arch:
        return Arch(self.info.base)

    @property
    def is_sdxl_like(self) -> bool:
        return self.info.sdxl_like

    @property
    def is_refiner(self) -> bool:
        return self.info.refiner

    @property
    def is_inpaint(self) -> bool:
        info = self.info
        return info.in_channels > info.latent_channels * info.patch ** 2 and \
            not info.control_concat

    @property
    def is_transformer(self) -> bool:
        return self.info.denoiser is Denoiser.transformer

    @property
    def text_encoders(self) -> tuple[str, ...]:
        return self.info.text_encoders

    @property
    def latent_channels(self) -> int:
        return self.info.latent_channels

    @property
    def prediction(self) -> Prediction:
        return self.info.prediction

    @property
    def native_resolution(self) -> int:
        return self.info.native_resolution

    @property
    def context_dim(self) -> int:
        return self.info.context_dim

    def config_folder(self, prediction: Prediction | None = None) -> str:
        """The name of the shipped diffusers configs for this family (and prediction)."""
        return dict(self.info.other_configs).get(prediction, self.value)

    @classmethod
    def of(cls, family: str) -> Arch | None:
        """The Arch of a ref's family name; None for one Loom has no row for."""
        try:
            return cls(family)
        except ValueError:
            return None

    @classmethod
    def bases(cls) -> tuple[Arch, ...]:
        """The families others derive from (sd15, sd2, sdxl): what a VAE is made for."""
        return tuple(a for a in cls if a.base is a)

    @classmethod
    def from_denoiser(cls, context_dim: int, in_channels: int = 4, guidance: bool = False
                      ) -> Arch | None:
        """The family of a denoiser by the width of the context it reads and its input."""
        for a in cls:
            if (a.context_dim, a.info.in_channels, a.info.guidance) == (
                    context_dim, in_channels, guidance):
                return a
        return None

    @classmethod
    def variant(cls, base: Arch, in_channels: int, guidance: bool) -> Arch | None:
        """The member of `base`'s family with this input width and guidance embedding (a
        pruned or smaller model of the same layout reads another context width)."""
        for a in cls:
            if a.base is base and (a.info.in_channels, a.info.guidance) == (in_channels,
                                                                              guidance):
                return a
        return None


_CLIP_L, _CLIP_G, _OPEN_CLIP_H = "clip_l", "clip_g", "open_clip_h"
_SD15 = ArchInfo("sd15", 768, (_CLIP_L,), 512)
_SD2 = ArchInfo("sd2", 1024, (_OPEN_CLIP_H,), 768, Prediction.v,  # the 768-v release
                other_configs=((Prediction.epsilon, "sd2_eps"),))
_SDXL = ArchInfo("sdxl", 2048, (_CLIP_L, _CLIP_G), 1024, sdxl_like=True)
_T5 = "t5"
_FLUX = ArchInfo("flux", 4096, (_CLIP_L, _T5), 1024, Prediction.flow, latent_channels=16,
                 in_channels=64, denoiser=Denoiser.transformer, patch=2, guidance=True,
                 vae_factors=(0.3611, 0.1159))
_INFO: dict[Arch, ArchInfo] = {
    Arch.sd15: _SD15,
    Arch.sd2: _SD2,
    Arch.sdxl: _SDXL,
    Arch.sdxl_refiner: ArchInfo("sdxl", 1280, (_CLIP_G,), 1024, sdxl_like=True, refiner=True),
    Arch.sd15_inpaint: ArchInfo("sd15", 768, (_CLIP_L,), 512, in_channels=9),
    Arch.sd2_inpaint: ArchInfo("sd2", 1024, (_OPEN_CLIP_H,), 512, in_channels=9),
    Arch.sdxl_inpaint: ArchInfo("sdxl", 2048, (_CLIP_L, _CLIP_G), 1024, in_channels=9,
                                sdxl_like=True),
    Arch.flux: _FLUX,
    Arch.flux_schnell: replace(_FLUX, guidance=False),
    Arch.flux_fill: replace(_FLUX, in_channels=384),
    Arch.flux_control: replace(_FLUX, in_channels=128, control_concat=True),
}
