"""Train loom-shapes' text encoder and UNet together on pre-encoded latents.

v-prediction on a zero-terminal-SNR schedule, captions dropped 10% of the time (for
classifier-free guidance) and shortened now and then (no background, or no position) so
that short prompts work too; the exported weights are an EMA.

    python -m training.train_unet [--steps N] [--out DIR]    (needs training/runs/vae)
"""

from __future__ import annotations

from pathlib import Path

from training import shapes
from training.common import (
    EMA,
    MAX_TOKENS,
    RUNS,
    SCHEDULER,
    TEXT,
    UNET,
    Run,
    args_parser,
    lr_at,
    setup,
)


def variants(colour: str, shape: str, position: str, background: str) -> list[str]:
    """The full caption and its shortened forms, in the order `caption_for` picks them."""
    return [shapes.caption(colour, shape, position, background),
            f"a {colour} {shape} {shapes.PHRASE[position]}",
            f"a {colour} {shape}, {background} background"]


def caption_for(rng, combo) -> str:
    r = rng.random()
    if r < 0.1:
        return ""
    full, no_bg, no_pos = variants(*combo)
    return no_bg if r < 0.25 else no_pos if r < 0.32 else full


def token_ids(tokenizer, text: str) -> list[int]:
    """Exactly what Loom's Text Encode feeds the encoder for a short prompt."""
    from nodes.diffusion.prompt import chunks, tokenize_weighted

    ids, weights = tokenize_weighted(tokenizer, text)
    return chunks(tokenizer, ids, weights)[0][0]


def encode_latents(vae, images, batch: int = 200):
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(images[i:i + batch]).permute(0, 3, 1, 2).float() / 127.5 - 1
            out.append(vae.encode(x).latent_dist.mode() * vae.config.scaling_factor)
    return torch.cat(out)


def new_models(vocab: int, tokenizer, lr: float):
    """The text encoder and UNet (random weights), their EMAs and one AdamW over both."""
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    text = CLIPTextModel(CLIPTextConfig(vocab_size=vocab, bos_token_id=tokenizer.bos_token_id,
                                        eos_token_id=tokenizer.eos_token_id,
                                        pad_token_id=tokenizer.pad_token_id, **TEXT))
    unet = UNet2DConditionModel(**UNET)
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr, weight_decay=0.01)
    return unet, text, EMA(unet, 0.999), EMA(text, 0.999), opt


def optimise(run: Run, opt, loss, emas, ema_step: int) -> None:
    """One step: gradients clipped to norm 1, then every (EMA, module) pair updated."""
    import torch

    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
    opt.step()
    for ema, module in emas:
        ema.update(module, ema_step)
    run.step += 1


def finish(run: Run, ema_unet, ema_text) -> None:
    """Write the EMA weights (what ships) beside the run's state and mark it done."""
    ema_unet.shadow.save_pretrained(run.folder / "unet", safe_serialization=True)
    ema_text.shadow.save_pretrained(run.folder / "text_encoder", safe_serialization=True)
    run.finish()


def main(argv=None) -> None:
    p = args_parser(__doc__, steps=3000, batch=128, lr=5e-4)
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--vae", type=Path, default=RUNS / "vae" / "vae")
    args = p.parse_args(argv)
    out = setup(args, "unet")
    import numpy as np
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler
    from transformers import CLIPTokenizer

    from training.vocab import write_tokenizer

    vocab = write_tokenizer(out / "tokenizer", shapes.WORDS, MAX_TOKENS)
    tokenizer = CLIPTokenizer.from_pretrained(out / "tokenizer")
    cache = out / "latents.pt"
    if cache.exists():
        data = torch.load(cache, weights_only=True)
    else:
        vae = AutoencoderKL.from_pretrained(args.vae).eval()
        scenes, images = shapes.dataset(args.images, args.seed + 11)
        combos = sorted(set(s.combo for s in scenes))
        index = {c: i for i, c in enumerate(combos)}
        data = {"latents": encode_latents(vae, images),
                "combo": torch.tensor([index[s.combo] for s in scenes]),
                "combos": [list(c) for c in combos]}
        torch.save(data, cache)
        print("encoded", len(images), "latents, std", float(data["latents"].std()), flush=True)
    latents, combo_of = data["latents"], data["combo"]
    combos = [tuple(c) for c in data["combos"]]

    torch.manual_seed(args.seed)
    unet, text, ema_unet, ema_text, opt = new_models(vocab, tokenizer, args.lr)
    run = Run(out, {"unet": unet, "text": text, "ema_unet": ema_unet.shadow,
                    "ema_text": ema_text.shadow}, opt, args.seed)
    sched = DDPMScheduler(**SCHEDULER)
    ids_cache: dict[str, list[int]] = {}
    rng = np.random.default_rng(args.seed * 104729 + run.step)
    while run.step < args.steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(run.step, args.steps, args.lr)
        pick = torch.from_numpy(rng.integers(len(latents), size=args.batch))
        x0 = latents[pick]
        caps = [caption_for(rng, combos[int(c)]) for c in combo_of[pick]]
        ids = torch.tensor([ids_cache.setdefault(c, token_ids(tokenizer, c)) for c in caps])
        noise = torch.randn_like(x0)
        t = torch.randint(0, sched.config.num_train_timesteps, (args.batch,))
        xt = sched.add_noise(x0, noise, t)
        target = sched.get_velocity(x0, noise, t)
        pred = unet(xt, t, text(ids)[0]).sample
        loss = (pred - target).pow(2).mean()
        optimise(run, opt, loss, ((ema_unet, unet), (ema_text, text)), run.step)
        if run.step % 25 == 0:
            run.record(loss=loss.item(), lr=opt.param_groups[0]["lr"])
        if run.step % args.save_every == 0:
            run.save()
    finish(run, ema_unet, ema_text)


if __name__ == "__main__":
    main()
