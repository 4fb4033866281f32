"""The training loop: determinism, exact resume, the health guard (non-finite steps, back-off, rollback) and collapse alerts."""
import json, math, pytest, torch
import numpy as np
from vqvae_kaggle.config import apply_overrides, ConfigError
from vqvae_kaggle.presets import get_preset
from vqvae_kaggle.train import Trainer, TrainingError
from vqvae_kaggle.tracking import read_metrics

TINY = ['model.channels=8,16', 'model.res_blocks=1', 'model.embed_dim=8', 'quantizer.codebook_size=32',
        'quantizer.lookup_dim=4', 'data.width=32', 'data.height=16', 'optim.batch_size=4', 'optim.warmup_steps=2',
        'run.wandb=disabled', 'run.budget_minutes=none', 'run.val_frames=8', 'run.sample_frames=2', 'run.log_every=1',
        'run.threads=1']   # one thread: float sums may differ with the thread count, and these tests compare bits

def tiny_cfg(*extra): return apply_overrides(get_preset('cpu'), TINY + list(extra))

@pytest.fixture
def splits(make_frames): return make_frames(24, 16, 32, seed=1), make_frames(8, 16, 32, seed=2)

def trainer(tmp_path, splits, *extra, name='run'):
    return Trainer(tiny_cfg(*extra), out_dir=tmp_path / name, splits=splits, progress=False)

def params(model): return {k: v.detach().clone() for k, v in model.named_parameters()}
def same_state(a, b): return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
def full_state(t):
    "Every parameter and buffer (the EMA codebook included), and Adam's state, cloned."
    clone = lambda d: {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in d.items()}
    return clone(t.model.state_dict()), {k: clone(v) for k, v in t.optimizer.state_dict()['state'].items()}


def test_cpu_training_is_deterministic(tmp_path, splits):
    a = trainer(tmp_path, splits, 'run.max_steps=8', name='a'); a.fit()
    b = trainer(tmp_path, splits, 'run.max_steps=8', name='b'); b.fit()
    assert same_state(a.model.state_dict(), b.model.state_dict())
    assert a.step == 8 and a.epoch == 1  # 6 steps per epoch: one epoch done, 2 steps into the next

def test_resume_equals_uninterrupted_run(tmp_path, splits, step_deadline):
    full = trainer(tmp_path, splits, 'run.max_steps=15', name='full'); full.fit()
    step_deadline.limit = 4                        # the same plan (the learning rate decays over 15 steps), cut at step 4
    part = trainer(tmp_path, splits, 'run.max_steps=15', name='split'); s1 = part.fit()
    assert s1['stopped'] == 'deadline' and s1['step_in_epoch'] == 4
    step_deadline.limit = None
    rest = trainer(tmp_path, splits, 'run.max_steps=15', name='split'); rest.fit()
    assert rest.resumed_from is not None
    assert same_state(full.model.state_dict(), rest.model.state_dict())
    assert same_state(full.optimizer.state_dict()['state'][0], rest.optimizer.state_dict()['state'][0])

def test_augmentations_reach_training(tmp_path, splits):
    "The cpu preset trains on augmented frames (the resume test above therefore also covers their exact replay)."
    assert tiny_cfg().data.aug_scale > 0 and tiny_cfg().data.aug_blur > 0 and tiny_cfg().data.aug_color > 0
    on = trainer(tmp_path, splits, 'run.max_steps=6', name='on'); on.fit()
    off = trainer(tmp_path, splits, 'run.max_steps=6', 'data.aug_scale=0', 'data.aug_blur=0', 'data.aug_color=0', name='off'); off.fit()
    assert not same_state(on.model.state_dict(), off.model.state_dict())

def test_hue_augmentation_replays_exactly_on_resume(tmp_path, splits, step_deadline):
    "With hue rotation on (data.aug_hue, drawn last from (seed, step)), a run cut at step 4 and resumed equals the uninterrupted one."
    hue = ['data.aug_hue=0.5', 'run.max_steps=10']
    full = trainer(tmp_path, splits, *hue, name='full'); full.fit()
    step_deadline.limit = 4
    part = trainer(tmp_path, splits, *hue, name='split'); s1 = part.fit()
    assert s1['stopped'] == 'deadline' and s1['step'] == 4
    step_deadline.limit = None
    rest = trainer(tmp_path, splits, *hue, name='split'); rest.fit()
    assert rest.resumed_from is not None and rest.step == 10
    assert same_state(full.model.state_dict(), rest.model.state_dict())
    no_hue = trainer(tmp_path, splits, 'data.aug_hue=0', 'run.max_steps=10', name='no-hue'); no_hue.fit()
    assert not same_state(full.model.state_dict(), no_hue.model.state_dict())   # the hue rotation did reach training

def test_incompatible_checkpoint_is_refused(tmp_path, splits):
    trainer(tmp_path, splits, 'run.max_steps=2').fit()
    with pytest.raises(TrainingError, match='quantizer.codebook_size: 32 -> 64'):
        trainer(tmp_path, splits, 'run.max_steps=4', 'quantizer.codebook_size=64')

def test_a_bad_budget_a_changed_field_or_no_held_out_frames_stop_before_anything_is_written(tmp_path, splits):
    "fit(budget_minutes=0) is not 'no budget', a field assigned after the config was made is checked, an empty held-out split is refused: no checkpoint."
    t = trainer(tmp_path, splits, 'run.max_steps=2')
    for bad in (0, -1):
        with pytest.raises(TrainingError, match='budget_minutes must be positive, or None for no budget'): t.fit(budget_minutes=bad)
    assert not (tmp_path / 'run' / 'checkpoints').exists() and t.step == 0
    cfg = tiny_cfg('run.max_steps=2'); cfg.run.keep_checkpoints = -1
    with pytest.raises(ConfigError, match='run.keep_checkpoints = -1 is not allowed'):
        Trainer(cfg, out_dir=tmp_path / 'changed', splits=splits, progress=False)
    with pytest.raises(TrainingError, match='no held-out frames to evaluate on'):
        Trainer(tiny_cfg(), out_dir=tmp_path / 'no-val', splits=(splits[0], splits[1].subset(np.zeros(len(splits[1]), bool))), progress=False)
    assert not (tmp_path / 'changed').exists() and not (tmp_path / 'no-val').exists()

def test_non_finite_loss_is_skipped_without_touching_weights(tmp_path, splits):
    t = trainer(tmp_path, splits)
    batches = t.loader.epoch_batches(0)
    t.train_step(next(batches))
    before, optim_before = full_state(t)                  # every parameter and buffer (the EMA codebook), and Adam's state
    real_loss = t.loss_fn.forward
    t.loss_fn.forward = lambda *a, **k: (lambda loss, parts: (loss * float('nan'), parts))(*real_loss(*a, **k))
    assert t.train_step(next(batches)) is None
    after, optim_after = full_state(t)
    assert same_state(before, after) and all(same_state(optim_before[k], optim_after[k]) for k in optim_before)
    assert t.health.skipped_steps == 1 and t.step == 2
    t.loss_fn.forward = real_loss
    assert t.train_step(next(batches)) is not None and t.health.consecutive_skips == 0
    assert not same_state(before, full_state(t)[0])
    assert any(r.get('alert') == 'non-finite step skipped' for r in read_metrics(t.out / 'metrics.jsonl'))

def test_infinite_gradient_is_skipped(tmp_path, splits):
    t = trainer(tmp_path, splits)
    before = full_state(t)[0]                              # buffers included: the codebook's first (k-means) update too
    hook = t.model.decoder.register_full_backward_hook(lambda m, gin, gout: tuple(g * math.inf for g in gin))
    assert t.train_step(next(t.loader.epoch_batches(0))) is None
    hook.remove()
    assert same_state(before, full_state(t)[0]) and t.health.skipped_steps == 1

def test_repeated_failures_back_off_then_roll_back(tmp_path, splits):
    t = trainer(tmp_path, splits, 'run.backoff_after_skips=2', 'run.rollback_after_skips=4')
    batch = next(t.loader.epoch_batches(0))
    for _ in range(3): t.train_step(batch)
    t.save()
    good_params = params(t.model)
    t.train_step(batch)                         # one more good step after the checkpoint
    real_loss = t.loss_fn.forward
    t.loss_fn.forward = lambda *a, **k: (real_loss(*a, **k)[0] * float('inf'), {})
    for _ in range(4): t.train_step(batch)
    assert t.rolled_back and t.step == 3 and t.health.rollbacks == 1
    assert t.health.lr_scale == 0.125           # halved after 2 and 4 skips, and again by the rollback
    assert same_state(good_params, params(t.model))
    alerts = [r['alert'] for r in read_metrics(t.out / 'metrics.jsonl') if 'alert' in r]
    assert alerts.count('learning rate lowered') == 2 and 'rolled back' in alerts

def test_divergence_without_checkpoint_stops_with_a_clear_error(tmp_path, splits):
    t = trainer(tmp_path, splits, 'run.rollback_after_skips=3')
    real_loss = t.loss_fn.forward
    t.loss_fn.forward = lambda *a, **k: (real_loss(*a, **k)[0] * float('nan'), {})
    batch = next(t.loader.epoch_batches(0))
    with pytest.raises(TrainingError, match='training diverged .* no checkpoint to roll back to'):
        for _ in range(3): t.train_step(batch)

def test_checkpoint_refuses_non_finite_weights(tmp_path, splits):
    t = trainer(tmp_path, splits)
    with torch.no_grad(): next(t.model.parameters())[0].fill_(float('nan'))
    assert t.save() is None and not list((t.out / 'checkpoints').glob('*.pt'))

def test_collapse_is_detected_and_reported(tmp_path, splits):
    # the seed's textbook quantizer with its codebook pushed far from the data: every latent picks the same code
    t = trainer(tmp_path, splits, 'quantizer.kmeans_init=false', 'quantizer.restart_dead=false', 'quantizer.l2_normalize=false',
                'quantizer.lookup_dim=none', 'run.max_steps=30', 'optim.warmup_steps=0', 'run.eval_every_steps=6')
    with torch.no_grad():
        q = t.model.quantizer
        q.embed.mul_(1000); q.embed[0].zero_(); q.embed_sum.copy_(q.embed)
    summary = t.fit()
    assert any('codebook collapse' in a for a in summary['alerts'])
    assert int(t.model.quantizer.restarts) > 0   # the remedy: dead codes re-seeded although restart_dead is off
    assert any(r.get('alert') == 'collapse' and 'codes used on held-out frames' in r['text']
               for r in read_metrics(t.out / 'metrics.jsonl'))


# -- precision, cadence, schedule, final evaluation, switches, threads (issue 10) --------------------------------------

def test_fp16_with_grad_scaler_skips_an_infinite_step_without_touching_anything(tmp_path, splits):
    "The seed's v1.0 failure path (fp16 autocast, no clipping, a loss that overflows), here on the CPU: the step is skipped."
    t = trainer(tmp_path, splits, 'optim.amp=fp16', 'optim.grad_clip=none', 'quantizer.fp32=false')
    assert t.precision.dtype == torch.float16 and t.scaler.is_enabled()
    batches = t.loader.epoch_batches(0)
    assert t.train_step(next(batches)) is not None            # one good step: optimizer state exists
    model_before, optim_before = full_state(t)
    scale = t.scaler.get_scale()
    hook = t.model.decoder.register_full_backward_hook(lambda m, gin, gout: tuple(g * math.inf for g in gin))
    assert t.train_step(next(batches)) is None
    hook.remove()
    model_after, optim_after = full_state(t)
    assert same_state(model_before, model_after)              # weights and quantizer buffers unchanged
    assert all(same_state(optim_before[k], optim_after[k]) for k in optim_before)
    assert t.scaler.get_scale() == scale / 2 and t.health.skipped_steps == 1
    assert t.train_step(next(batches)) is not None and not same_state(model_before, full_state(t)[0])

def test_quantizer_ignores_non_finite_latents():
    "NaN latents never reach the EMA codebook: its buffers stay as they were."
    from vqvae_kaggle.quantizer import EMAQuantizer
    q = EMAQuantizer(8, 16, kmeans_init=False, restart_dead=True).train()
    q(torch.randn(2, 8, 4, 4, generator=torch.Generator().manual_seed(0)))
    before = {k: v.clone() for k, v in q.state_dict().items()}
    z = torch.randn(2, 8, 4, 4, generator=torch.Generator().manual_seed(1)); z[0, 0, 0, 0] = float('nan')
    q(z)
    assert same_state(before, q.state_dict())

def test_cadence_in_steps(tmp_path, splits):
    "Evaluations and checkpoints come every N steps whatever the epoch length, plus one of each at the end."
    t = trainer(tmp_path, splits, 'run.max_steps=20', 'run.eval_every_steps=8', 'run.eval_every_minutes=none',
                'run.checkpoint_every_steps=5', 'run.checkpoint_every_minutes=none', 'run.keep_checkpoints=10')
    s = t.fit()
    evals = [r['step'] for r in read_metrics(t.out / 'metrics.jsonl') if r.get('split') == 'val']
    assert evals == [8, 16, 20]                                 # 6 steps per epoch: no evaluation at 6, 12, 18
    assert sorted(p.name for p in (t.out / 'checkpoints').glob('*.pt')) == [f'ckpt-{n:08d}.pt' for n in (5, 10, 15, 20)]
    assert sorted(p.name for p in (t.out / 'samples').glob('val_*.png')) == [f'val_step{n:07d}.png' for n in (8, 16, 20)]
    assert s['timing']['steps'] > 0 and 0 <= s['timing']['outside_steps_share'] < 1

def test_summary_reports_the_final_weights(tmp_path, splits):
    "A run that stops between evaluations reports an evaluation of the weights it ends with (its last checkpoint)."
    from vqvae_kaggle.checkpoint import load_tokenizer
    from vqvae_kaggle.evaluate import evaluate
    t = trainer(tmp_path, splits, 'run.max_steps=11', 'run.eval_every_steps=4')
    s = t.fit()
    last = [r for r in read_metrics(t.out / 'metrics.jsonl') if r.get('split') == 'val'][-1]
    assert last['step'] == 11 and last['psnr'] == s['val']['psnr']
    again = evaluate(load_tokenizer(s['checkpoint'])[0], splits[1].frames[t.val_idx], torch.device('cpu'))
    assert again['psnr'] == pytest.approx(s['val']['psnr'], abs=1e-4)

def test_learning_rate_warms_up_then_decays_to_the_floor_at_max_steps(tmp_path, splits):
    t = trainer(tmp_path, splits, 'run.max_steps=20', 'optim.warmup_steps=4', 'optim.schedule=cosine', 'optim.min_lr_ratio=0.1')
    t.fit()
    lr = {r['step']: r['lr'] for r in read_metrics(t.out / 'metrics.jsonl') if r.get('split') == 'train'}
    base = t.cfg.optim.lr
    assert lr[1] == pytest.approx(base * 0.25) and lr[4] == pytest.approx(base * math.cos(math.pi * 3 / 20) * 0.45 + base * 0.55, rel=1e-6)
    assert all(lr[s] > lr[s + 1] for s in range(4, 20)) and lr[20] == pytest.approx(base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 19 / 20))))

def test_runtime_is_printed_and_recorded(tmp_path, splits, capsys):
    t = trainer(tmp_path, splits, 'run.max_steps=1')
    s = t.fit()
    out = capsys.readouterr().out
    assert 'device: CPU, 1 of' in out and 'precision fp32' in out and s['runtime']['precision'] == 'fp32'
    note = [r for r in read_metrics(t.out / 'metrics.jsonl') if r.get('note') == 'runtime'][0]
    assert note['precision'] == 'fp32' and note['device'] == 'cpu' and note['threads'] == 1 and note['compile'] is False

def test_compiled_channels_last_fused_training_equals_eager(tmp_path, splits):
    """torch.compile (encoder and decoder), channels-last and fused Adam, all forced on on the CPU, train to the same
    weights as the plain eager run: within 0.2% of the weights' movement after 4 steps (float sums are reordered)."""
    eager = trainer(tmp_path, splits, 'run.max_steps=4', 'run.compile=off', name='eager')
    start = params(eager.model)
    eager.fit()
    fast = trainer(tmp_path, splits, 'run.max_steps=4', 'run.compile=on', 'run.channels_last=on', 'run.fused_adam=on', name='fast')
    assert fast.compile_error is None and fast.speedups.fused_adam
    assert fast.model.encoder._compiled_call_impl is not None
    assert same_state(start, params(fast.model))                 # compiling ran a pass but changed nothing
    fast.fit()
    a, b = params(eager.model), params(fast.model)
    moved = max(float((a[k] - start[k]).abs().max()) for k in a)
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    # measured here: the weights move ~4e-3 in 4 steps and the two runs differ by ~2e-7 (float sums reordered); the bound,
    # 0.2% of the movement, is ~50x that and far below the movement itself (a lost or doubled step would exceed it)
    assert moved > 1e-3 and diff < 2e-3 * moved, (diff, moved)
    x = torch.rand(2, 3, 16, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(eager.model(x)[0], fast.model(x.contiguous(memory_format=torch.channels_last))[0], atol=1e-3)

def test_thread_count_follows_other_processes():
    "A process spinning on one core is seen from /proc, and leaves the run one thread fewer."
    import subprocess, sys, time
    from vqvae_kaggle.train import OtherLoad, choose_threads
    spinner = subprocess.Popen([sys.executable, '-c', 'while True: pass'])
    try:
        time.sleep(0.5)
        load = OtherLoad(); time.sleep(1.0)
        busy = load.cores()
    finally: spinner.kill(); spinner.wait()
    assert busy is not None and busy >= 0.7, busy
    assert choose_threads(2, busy) == 1 and choose_threads(8, busy) <= 7


def test_trainer_chooses_its_threads_from_a_busy_process(tmp_path, splits, monkeypatch):
    """Without run.threads a real trainer measures the other processes from /proc before it trains: on 2 cores (its
    affinity, pinned here) with one of them kept busy by another process it trains with 1 thread, and records it."""
    import subprocess, sys, time
    import vqvae_kaggle.train as train_mod
    monkeypatch.setattr(train_mod, 'available_cores', lambda: 2)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)                        # what a trainer that did not look would keep
    spinner = subprocess.Popen([sys.executable, '-c', 'while True: pass'])
    try:
        time.sleep(0.5)
        t = trainer(tmp_path, splits, 'run.max_steps=2', 'run.threads=none')
        assert t.cfg.run.threads is None
        s = t.fit()
    finally:
        spinner.kill(); spinner.wait(); n = torch.get_num_threads(); torch.set_num_threads(threads)
    assert n == 1 and s['runtime']['threads'] == 1, (n, s['runtime'])

# -- the adversarial term (issue 12) ----------------------------------------------------------------------------------
ADV = ['loss.adv=0.5', 'loss.adv_start=2', 'loss.adv_warmup=3', 'loss.disc_layers=2', 'loss.disc_channels=8']

def disc_state(t):
    "The discriminator's weights and its Adam state, cloned."
    clone = lambda d: {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in d.items()}
    return clone(t.disc.state_dict()), {k: clone(v) for k, v in t.disc_optimizer.state_dict()['state'].items()}

def test_adversarial_training_trains_both_and_logs_its_terms(tmp_path, splits):
    t = trainer(tmp_path, splits, 'run.max_steps=6', *ADV)
    d0 = disc_state(t)[0]
    t.fit()
    rows = [r for r in read_metrics(t.out / 'metrics.jsonl') if r.get('split') == 'train']
    assert [('d_loss' in r) for r in rows] == [False, False, True, True, True, True]   # the discriminator from step index 2
    r = rows[-1]
    assert r['adv_weight'] > 0 and r['d_loss'] > 0 and {'g_adv', 'logits_real', 'logits_fake', 'disc_grad_norm'} <= set(r)
    # each logged step (log_every=1): loss = rec + commitment x commit (+ weight x g_adv once the discriminator judges)
    for row in rows:
        adv = row['adv_weight'] * row['g_adv'] if 'g_adv' in row else 0.0
        assert row['loss'] == pytest.approx(row['rec'] + 0.25 * row['commit'] + adv, rel=1e-5), row
    assert all(abs(row['adv_weight'] * row['g_adv']) > 1e-4 for row in rows[2:])   # a term that counts, not a rounding
    assert not same_state(d0, t.disc.state_dict())
    assert all(int(s['step']) == 4 for s in t.disc_optimizer.state_dict()['state'].values())   # 4 discriminator steps

def test_adversarial_loss_equals_its_formula_term_by_term(tmp_path, splits):
    """At each step the trainer's loss is, recomputed here from the same x, x_hat and the discriminator as it was before
    the step: mse + 0.25 commit + ramp(step) x ratio x g_adv, with g_adv = -mean D(x_hat) (hinge), ramp = 0.5 x
    min(1, (step - 2 + 1) / 3) from step 2, and ratio = |d mse/dW| / (|d g_adv/dW| + 1e-4) at the decoder's last
    convolution W. A wrong sign, weight, ramp or ratio fails here (the loss merely differing from the one without it would not)."""
    import copy
    import torch.nn.functional as F
    t = trainer(tmp_path, splits, *ADV)
    seen = {}
    own_loss = t.loss_fn
    def spy(x, x_hat, aux, step, epoch):
        loss, parts = own_loss(x, x_hat, aux, step, epoch)
        mse, commit = F.mse_loss(x_hat.float(), x), aux['commit_loss'].float()
        expected = {'rec': mse, 'commit': commit, 'total': mse + 0.25 * commit}
        if step >= 2:
            disc = copy.deepcopy(t.disc)                                        # as it is before this step's update
            g_adv = -disc(x_hat).mean()
            w = t.model.decoder.net[-1].weight
            g_rec_w = torch.autograd.grad(mse, w, retain_graph=True)[0]
            g_adv_w = torch.autograd.grad(g_adv, w, retain_graph=True)[0]
            ratio = (g_rec_w.norm() / (g_adv_w.norm() + 1e-4)).clamp(0, 1e4)
            ramp = 0.5 * min(1.0, (step - 2 + 1) / 3)
            expected.update(g_adv=g_adv, weight=ramp * ratio, total=expected['total'] + ramp * ratio * g_adv)
        seen[step] = {k: float(v.detach()) for k, v in expected.items()}
        return loss, parts
    t.loss_fn = spy
    batches = t.loader.epoch_batches(0)
    for step in range(6):
        out = t.train_step(next(batches))
        e = seen[step]
        assert float(out['loss']) == pytest.approx(e['total'], rel=1e-5, abs=1e-7), (step, float(out['loss']), e)
        assert float(out['rec']) == pytest.approx(e['rec'], rel=1e-6) and float(out['commit']) == pytest.approx(e['commit'], rel=1e-6)
        if step < 2: assert 'g_adv' not in out
        else:
            assert float(out['g_adv']) == pytest.approx(e['g_adv'], rel=1e-5, abs=1e-7), step
            assert float(out['adv_weight']) == pytest.approx(e['weight'], rel=1e-4), (step, float(out['adv_weight']), e['weight'])
            assert abs(e['total'] - e['rec'] - 0.25 * e['commit']) > 1e-5   # the term is there, and large enough to matter

def test_adaptive_weight_keeps_its_last_finite_value_when_made_infinite(tmp_path, splits, monkeypatch):
    """A ratio that overflows (an fp16 gradient past the scaler's range) leaves the last finite ratio in force: the
    step's adversarial weight is ramp x that value, the step is not skipped; the next finite ratio replaces it."""
    import vqvae_kaggle.train_step as step_mod   # the adversarial term lives in the step (nbs/08a_step)
    t = trainer(tmp_path, splits, *ADV, 'loss.adv_start=0', 'loss.adv_warmup=0')
    batches = t.loader.epoch_batches(0)
    out = t.train_step(next(batches))
    kept = float(t.adaptive_ratio)
    assert kept > 0 and float(out['adv_weight']) == pytest.approx(0.5 * kept, rel=1e-6)
    own = step_mod.adaptive_weight
    for bad in (math.inf, math.nan):
        monkeypatch.setattr(step_mod, 'adaptive_weight', lambda *a, **k: torch.tensor(bad))
        out = t.train_step(next(batches))
        assert out is not None and t.health.skipped_steps == 0
        assert float(t.adaptive_ratio) == kept and float(out['adv_weight']) == pytest.approx(0.5 * kept, rel=1e-6)
    monkeypatch.setattr(step_mod, 'adaptive_weight', lambda *a, **k: own(*a, **k) * 0 + 3.0)
    t.train_step(next(batches))
    assert float(t.adaptive_ratio) == 3.0

def test_resume_with_the_discriminator_is_exact(tmp_path, splits, step_deadline):
    full = trainer(tmp_path, splits, 'run.max_steps=10', *ADV, name='full'); full.fit()
    step_deadline.limit = 4
    part = trainer(tmp_path, splits, 'run.max_steps=10', *ADV, name='split'); part.fit()
    step_deadline.limit = None
    rest = trainer(tmp_path, splits, 'run.max_steps=10', *ADV, name='split'); rest.fit()
    assert rest.resumed_from is not None and rest.step == 10
    assert same_state(full.model.state_dict(), rest.model.state_dict())
    (fd, fo), (rd, ro) = disc_state(full), disc_state(rest)
    assert same_state(fd, rd) and fo.keys() == ro.keys() and all(same_state(fo[k], ro[k]) for k in fo)

def test_switching_the_discriminator_on_later_and_a_mismatched_one(tmp_path, splits, capsys):
    trainer(tmp_path, splits, 'run.max_steps=2').fit()
    t = trainer(tmp_path, splits, 'run.max_steps=4', *ADV)           # continues the model, starts a discriminator
    assert t.step == 2 and 'has no discriminator' in capsys.readouterr().out
    t.fit()
    with pytest.raises(TrainingError, match='loss.disc_layers=3'):
        trainer(tmp_path, splits, 'run.max_steps=6', *ADV, 'loss.disc_layers=3')

def test_a_non_finite_discriminator_step_is_skipped_alone_under_fp16(tmp_path, splits):
    "fp16 + scaler: an overflowing discriminator gradient leaves the discriminator untouched, the model steps, the scale halves."
    t = trainer(tmp_path, splits, 'optim.amp=fp16', *ADV, 'loss.adv_start=0')
    batches = t.loader.epoch_batches(0)
    assert t.train_step(next(batches)) is not None
    d_before, m_before, scale = disc_state(t), full_state(t)[0], t.scaler.get_scale()
    hook = t.disc.net[0].weight.register_hook(lambda g: g * math.inf)   # the discriminator's own backward only
    out = t.train_step(next(batches))
    hook.remove()
    assert out is not None and out['disc_skipped'] == 1.0 and t.health.skipped_steps == 0
    d_after = disc_state(t)
    assert same_state(d_before[0], d_after[0]) and all(same_state(d_before[1][k], d_after[1][k]) for k in d_before[1])
    assert not same_state(m_before, full_state(t)[0])          # the model took its step
    assert t.scaler.get_scale() == scale / 2

def test_adversarial_training_under_bf16_autocast(tmp_path, splits):
    "bf16 autocast (the precision of A100/H100 cards; no scaler): both networks train, every logged term finite, the adaptive weight > 0."
    t = trainer(tmp_path, splits, 'run.max_steps=6', 'optim.amp=bf16', *ADV)
    assert t.precision.dtype == torch.bfloat16 and not t.precision.scaler
    d0 = disc_state(t)[0]
    t.fit()
    r = [r for r in read_metrics(t.out / 'metrics.jsonl') if r.get('split') == 'train'][-1]
    assert all(math.isfinite(r[k]) for k in ('loss', 'd_loss', 'g_adv', 'adv_weight', 'logits_real', 'logits_fake'))
    assert r['adv_weight'] > 0 and float(t.adaptive_ratio) > 0 and t.health.skipped_steps == 0
    assert not same_state(d0, t.disc.state_dict())

def test_a_discriminator_that_wins_outright_raises_an_alert(tmp_path, splits):
    "A fast discriminator against a generator that ignores it (tiny fixed weight): its loss falls to ~0 and the run says so."
    t = trainer(tmp_path, splits, 'run.max_steps=40', 'loss.adv=1e-6', 'loss.adv_adaptive=false', 'loss.disc_lr=0.01',
                'loss.adv_start=0', 'loss.disc_layers=2', 'loss.disc_channels=8')
    s = t.fit()
    alerts = [r for r in read_metrics(t.out / 'metrics.jsonl') if r.get('alert') == 'discriminator']
    assert alerts and 'wins outright' in alerts[0]['text'] and any('discriminator wins outright' in a for a in s['alerts'])
    assert len(alerts) <= 3                                      # at most once per 1000 steps (up to 3 messages at once)
