"""Fine-tune loom-shapes' UNet and text encoder (from the finished `unet` run) so that
repainting through a noise mask works: half of every batch is ordinary text-to-image
training, half are repaint examples built the way Loom's sampler builds its input when a
latent carries a noise mask.

A repaint example is one scene in two colours: the target (colour B, captioned) and the
context (colour A, or no shape at all, as after Fill Masked Area). Inside a mask over the
shape, grown by GROW px and brought to the latent's size the way `latent_mask` does it (the
masked share of each 8x8 block), the model sees the noised target; outside it, the noised
context, as the sampler re-noises the source there at every step. The model learns that the
caption decides what appears inside the mask even where the context's latents still carry
the old colour (a VAE latent near a shape encodes some of it), and, since the mask is grown
by about what a user paints around a shape, how large the shape under it was. The loss on
repaint examples weighs the masked blocks MASK_WEIGHT times more: the rest is replaced by
the source anyway.

    python -m training.train_inpaint [--steps N] [--out DIR]    (needs training/runs/unet)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from training import shapes
from training.common import RUNS, SCHEDULER, Run, args_parser, lr_at, setup
from training.train_unet import caption_for, encode_latents, finish, new_models, optimise, token_ids

BASE_STEPS = 3000  # the unet run's length: the EMA's warm-up continues from there
GROW = (3, 9)  # px around the shape that the mask covers (the evaluation paints 6)
BLANK = 0.4  # share of repaint examples whose context has no shape (a filled area)
MASK_WEIGHT = 4.0


def repaint_pairs(n: int, seed: int):
    """n (target, context) image pairs of training combinations, the targets' combinations
    and their shape masks (n x 64 x 64 float32)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    combos = shapes.training_combos()
    allowed = set(combos)
    colours = list(shapes.COLOURS)
    targets, contexts, masks, combo_of = [], [], [], []
    while len(targets) < n:
        scene = shapes.random_scene(rng, combos)
        if rng.random() < BLANK:
            old = dataclasses.replace(scene, rgb=scene.bg_rgb)  # nothing there before
        else:
            other = [c for c in colours if c != scene.colour]
            a = other[rng.integers(len(other))]
            rgb = shapes.jitter(rng, shapes.COLOURS[a], 12)
            old = dataclasses.replace(scene, colour=a, rgb=rgb)
        assert scene.combo in allowed
        targets.append(shapes.render(scene))
        contexts.append(shapes.render(old))
        masks.append(shapes.shape_mask(scene))
        combo_of.append(scene.combo)
    return np.stack(targets), np.stack(contexts), np.stack(masks), combo_of


def latent_masks(masks, grow):
    """Shape masks (B, 64, 64) grown by `grow` px each -> (B, 1, 8, 8) masked shares, by the
    sampler's own `latent_mask`."""
    import torch
    import torch.nn.functional as F

    from nodes.diffusion.predictor import latent_mask

    out = []
    for m, g in zip(masks, grow.tolist()):
        m = (m[None, None] > 0.5).float()
        if g > 0:
            m = F.max_pool2d(m, 2 * g + 1, stride=1, padding=g)
        out.append(latent_mask(m, (8, 8), 1))
    return torch.cat(out)


def main(argv=None) -> None:
    p = args_parser(__doc__, steps=2500, batch=128, lr=2e-4)
    p.add_argument("--pairs", type=int, default=12000)
    p.add_argument("--base", type=Path, default=RUNS / "unet")
    p.add_argument("--vae", type=Path, default=RUNS / "vae" / "vae")
    args = p.parse_args(argv)
    out = setup(args, "unet-inpaint")
    import numpy as np
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(args.base / "tokenizer")
    tokenizer.save_pretrained(out / "tokenizer")
    base = torch.load(args.base / "latents.pt", weights_only=True)
    cache = out / "pairs.pt"
    if cache.exists():
        pairs = torch.load(cache, weights_only=True)
    else:
        vae = AutoencoderKL.from_pretrained(args.vae).eval()
        targets, contexts, masks, combos = repaint_pairs(args.pairs, args.seed + 23)
        index = {tuple(c): i for i, c in enumerate(base["combos"])}
        pairs = {"target": encode_latents(vae, targets), "context": encode_latents(vae, contexts),
                 "mask": torch.from_numpy(masks).half(),
                 "combo": torch.tensor([index[c] for c in combos])}
        torch.save(pairs, cache)
        print("encoded", len(targets), "repaint pairs", flush=True)
    latents, combo_of = base["latents"], base["combo"]
    combos = [tuple(c) for c in base["combos"]]

    unet, text, ema_unet, ema_text, opt = new_models(len(tokenizer), tokenizer, args.lr)
    modules = {"unet": unet, "text": text, "ema_unet": ema_unet.shadow,
               "ema_text": ema_text.shadow}
    start = torch.load(args.base / "state.pt", map_location="cpu", weights_only=True)["modules"]
    for k, m in modules.items():
        m.load_state_dict(start[k])
    del start
    run = Run(out, modules, opt, args.seed)
    sched = DDPMScheduler(**SCHEDULER)
    ids_cache: dict[str, list[int]] = {}
    rng = np.random.default_rng(args.seed * 7919 + run.step)
    half = args.batch // 2
    while run.step < args.steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(run.step, args.steps, args.lr)
        # ordinary examples (captions sometimes empty, for classifier-free guidance)
        pick = torch.from_numpy(rng.integers(len(latents), size=args.batch - half))
        x0 = latents[pick]
        caps = [caption_for(rng, combos[int(c)]) for c in combo_of[pick]]
        # repaint examples: always captioned (the caption is what decides the new colour)
        rp = torch.from_numpy(rng.integers(len(pairs["target"]), size=half))
        for c in pairs["combo"][rp]:
            cap = ""
            while not cap:
                cap = caption_for(rng, combos[int(c)])
            caps.append(cap)
        target = torch.cat([x0, pairs["target"][rp]])
        context = torch.cat([x0, pairs["context"][rp]])
        grow = torch.from_numpy(rng.integers(GROW[0], GROW[1] + 1, size=half))
        mask = torch.cat([torch.ones(args.batch - half, 1, 8, 8),
                          latent_masks(pairs["mask"][rp].float(), grow)])
        ids = torch.tensor([ids_cache.setdefault(c, token_ids(tokenizer, c)) for c in caps])
        noise = torch.randn_like(target)
        t = torch.randint(0, sched.config.num_train_timesteps, (args.batch,))
        xt = mask * sched.add_noise(target, noise, t) + (1 - mask) * sched.add_noise(
            context, noise, t)
        v = sched.get_velocity(target, noise, t)
        pred = unet(xt, t, text(ids)[0]).sample
        err = (pred - v).pow(2)
        weight = torch.cat([torch.ones(args.batch - half, 1, 8, 8),
                            1 + (MASK_WEIGHT - 1) * mask[args.batch - half:]])
        loss = (err * weight).mean() / weight.mean()
        optimise(run, opt, loss, ((ema_unet, unet), (ema_text, text)), BASE_STEPS + run.step)
        if run.step % 25 == 0:
            with torch.no_grad():
                plain, repaint = err[:args.batch - half].mean(), err[args.batch - half:].mean()
            run.record(loss=loss.item(), plain=plain.item(), repaint=repaint.item(),
                       lr=opt.param_groups[0]["lr"])
        if run.step % args.save_every == 0:
            run.save()
    finish(run, ema_unet, ema_text)


if __name__ == "__main__":
    main()
