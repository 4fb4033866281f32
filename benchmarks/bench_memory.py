"""Training memory per preset, counted on the CPU (no GPU needed): the bytes of every tensor autograd saves for the
backward pass of one training step (model, quantizer, loss, LPIPS with its real AlexNet shape, and the discriminator's
pass over the reconstruction where the preset trains one) under the precision the preset gets on a card, per frame,
plus the weights, gradients and Adam's two moments (the discriminator's too). The discriminator's own step (real and
reconstructed frames, after the generator's backward has freed its graph) saves less than the generator's step; it
is counted separately and the larger of the two is reported. This is what sized the per-GPU
batches of the `t4x2` and `h100` presets; a card adds the CUDA context, cuDNN workspaces and allocator fragmentation on
top, which is why the presets keep the counted total under about half of the card's memory.

    .venv/bin/python benchmarks/bench_memory.py                      # default, t4x2, h100, cpu
    .venv/bin/python benchmarks/bench_memory.py --presets h100 --batch 512

Writes benchmarks/results/speed/memory.md. Not a test.
"""
from __future__ import annotations
import argparse, sys
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from vqvae_kaggle.presets import get_preset  # noqa: E402
from vqvae_kaggle.model import build_tokenizer, count_parameters  # noqa: E402
from vqvae_kaggle.losses import TokenizerLoss, build_lpips  # noqa: E402
from vqvae_kaggle.adversarial import PatchDiscriminator, generator_loss, discriminator_loss, frozen_logits  # noqa: E402

CARDS = {'t4x2': ('T4', 15.0, torch.float16), 'h100': ('H100 80GB', 79.6, torch.bfloat16), 'default': ('A100 40GB', 39.4, torch.bfloat16),
         'cpu': ('CPU', None, None)}


def build_discriminator(cfg):
    "The preset's discriminator, or None where it trains without one."
    return PatchDiscriminator(cfg.loss.disc_layers, cfg.loss.disc_channels).train() if cfg.loss.adv > 0 else None


def saved_bytes(cfg, batch: int, dtype) -> int:
    "Bytes of the distinct tensors autograd saves in the larger of one step's two passes over `batch` frames."
    torch.manual_seed(0)
    model, disc = build_tokenizer(cfg).train(), build_discriminator(cfg)
    lpips = build_lpips(cfg.loss.lpips_net, random_backbone=True) if cfg.loss.lpips > 0 else None
    loss_fn = TokenizerLoss(cfg.loss, 'cpu', lpips)
    seen, total = set(), 0
    def pack(t):
        nonlocal total
        key = (t.untyped_storage().data_ptr(), t.dtype)
        if key not in seen: seen.add(key); total += t.untyped_storage().nbytes()
        return t
    x = torch.rand(batch, 3, cfg.data.height, cfg.data.width) * 2 - 1
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):   # the generator's step
        with torch.autocast('cpu', dtype=dtype, enabled=dtype is not None):
            x_hat, aux = model(x)
            g_adv = generator_loss(cfg.loss.adv_loss, frozen_logits(disc, x_hat)) if disc is not None else None
        loss, _ = loss_fn(x, x_hat, aux, step=10**9, epoch=10**9)   # LPIPS at its full weight
    if disc is None: return total
    generator, seen, total = total, set(), 0
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):   # the discriminator's step, as the trainer runs it
        with torch.autocast('cpu', dtype=dtype, enabled=dtype is not None):
            real, fake = disc(torch.cat([x, x_hat.detach()])).float().chunk(2)
        discriminator_loss(cfg.loss.adv_loss, real, fake)
    return max(generator, total)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--presets', default='default,t4x2,h100,cpu')
    p.add_argument('--batch', type=int, default=None, help='batch to report (default: the preset\'s)')
    p.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' / 'speed' / 'memory.md'))
    args = p.parse_args(argv)
    rows = ['| preset | card (precision) | batch per GPU | parameters | activations per frame | weights + grads + Adam | counted total | card memory |',
            '|---|---|---|---|---|---|---|---|']
    for name in args.presets.split(','):
        cfg = get_preset(name)
        card, mem, dtype = CARDS.get(name, ('?', None, torch.bfloat16))
        b = args.batch or cfg.optim.batch_size
        per_frame = (saved_bytes(cfg, 4, dtype) - saved_bytes(cfg, 2, dtype)) / 2   # the per-frame slope (fixed costs cancel)
        disc = build_discriminator(cfg)
        n = count_parameters(build_tokenizer(cfg)) + (count_parameters(disc) if disc is not None else 0)
        state = 16 * n                                                               # fp32 weights, grads, Adam m and v
        total = b * per_frame + state
        rows.append(f"| {name} | {card} ({str(dtype).replace('torch.', '') if dtype else 'float32'}) | {b} | {n / 1e6:.2f}M | "
                    f"{per_frame / 2**20:.1f} MiB | {state / 2**30:.2f} GiB | {total / 2**30:.1f} GiB | "
                    f"{f'{mem:g} GiB ({total / 2**30 / mem:.0%})' if mem else '-'} |")
        print(rows[-1], flush=True)
    out = Path(args.out); out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text('# Training memory per preset, counted on the CPU\n\n`' + ' '.join(['.venv/bin/python benchmarks/bench_memory.py', *(argv or sys.argv[1:])])
                   + '`\n\n' + '\n'.join(rows) + '\n\nActivations: bytes of the tensors autograd saves for backward (model, quantizer, '
                   'loss, LPIPS, the discriminator where the preset trains one), per frame; parameters include the discriminator\'s. A card adds its CUDA context (~0.5 GiB), cuDNN workspaces and fragmentation.\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
