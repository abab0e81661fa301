"""Train loom-shapes-x2: a compact super-resolution net (Real-ESRGAN's SRVGG "Compact", which
spandrel loads) from the dataset's half-resolution copies back to 64x64, with MSE loss
(what PSNR measures; L1 stalled below bicubic, see MODEL_CARD.md).

    python -m training.train_upscaler [--steps N] [--out DIR]
"""

from __future__ import annotations

from training import shapes
from training.common import EMA, UPSCALER, Run, args_parser, lr_at, setup


def pairs(n: int, seed: int):
    """(half-resolution, full) float tensors in [0, 1], scenes of both kinds."""
    import numpy as np
    import torch

    _, a = shapes.dataset(n // 2, seed)
    _, b = shapes.dataset(n - n // 2, seed + 1, combos=shapes.all_combos(), free=True)
    full = np.concatenate([a, b])
    low = np.stack([shapes.half(im) for im in full])
    f = torch.from_numpy(full).permute(0, 3, 1, 2).float() / 255
    return torch.from_numpy(low).permute(0, 3, 1, 2).float() / 255, f


def main(argv=None) -> None:
    args = args_parser(__doc__, steps=3000, batch=32, lr=2e-3).parse_args(argv)
    out = setup(args, "upscaler")
    import numpy as np
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.Compact import Compact

    low, full = pairs(8000, args.seed + 31)
    torch.manual_seed(args.seed)
    net = Compact(**UPSCALER)
    opt = torch.optim.Adam(net.parameters(), args.lr)
    ema = EMA(net, 0.995)
    run = Run(out, {"net": net, "ema": ema.shadow}, opt, args.seed)
    rng = np.random.default_rng(args.seed * 31337 + run.step)
    while run.step < args.steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(run.step, args.steps, args.lr, warmup=50)
        pick = torch.from_numpy(rng.integers(len(low), size=args.batch))
        loss = (net(low[pick]) - full[pick]).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update(net, run.step)
        run.step += 1
        if run.step % 50 == 0:
            run.record(loss=loss.item())
        if run.step % args.save_every == 0:
            run.save()
    save_file({k: v.contiguous() for k, v in ema.shadow.state_dict().items()},
              out / "loom-shapes-x2.safetensors")
    run.finish()


if __name__ == "__main__":
    main()
