"""Data-parallel training on the CPU with gloo and 2 processes, launched by torchrun as users do."""
import subprocess, sys, time
from pathlib import Path
import pytest, torch
from vqvae_kaggle.config import apply_overrides
from vqvae_kaggle.presets import get_preset
from vqvae_kaggle.distributed import torchrun_command
from vqvae_kaggle.train import Trainer
from conftest import synthetic_frames

WORKER = Path(__file__).parent / 'dist_worker.py'
TINY = ['model.channels=8,16', 'model.res_blocks=1', 'model.embed_dim=8', 'quantizer.codebook_size=32',
        'quantizer.lookup_dim=4', 'data.width=32', 'data.height=16', 'optim.warmup_steps=2', 'run.wandb=disabled',
        'run.budget_minutes=none', 'run.val_frames=8', 'run.sample_frames=2', 'run.threads=1']

def torchrun(nproc, out, *sets, extra=(), timeout=240):
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}', str(WORKER), str(out),
           *[f'--set={s}' for s in TINY + list(sets)], *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

def ok(r):
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r

def load(out, rank): return torch.load(Path(out) / f'rank{rank}.pt', weights_only=False)

def test_ranks_stay_identical(tmp_path):
    ok(torchrun(2, tmp_path, 'optim.batch_size=4', 'run.max_steps=10'))
    r0, r1 = load(tmp_path, 0), load(tmp_path, 1)
    assert r0['step'] == r1['step'] == 10
    for k in r0['model']: assert torch.equal(r0['model'][k], r1['model'][k]), k  # weights and EMA codebook, bit for bit
    assert int(r0['model']['quantizer.step']) == 10 and bool(r0['model']['quantizer.initialised'])   # an EMA update every step

def test_ranks_stay_identical_with_the_discriminator(tmp_path):
    "The adversarial term under DDP: the model, the EMA codebook, the discriminator and both Adams agree bit for bit."
    ok(torchrun(2, tmp_path, 'optim.batch_size=4', 'run.max_steps=8', 'loss.adv=0.5', 'loss.adv_start=2',
                'loss.disc_layers=2', 'loss.disc_channels=8'))
    r0, r1 = load(tmp_path, 0), load(tmp_path, 1)
    assert r0['step'] == r1['step'] == 8 and r0['skipped_steps'] == 0
    for k in r0['model']: assert torch.equal(r0['model'][k], r1['model'][k]), k
    for k in r0['discriminator']: assert torch.equal(r0['discriminator'][k], r1['discriminator'][k]), k
    for i, s in r0['disc_optimizer']['state'].items():
        assert int(s['step']) == 6 and all(torch.equal(v, r1['disc_optimizer']['state'][i][n]) for n, v in s.items())

def test_ranks_stay_identical_with_the_consistency_term(tmp_path):
    "The consistency term's second encoder pass runs outside DDP's forward: its gradients still reach, and agree on, every rank."
    ok(torchrun(2, tmp_path, 'optim.batch_size=4', 'run.max_steps=6', 'loss.consistency=1'))
    r0, r1 = load(tmp_path, 0), load(tmp_path, 1)
    assert r0['step'] == r1['step'] == 6 and r0['skipped_steps'] == 0
    for k in r0['model']: assert torch.equal(r0['model'][k], r1['model'][k]), k
    for i, s in r0['optimizer']['state'].items():
        assert all(torch.equal(v, r1['optimizer']['state'][i][n]) for n, v in s.items())
    plain = tmp_path / 'plain'
    ok(torchrun(2, plain, 'optim.batch_size=4', 'run.max_steps=6'))
    assert not torch.equal(load(plain, 0)['model']['encoder.net.0.weight'], r0['model']['encoder.net.0.weight'])   # the term did train the encoder

def test_a_nan_loss_on_one_rank_is_skipped_by_every_rank(tmp_path):
    "Rank 1's loss is NaN at step 3, rank 0's is finite: both skip that step (no rank waits in a backward the other left)."
    ok(torchrun(2, tmp_path, 'optim.batch_size=4', 'run.max_steps=6', extra=['--nan-at', '3']))
    r0, r1 = load(tmp_path, 0), load(tmp_path, 1)
    assert r0['step'] == r1['step'] == 6 and r0['skipped_steps'] == r1['skipped_steps'] == 1
    for k in r0['model']: assert torch.equal(r0['model'][k], r1['model'][k]), k    # still identical, codebook included
    assert all(torch.isfinite(v).all() for v in r0['model'].values() if v.is_floating_point())
    assert all(int(s['step']) == 5 for s in r0['optimizer']['state'].values())      # Adam took 5 of the 6 steps

def _adaptive_rank(rank, world, init_file, out):
    "One gloo rank: the adaptive weight of a layer on this rank's own batch (the batches differ), and its local gradients."
    import torch.distributed as dist
    from vqvae_kaggle.adversarial import adaptive_weight
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=world)
    try:
        w = torch.nn.Parameter(torch.linspace(-1, 1, 12).view(3, 4))
        x = torch.randn(5, 4, generator=torch.Generator().manual_seed(100 + rank))      # another batch on each rank
        y = x @ w.T
        rec, adv = (y - 0.3).pow(2).mean(), -(y.tanh() * (rank + 1)).mean()
        g_rec, g_adv = (torch.autograd.grad(l, w, retain_graph=True)[0] for l in (rec, adv))
        ratio = adaptive_weight(rec, adv, w, max_weight=1e4)
        torch.save(dict(ratio=ratio, g_rec=g_rec, g_adv=g_adv), Path(out) / f'adaptive{rank}.pt')
    finally: dist.destroy_process_group()

def test_adaptive_weight_is_averaged_over_ranks(tmp_path):
    """Two gloo ranks whose batches differ get one and the same adaptive weight: |mean of the ranks' rec gradients| /
    (|mean of their adversarial gradients| + 1e-4), computed here by hand, not either rank's own ratio."""
    import torch.multiprocessing as mp
    mp.spawn(_adaptive_rank, args=(2, str(tmp_path / 'init'), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f'adaptive{r}.pt') for r in (0, 1))
    assert torch.equal(r0['ratio'], r1['ratio'])
    hand = ((r0['g_rec'] + r1['g_rec']) / 2).norm() / (((r0['g_adv'] + r1['g_adv']) / 2).norm() + 1e-4)
    assert float(r0['ratio']) == pytest.approx(float(hand), rel=1e-6)
    for r in (r0, r1):   # each rank alone would have said something else
        assert float(r['g_rec'].norm() / (r['g_adv'].norm() + 1e-4)) != pytest.approx(float(hand), rel=1e-3)

def test_two_processes_match_one_process_with_twice_the_batch(tmp_path):
    # B per rank on 2 ranks vs 2B on one: the same frames in every step; only float summation order differs
    ok(torchrun(2, tmp_path / 'two', 'optim.batch_size=4', 'run.max_steps=6'))
    cfg = apply_overrides(get_preset('cpu'), TINY + ['optim.batch_size=8', 'run.max_steps=6'])
    splits = (synthetic_frames(48, 16, 32, seed=1), synthetic_frames(8, 16, 32, seed=2))
    one = Trainer(cfg, out_dir=tmp_path / 'one', splits=splits, progress=False); one.fit()
    two = load(tmp_path / 'two', 0)['model']
    # Stated tolerance: the EMA codebook and its statistics agree to float rounding (1e-4 relative); each weight tensor
    # differs by under 0.1% of how far it moved from its initial value (norms; measured 2e-6): Adam divides by sqrt(v)
    # and so amplifies the rounding differences of gradients averaged over two ranks where the gradient is near zero.
    # An absolute bound would pass a run that did not train at all. (A one-process run with batch B instead of 2B
    # differs by 1.4 in the codebook.)
    start = Trainer(apply_overrides(cfg, ['run.max_steps=0']), out_dir=tmp_path / 'start', splits=splits, progress=False,
                    resume=False).model.state_dict()
    ratios = {}
    for k, v in one.model.state_dict().items():
        if not v.is_floating_point(): assert torch.equal(two[k], v), k
        elif k.startswith('quantizer.') and 'project' not in k:
            torch.testing.assert_close(two[k], v, rtol=1e-4, atol=1e-4, msg=lambda m: f'{k}: {m}')
        else:
            moved = float((v - start[k]).norm())
            assert moved > 0, f'{k} did not move: nothing was trained'
            ratios[k] = float((two[k] - v).norm()) / moved
    assert max(ratios.values()) < 1e-3, sorted(ratios.items(), key=lambda kv: -kv[1])[:3]

def test_sigterm_on_one_rank_stops_every_rank_at_the_same_step_and_resumes_on_one(tmp_path):
    # the signal arrives during step 4 on rank 1: that step completes everywhere, then every rank stops
    r = ok(torchrun(2, tmp_path, 'optim.batch_size=4', 'run.max_steps=40', extra=['--sigterm-at', '4']))
    r0, r1 = load(tmp_path, 0), load(tmp_path, 1)
    assert r0['step'] == r1['step'] == 5
    assert (r0['stopped'], r1['stopped']) == ('another rank stopped', 'signal SIGTERM')
    # the checkpoint written on 2 processes continues on 1 (global batch 8 -> 4: the epoch position is converted)
    cfg = apply_overrides(get_preset('cpu'), TINY + ['optim.batch_size=4', 'run.max_steps=12'])
    splits = (synthetic_frames(48, 16, 32, seed=1), synthetic_frames(8, 16, 32, seed=2))
    t = Trainer(cfg, out_dir=tmp_path, splits=splits, progress=False)
    assert t.step == 5 and t.epoch == 0 and t.step_in_epoch == 10
    s = t.fit()
    assert s['step'] == 12 and s['stopped'] == 'max_steps'

FAILING_RANK_BOUND_S = 120   # generous for 2 CPU processes starting up; far under the 600 s collective timeout of init_distributed

def test_a_failing_rank_ends_the_job(tmp_path):
    "Rank 1 raises at step 3 of 200: the whole job ends, with an error, long before a collective operation would time out."
    start = time.monotonic()
    r = torchrun(2, tmp_path, 'optim.batch_size=4', 'run.max_steps=200', extra=['--raise-at', '3'], timeout=700)
    elapsed = time.monotonic() - start
    assert elapsed < FAILING_RANK_BOUND_S, f'the job took {elapsed:.0f} s to end after rank 1 failed'
    assert r.returncode != 0
    assert 'injected failure on rank 1 at step 3' in r.stdout + r.stderr
    assert not (tmp_path / 'rank0.pt').exists()   # rank 0 did not carry on alone

def test_cli_gpus_2_relaunches_under_torchrun(tmp_path):
    # what a user types; on this CPU-only machine '--gpus 2' means two gloo processes
    import numpy as np
    fs = synthetic_frames(48, 16, 32, seed=3, episodes=6)
    np.savez(tmp_path / 'frames.npz', frames=fs.frames, episodes=fs.episodes)
    cmd = [sys.executable, '-m', 'vqvae_kaggle.cli', 'train', '--gpus', '2', '--data', str(tmp_path / 'frames.npz'),
           '--out', str(tmp_path / 'run'), '--no-progress', *[f'--set={s}' for s in TINY],
           '--set=optim.batch_size=4', '--set=run.max_steps=6', f'--set=data.cache_dir={tmp_path / "cache"}',
           '--set=data.val_fraction=0.2', '--set=data.workers=1']
    r = ok(subprocess.run(cmd, capture_output=True, text=True, timeout=300))
    assert 'launching 2 processes' in r.stdout and 'x 2 processes = global batch 8' in r.stdout
    state = torch.load(sorted((tmp_path / 'run' / 'checkpoints').glob('*.pt'))[-1], weights_only=False)
    assert state['step'] == 6 and state['world_size'] == 2
