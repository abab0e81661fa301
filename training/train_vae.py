"""Train loom-shapes' VAE: an AutoencoderKL (64x64x3 <-> 8x8x4), L1 + MSE + a small KL.

The reconstruction loss weighs the shape's pixels more (--fg-weight): they are a tenth of
the image, and an unweighted loss learns the backgrounds first and the shapes' colours only
much later.

    python -m training.train_vae [--steps N] [--out DIR]     (resumes where it stopped)
"""

from __future__ import annotations

from training import shapes
from training.common import VAE, Run, args_parser, lr_at, setup


def main(argv=None) -> None:
    p = args_parser(__doc__, steps=1000, batch=32, lr=2e-3)
    p.add_argument("--fg-weight", type=float, default=8.0,
                   help="how much more a shape pixel counts than a background pixel")
    args = p.parse_args(argv)
    out = setup(args, "vae")
    import numpy as np
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(args.seed)
    vae = AutoencoderKL(**VAE)
    opt = torch.optim.Adam(vae.parameters(), args.lr)
    run = Run(out, {"vae": vae}, opt, args.seed)
    # half the data where the captions put shapes, half anywhere (ControlNet and hires use)
    sa, a = shapes.dataset(6000, args.seed + 1)
    sb, b = shapes.dataset(6000, args.seed + 2, combos=shapes.all_combos(), free=True)
    data = torch.from_numpy(np.concatenate([a, b])).permute(0, 3, 1, 2).contiguous()
    masks = torch.from_numpy(np.stack([shapes.shape_mask(s) for s in sa + sb]))[:, None]
    rng = np.random.default_rng(args.seed * 7919 + run.step)
    while run.step < args.steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(run.step, args.steps, args.lr, warmup=50)
        pick = torch.from_numpy(rng.integers(len(data), size=args.batch))
        x = data[pick].float() / 127.5 - 1
        w = 1 + (args.fg_weight - 1) * masks[pick]
        w = w / w.mean()
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.mean).sample
        l1 = ((rec - x).abs() * w).mean()
        mse = ((rec - x).pow(2) * w).mean()
        kl = post.kl().mean()
        # decoded from the posterior's mean, as Loom's VAE Encode uses it; sampled latents
        # drowned the backgrounds' brightness in noise. The variance is pulled to zero so
        # that samplers of the posterior get the mean too.
        loss = l1 + mse + 1e-4 * post.mean.pow(2).mean() + 1e-2 * post.var.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run.step += 1
        if run.step % 25 == 0:
            run.record(loss=loss.item(), l1=l1.item(), kl=kl.item())
        if run.step % args.save_every == 0:
            run.save()
    with torch.no_grad():
        z = torch.cat([vae.encode(data[i:i + 256].float() / 127.5 - 1).latent_dist.mode()
                       for i in range(0, 2048, 256)])
    vae.register_to_config(scaling_factor=float(1 / z.std()))
    vae.save_pretrained(out / "vae", safe_serialization=True)
    run.finish()
    print("scaling_factor", vae.config.scaling_factor)


if __name__ == "__main__":
    main()
