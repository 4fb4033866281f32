"""The training loop: determinism, exact resume, the health guard (non-finite steps, back-off, rollback) and collapse alerts."""
import json, math, pytest, torch
from vqvae_kaggle.config import get_preset, apply_overrides
from vqvae_kaggle.train import Trainer, TrainingError
from vqvae_kaggle.tracking import read_metrics

TINY = ['model.channels=8,16', 'model.res_blocks=1', 'model.embed_dim=8', 'quantizer.codebook_size=32',
        'quantizer.lookup_dim=4', 'data.width=32', 'data.height=16', 'optim.batch_size=4', 'optim.warmup_steps=2',
        'run.wandb=disabled', 'run.budget_minutes=none', 'run.val_frames=8', 'run.sample_frames=2', 'run.log_every=1']

def tiny_cfg(*extra): return apply_overrides(get_preset('cpu'), TINY + list(extra))

@pytest.fixture
def splits(make_frames): return make_frames(24, 16, 32, seed=1), make_frames(8, 16, 32, seed=2)

def trainer(tmp_path, splits, *extra, name='run'):
    return Trainer(tiny_cfg(*extra), out_dir=tmp_path / name, splits=splits, progress=False)

def params(model): return {k: v.detach().clone() for k, v in model.named_parameters()}
def same_state(a, b): return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

def test_cpu_training_is_deterministic(tmp_path, splits):
    a = trainer(tmp_path, splits, 'run.max_steps=8', name='a'); a.fit()
    b = trainer(tmp_path, splits, 'run.max_steps=8', name='b'); b.fit()
    assert same_state(a.model.state_dict(), b.model.state_dict())
    assert a.step == 8 and a.epoch == 1  # 6 steps per epoch: one epoch done, 2 steps into the next

def test_resume_equals_uninterrupted_run(tmp_path, splits):
    full = trainer(tmp_path, splits, 'run.max_steps=15', name='full'); full.fit()
    part = trainer(tmp_path, splits, 'run.max_steps=4', name='split'); s1 = part.fit()
    assert s1['stopped'] == 'max_steps' and s1['step_in_epoch'] == 4
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

def test_incompatible_checkpoint_is_refused(tmp_path, splits):
    trainer(tmp_path, splits, 'run.max_steps=2').fit()
    with pytest.raises(TrainingError, match='quantizer.codebook_size: 32 -> 64'):
        trainer(tmp_path, splits, 'run.max_steps=4', 'quantizer.codebook_size=64')

def test_non_finite_loss_is_skipped_without_touching_weights(tmp_path, splits):
    t = trainer(tmp_path, splits)
    batches = t.loader.epoch_batches(0)
    t.train_step(next(batches))
    before = params(t.model)
    real_loss = t.loss_fn.forward
    t.loss_fn.forward = lambda *a, **k: (torch.tensor(float('nan')), real_loss(*a, **k)[1])
    assert t.train_step(next(batches)) is None
    assert same_state(before, params(t.model)) and t.health.skipped_steps == 1 and t.step == 2
    t.loss_fn.forward = real_loss
    assert t.train_step(next(batches)) is not None and t.health.consecutive_skips == 0
    assert not same_state(before, params(t.model))
    assert any(r.get('alert') == 'non-finite step skipped' for r in read_metrics(t.out / 'metrics.jsonl'))

def test_infinite_gradient_is_skipped(tmp_path, splits):
    t = trainer(tmp_path, splits)
    before = params(t.model)
    hook = t.model.decoder.register_full_backward_hook(lambda m, gin, gout: tuple(g * math.inf for g in gin))
    assert t.train_step(next(t.loader.epoch_batches(0))) is None
    hook.remove()
    assert same_state(before, params(t.model)) and t.health.skipped_steps == 1

def test_repeated_failures_back_off_then_roll_back(tmp_path, splits):
    t = trainer(tmp_path, splits, 'run.backoff_after_skips=2', 'run.rollback_after_skips=4')
    batch = next(t.loader.epoch_batches(0))
    for _ in range(3): t.train_step(batch)
    t.save()
    good_params = params(t.model)
    t.train_step(batch)                         # one more good step after the checkpoint
    t.loss_fn.forward = lambda *a, **k: (torch.tensor(float('inf')), {})
    for _ in range(4): t.train_step(batch)
    assert t.rolled_back and t.step == 3 and t.health.rollbacks == 1
    assert t.health.lr_scale == 0.125           # halved after 2 and 4 skips, and again by the rollback
    assert same_state(good_params, params(t.model))
    alerts = [r['alert'] for r in read_metrics(t.out / 'metrics.jsonl') if 'alert' in r]
    assert alerts.count('learning rate lowered') == 2 and 'rolled back' in alerts

def test_divergence_without_checkpoint_stops_with_a_clear_error(tmp_path, splits):
    t = trainer(tmp_path, splits, 'run.rollback_after_skips=3')
    t.loss_fn.forward = lambda *a, **k: (torch.tensor(float('nan')), {})
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
                'quantizer.lookup_dim=none', 'run.max_steps=30', 'optim.warmup_steps=0')
    with torch.no_grad():
        q = t.model.quantizer
        q.embed.mul_(1000); q.embed[0].zero_(); q.embed_sum.copy_(q.embed)
    summary = t.fit()
    assert any('codebook collapse' in a for a in summary['alerts'])
    assert int(t.model.quantizer.restarts) > 0   # the remedy: dead codes re-seeded although restart_dead is off
    assert any(r.get('alert') == 'collapse' and 'codes used on held-out frames' in r['text']
               for r in read_metrics(t.out / 'metrics.jsonl'))
