"""Data-parallel training on the CPU with gloo and 2 processes, launched by torchrun as users do."""
import subprocess, sys, time
from pathlib import Path
import pytest, torch
from vqvae_kaggle.config import get_preset, apply_overrides
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

def test_a_nan_loss_on_one_rank_is_skipped_by_every_rank(tmp_path):
    "Rank 1's loss is NaN at step 3, rank 0's is finite: both skip that step (no rank waits in a backward the other left)."
    ok(torchrun(2, tmp_path, 'optim.batch_size=4', 'run.max_steps=6', extra=['--nan-at', '3']))
    r0, r1 = load(tmp_path, 0), load(tmp_path, 1)
    assert r0['step'] == r1['step'] == 6 and r0['skipped_steps'] == r1['skipped_steps'] == 1
    for k in r0['model']: assert torch.equal(r0['model'][k], r1['model'][k]), k    # still identical, codebook included
    assert all(torch.isfinite(v).all() for v in r0['model'].values() if v.is_floating_point())
    assert all(int(s['step']) == 5 for s in r0['optimizer']['state'].values())      # Adam took 5 of the 6 steps

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

def test_a_failing_rank_ends_the_job(tmp_path):
    start = time.monotonic()
    r = torchrun(2, tmp_path, 'optim.batch_size=4', 'run.max_steps=200', extra=['--raise-at', '3'], timeout=180)
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
