"""Variational score distillation (ProlificDreamer's VSD): SDS against the score of the scene's own
renders, learnt alongside the scene by a camera-conditioned LoRA of the prior's UNet.

``guidance: {kind: vsd}``. For renders ``x`` (B, 3, H, W) in [0, 1] from cameras with
camera-to-world matrices ``c``: encode them (with gradients) to latents ``z``, draw ``t`` in the
annealed range (:mod:`.base`) and noise ``eps``, ``z_t = add_noise(z, eps, t)``, and

- the **pretrained** branch: ``eps_pre = uncond + s * (cond - uncond)`` of the frozen UNet on the
  view-dependent prompt (``guidance_scale`` s, 7.5 by default: VSD needs no huge CFG);
- the **particle** branch: ``eps_phi`` of the same UNet with this guidance's LoRA switched on and
  the camera ``c`` (flattened 4x4) added to its time embedding by :class:`CameraEmbedding`, on the
  conditional prompt (no CFG);
- the gradient on the latents ``g = w(t) * (eps_pre - eps_phi)`` (``w`` as SDS's, :mod:`.sds`),
  applied as the loss term ``vsd`` whose gradient with respect to ``z`` is ``g``.

In the same step the particle learns the renders' score: the loss term ``lora`` is the diffusion
loss (mean squared error against the noise, or the velocity of a v-prediction model) of the
particle branch on the *detached* latents, noised afresh at a timestep uniform in ``[lora_t_min,
lora_t_max]``, with the camera zeroed with probability ``camera_dropout``. Its gradient reaches
only the LoRA and the camera embedding (the frozen UNet's weights need none); they are this
module's parameters, so they are saved in the run's checkpoint with its ``state_dict`` (the base
UNet's weights are not) and stepped by their own AdamW (:meth:`VSDGuidance.optimizer`, ``lr``).
Outputs of v-prediction models are converted to noise (``core.to_epsilon``).

**One UNet.** The LoRA is a PEFT adapter added to the core's own UNet (``unet.add_adapter``) and
is off except during the particle passes (:meth:`VSDGuidance.particle`): there it is switched on
and the UNet's class embedding is swapped for the sum of the prior's own camera embedding (the
bundled prior is camera-conditioned by a class embedding of camera features; Stable Diffusion has
none) and the particle's; afterwards both are put back. So the pretrained branch, and anything
else that uses the core (validation, text to image), runs the unchanged UNet, bit for bit (a test
checks it). ``disable_adapters()`` alone would not do: a camera embedding installed as the class
embedding would stay on. Each VSD guidance adds its own adapter (``vsd0``, ``vsd1``, ... : a fine
stage's guidance starts a fresh LoRA).

The particle starts as the pretrained model: PEFT's ``gaussian`` LoRA initialisation has a zero
``B`` matrix, and the camera embedding's last layer starts at zero.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import TimestepEmbedding
from peft import LoraConfig
from peft.tuners.lora import LoraLayer
from torch import nn

from ..cameras import Cameras
from ..errors import UserError
from .base import Guidance, GuidanceConfigBase, GuidanceOutput
from .sds import gradient_loss, latent_gradient

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # the attention projections (ProlificDreamer's)
POSE_DIM = 16  # a flattened 4x4 camera-to-world matrix


@dataclass(frozen=True)
class VSDConfig(GuidanceConfigBase):
    kind: Literal["vsd"] = "vsd"
    guidance_scale: float = 7.5  # the pretrained branch's CFG (diffusers' convention)
    guidance_rescale: float = 0.0  # diffusers' guidance_rescale of the pretrained branch (core.cfg_rescale)
    weighting: Literal["sds", "uniform"] = "sds"
    grad_clip: float | None = None  # clip the latent gradient elementwise to [-c, c]
    lora_rank: int = 4
    lora_alpha: float = 4.0  # LoRA scaling alpha / rank
    lr: float = 1e-4  # AdamW learning rate of the LoRA and the camera embedding (ProlificDreamer's)
    lora_t_min: float = 0.0  # the particle's training timesteps, fractions of the training timesteps
    lora_t_max: float = 1.0
    camera_dropout: float = 0.1  # probability of training the particle on a zero camera

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.guidance_rescale <= 1:
            raise UserError(
                f"guidance.guidance_rescale {self.guidance_rescale} must be in [0, 1] (0: off; 0.7: Lin et al.)"
            )
        if self.lora_rank < 1 or self.lora_alpha <= 0:
            raise UserError(
                f"guidance.lora_rank {self.lora_rank} and guidance.lora_alpha {self.lora_alpha} must be "
                f"positive; use e.g. lora_rank=4 lora_alpha=4"
            )
        if self.lr <= 0:
            raise UserError(f"guidance.lr {self.lr} must be positive; ProlificDreamer's is 1e-4")
        if not 0.0 <= self.lora_t_min <= self.lora_t_max <= 1.0:
            raise UserError(
                f"guidance timesteps need 0 <= lora_t_min <= lora_t_max <= 1, got lora_t_min "
                f"{self.lora_t_min}, lora_t_max {self.lora_t_max}"
            )
        if not 0.0 <= self.camera_dropout <= 1.0:
            raise UserError(
                f"guidance.camera_dropout {self.camera_dropout} must be in [0, 1]; ProlificDreamer's is 0.1"
            )


class CameraEmbedding(nn.Module):
    """The particle's class embedding: ``prior(labels[:, :-16]) + camera(labels[:, -16:])``, the
    prior's own class embedding (``None`` for a model without one) plus the particle's embedding
    of the flattened camera-to-world matrix (float32; the UNet casts the sum to its dtype)."""

    def __init__(self, prior: nn.Module | None, camera: TimestepEmbedding):
        super().__init__()
        self.prior, self.camera = prior, camera

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        pose = labels[:, -POSE_DIM:]
        out = self.camera(pose.to(self.camera.linear_1.weight.dtype))
        if self.prior is not None:
            prior_labels = labels[:, :-POSE_DIM]
            out = out.to(prior_labels.dtype) + self.prior(prior_labels)
        return out


class VSDGuidance(Guidance):
    """Variational score distillation (module docstring)."""

    cfg: VSDConfig

    def __init__(self, core, cfg: VSDConfig, prompt: str):
        super().__init__(core, cfg, prompt)
        unet = core.unet
        if unet.config.class_embed_type not in (None, "projection") or unet.config.class_embeddings_concat:
            raise UserError(
                f"VSD adds its camera to the UNet's time embedding; this UNet's class embedding "
                f"({unet.config.class_embed_type}, concat {unet.config.class_embeddings_concat}) "
                f"cannot take it: use an SD-style model or guidance.kind=sds"
            )
        taken = getattr(unet, "peft_config", {})
        self.adapter = next(f"vsd{i}" for i in range(len(taken) + 1) if f"vsd{i}" not in taken)
        lora = LoraConfig(
            r=cfg.lora_rank,
            lora_alpha=cfg.lora_alpha,
            init_lora_weights="gaussian",
            target_modules=list(LORA_TARGETS),
        )
        with warnings.catch_warnings():  # PEFT warns of a second adapter: each VSD guidance has its own
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            unet.add_adapter(lora, adapter_name=self.adapter)
        unet.disable_adapters()  # off except in this guidance's particle passes
        # The adapter's weights are this module's parameters (shared with the UNet, not copies),
        # kept in float32 for AdamW (PEFT casts a half-precision UNet's activations to them).
        self.lora = nn.ModuleDict()
        self._lora_layers = []  # the UNet's LoRA-wrapped projections (a plain list: not submodules)
        for name, module in unet.named_modules():
            if isinstance(module, LoraLayer) and self.adapter in module.lora_A:
                pair = nn.ModuleDict({"lora_A": module.lora_A[self.adapter], "lora_B": module.lora_B[self.adapter]})
                self.lora[name.replace(".", "/")] = pair.float()
                self._lora_layers.append(module)
        self.camera_embedding = TimestepEmbedding(POSE_DIM, unet.time_embedding.linear_2.out_features)
        nn.init.zeros_(self.camera_embedding.linear_2.weight)
        nn.init.zeros_(self.camera_embedding.linear_2.bias)
        self.camera_embedding.to(core.device)
        self.requires_grad_(True)
        self._optimizer = torch.optim.AdamW(self.parameters(), lr=cfg.lr)  # else PyTorch's defaults, as ProlificDreamer

    def optimizer(self) -> torch.optim.Optimizer:
        return self._optimizer

    @contextlib.contextmanager
    def particle(self) -> Iterator[nn.Module]:
        """The core's UNet as the particle: this LoRA on, the camera embedding added; on exit the
        UNet is the pretrained one again. Its class labels are the prior's camera labels (if any)
        followed by the flattened camera-to-world matrices (:meth:`particle_output`)."""
        unet = self.core.unet
        prior_embedding = unet.class_embedding
        unet.class_embedding = CameraEmbedding(prior_embedding, self.camera_embedding)
        # What diffusers' unet.set_adapter / enable_adapters / disable_adapters do, on the LoRA
        # layers alone: those walk every module of the UNet (the bundled prior's 1,235: 26 ms a
        # pass on the CPU, a tenth of a step; its 80 LoRA layers take 5 ms)
        for layer in self._lora_layers:
            if layer.active_adapters != [self.adapter]:
                layer.set_adapter(self.adapter)
            layer.enable_adapters(True)
        try:
            yield unet
        finally:
            for layer in self._lora_layers:
                layer.enable_adapters(False)
            unet.class_embedding = prior_embedding
            # PEFT's disable_adapters() also sets requires_grad=False on the LoRA weights, which
            # would drop their gradients from the backward pass the trainer runs after this step
            self.requires_grad_(True)

    def particle_output(
        self, noisy: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor, prior_camera, pose: torch.Tensor
    ) -> torch.Tensor:
        """The particle UNet's raw output (the model's own parametrisation) for scaled latent inputs,
        text ``embeddings``, the prior's camera input (``None`` for a model without one) and
        ``pose (B, 16)``, the flattened camera-to-world matrices."""
        core = self.core
        labels = core.camera_labels(prior_camera, noisy.shape[0])
        pose = pose.to(core.unet.dtype if labels is not None else torch.float32)
        labels = pose if labels is None else torch.cat([labels, pose], dim=1)
        with self.particle() as unet:
            return unet(
                noisy.to(unet.dtype), t, encoder_hidden_states=embeddings, class_labels=labels, return_dict=False
            )[0]

    def forward(self, images: torch.Tensor, cameras: Cameras, step: int, generator: torch.Generator) -> GuidanceOutput:
        core, cfg = self.core, self.cfg
        cond, uncond = core.text_conditioning(self.prompts(cameras), cfg.negative_prompt)
        prior_camera = self.camera_input(cameras)
        pose = cameras.c2w.reshape(-1, POSE_DIM).to(device=core.device, dtype=torch.float32)
        latents, t, noise, noisy = self.noised_latents(images, step, generator)
        with torch.no_grad():
            eps_pretrained = core.predict_noise(
                noisy, t, cond, uncond, cfg.guidance_scale, prior_camera, cfg.guidance_rescale
            )
            out = self.particle_output(noisy, t, cond, prior_camera, pose)
            eps_particle = core.to_epsilon(out.to(noisy.dtype), noisy, t)
        grad = latent_gradient(core, t, eps_pretrained - eps_particle, cfg.weighting, cfg.grad_clip)
        lora_loss = self.particle_loss(latents.detach(), cond, prior_camera, pose, generator)
        logs = {"t": t.float().mean().item(), "grad_norm": grad.norm().item(), "lora": lora_loss.item()}
        return GuidanceOutput({"vsd": gradient_loss(latents, grad), "lora": lora_loss}, logs)

    def particle_loss(self, latents, embeddings, prior_camera, pose, generator: torch.Generator) -> torch.Tensor:
        """The particle's diffusion loss on clean ``latents`` (detached renders) at a random timestep
        in ``[lora_t_min, lora_t_max]``, the camera zeroed with probability ``camera_dropout``."""
        core, cfg = self.core, self.cfg
        n, b = core.num_train_timesteps, latents.shape[0]
        lo = int(cfg.lora_t_min * n)
        hi = min(n - 1, max(lo, int(cfg.lora_t_max * n)))
        t = torch.randint(lo, hi + 1, (b,), generator=generator).to(core.device)
        noise = torch.randn(latents.shape, generator=generator).to(latents)
        keep = torch.rand(b, generator=generator) >= cfg.camera_dropout
        pose = pose * keep.to(pose).reshape(-1, 1)
        out = self.particle_output(core.add_noise(latents, noise, t), t, embeddings, prior_camera, pose)
        return F.mse_loss(out.float(), core.training_target(latents, noise, t).float())
