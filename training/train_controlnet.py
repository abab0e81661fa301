"""Train loom-shapes-edges: a ControlNet for loom-shapes conditioned on edge maps (the
shape's outline, white on black), on shapes placed anywhere, so the drawing decides where.

    python -m training.train_controlnet [--steps N] [--out DIR]  (needs runs/vae, unet-inpaint)
"""

from __future__ import annotations

from pathlib import Path

from training import shapes
from training.common import (
    EMA,
    RUNS,
    SCHEDULER,
    SHIPPED_UNET,
    Run,
    args_parser,
    lr_at,
    setup,
)
from training.train_unet import caption_for, encode_latents, token_ids


def main(argv=None) -> None:
    p = args_parser(__doc__, steps=1500, batch=64, lr=3e-4)
    p.add_argument("--images", type=int, default=12000)
    p.add_argument("--base", type=Path, default=SHIPPED_UNET)
    p.add_argument("--vae", type=Path, default=RUNS / "vae" / "vae")
    args = p.parse_args(argv)
    out = setup(args, "controlnet")
    import numpy as np
    import torch
    from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(args.base / "tokenizer")
    text = CLIPTextModel.from_pretrained(args.base / "text_encoder").eval().requires_grad_(False)
    unet = UNet2DConditionModel.from_pretrained(args.base / "unet").eval().requires_grad_(False)
    cache = out / "data.pt"
    if cache.exists():
        data = torch.load(cache, weights_only=True)
    else:
        vae = AutoencoderKL.from_pretrained(args.vae).eval()
        scenes, images = shapes.dataset(args.images, args.seed + 21, free=True)
        combos = sorted(set(s.combo for s in scenes))
        index = {c: i for i, c in enumerate(combos)}
        data = {"latents": encode_latents(vae, images),
                "edges": torch.from_numpy(np.stack([shapes.edge_map(s)[..., 0] for s in scenes])),
                "combo": torch.tensor([index[s.combo] for s in scenes]),
                "combos": [list(c) for c in combos]}
        torch.save(data, cache)
    latents, edges, combo_of = data["latents"], data["edges"], data["combo"]
    combos = [tuple(c) for c in data["combos"]]

    torch.manual_seed(args.seed)
    cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 64, 64))
    opt = torch.optim.AdamW(cn.parameters(), args.lr, weight_decay=0.01)
    ema = EMA(cn, 0.998)
    run = Run(out, {"controlnet": cn, "ema": ema.shadow}, opt, args.seed)
    sched = DDPMScheduler(**SCHEDULER)
    embeds: dict[str, torch.Tensor] = {}

    def embed(c: str) -> torch.Tensor:
        if c not in embeds:
            with torch.no_grad():
                embeds[c] = text(torch.tensor([token_ids(tokenizer, c)]))[0][0]
        return embeds[c]

    rng = np.random.default_rng(args.seed * 15485863 + run.step)
    while run.step < args.steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(run.step, args.steps, args.lr)
        pick = torch.from_numpy(rng.integers(len(latents), size=args.batch))
        x0 = latents[pick]
        # captions dropped more often than for the base model: the edges alone must place it
        caps = ["" if rng.random() < 0.25 else caption_for(rng, combos[int(c)])
                for c in combo_of[pick]]
        emb = torch.stack([embed(c) for c in caps])
        cond = edges[pick].float().div(255)[:, None].expand(-1, 3, -1, -1)
        noise = torch.randn_like(x0)
        t = torch.randint(0, sched.config.num_train_timesteps, (args.batch,))
        xt = sched.add_noise(x0, noise, t)
        down, mid = cn(xt, t, encoder_hidden_states=emb, controlnet_cond=cond,
                       return_dict=False)
        pred = unet(xt, t, emb, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid).sample
        loss = (pred - sched.get_velocity(x0, noise, t)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(cn.parameters(), 1.0)
        opt.step()
        ema.update(cn, run.step)
        run.step += 1
        if run.step % 25 == 0:
            run.record(loss=loss.item())
        if run.step % args.save_every == 0:
            run.save()
    ema.shadow.save_pretrained(out / "model", safe_serialization=True)
    run.finish()


if __name__ == "__main__":
    main()
