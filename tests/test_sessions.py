"""Timed Kaggle sessions, emulated under a temporary folder: two sessions equal one uninterrupted run bit for bit,
SIGTERM mid-epoch, a kill while a checkpoint is written, a truncated checkpoint, an incompatible config, and the
front-end notebook kernel/train.ipynb run top to bottom (LPIPS off, LPIPS requested without weights, LPIPS with an
attached weights file)."""
import json, math, os, shutil, signal, subprocess, sys, textwrap, time, warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import vqvae_kaggle.train as train_mod
from vqvae_kaggle import kaggle as vk, kaggle_push as kc
from vqvae_kaggle.checkpoint import list_checkpoints, load_checkpoint, load_latest
from vqvae_kaggle.config import apply_overrides
from vqvae_kaggle.presets import get_preset
from vqvae_kaggle.train import Trainer, TrainingError

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
PY = sys.executable
W, H = 32, 24
# a model small enough for a few dozen CPU steps per second; one thread (the test machine has two cores)
TINY = ['model.channels=8,16', 'model.res_blocks=0', 'model.embed_dim=8', 'quantizer.codebook_size=32', 'optim.batch_size=4',
        'optim.warmup_steps=2', 'run.wandb=disabled', 'run.val_frames=4', 'run.sample_frames=2', 'run.threads=1',
        'run.budget_minutes=none', f'data.width={W}', f'data.height={H}', 'run.log_every=1',
        'run.checkpoint_every_steps=6']   # the cpu preset has no LPIPS; a checkpoint every 6 steps (one epoch of 24 frames)


def splits(make_frames, n_train=24):
    return make_frames(n_train, H, W, seed=1), make_frames(8, H, W, seed=2)


def tiny_cfg(paths, epochs, *extra):
    return vk.session_config('cpu', [*TINY, f'run.epochs={epochs}', *extra], paths=paths)


def final_state(run_dir):
    return load_checkpoint(list_checkpoints(Path(run_dir) / 'checkpoints')[0].path)


def assert_same_tensors(a, b, where=''):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a: assert_same_tensors(a[k], b[k], f'{where}.{k}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)): assert_same_tensors(x, y, f'{where}[{i}]')
    else: assert a == b, (where, a, b)


def attach_output(prev_root: Path, next_root: Path, name='prev-session'):
    "What Kaggle does between sessions: the previous version's /kaggle/working appears under the next one's /kaggle/input."
    next_paths = vk.KagglePaths.under(next_root).ensure()
    next_paths.input.mkdir(parents=True, exist_ok=True)
    shutil.copytree(prev_root / 'working', next_paths.input / name)
    return next_paths


# -- two sessions == one run -------------------------------------------------------------------------------------

def test_two_sessions_equal_one_uninterrupted_run(tmp_path, make_frames, step_deadline):
    data = splits(make_frames)                       # 24 frames, batch 4: 6 steps per epoch, 3 epochs = 18 steps
    # session 1: the deadline arrives after 8 steps, in the middle of epoch 1
    p1 = vk.KagglePaths.under(tmp_path / 's1').ensure()
    step_deadline.limit = 8
    s1 = vk.run_session(tiny_cfg(p1, 3), p1, splits=data, progress=False)
    assert (s1['stopped'], s1['step'], s1['step_in_epoch'], s1['epochs_done']) == ('deadline', 8, 2, 1)
    ckpt1 = final_state(p1.working / 'cpu')
    assert (ckpt1['step'], ckpt1['epoch'], ckpt1['step_in_epoch']) == (8, 1, 2)

    # session 2: a new kernel whose input holds session 1's output; it must continue, and does
    p2 = attach_output(tmp_path / 's1', tmp_path / 's2')
    step_deadline.limit = None
    s2 = vk.run_session(tiny_cfg(p2, 3), p2, require_previous=True, splits=data, progress=False)
    assert (s2['stopped'], s2['step'], s2['epochs_done']) == ('epochs done', 18, 3)
    sessions = [json.loads(l) for l in (p2.working / 'cpu' / 'sessions.jsonl').read_text().splitlines()]
    assert [(s['stopped'], s['step']) for s in sessions] == [('deadline', 8), ('epochs done', 18)]   # history carried over
    assert sessions[1]['resumed_from'].startswith(str(p2.input / 'prev-session'))
    steps = [r['step'] for r in map(json.loads, (p2.working / 'cpu' / 'metrics.jsonl').read_text().splitlines())
             if r.get('split') == 'train']
    assert steps == list(range(1, 19))               # every step logged once: 1-8 in session 1, 9-18 in session 2

    # the same 18 steps without interruption
    p0 = vk.KagglePaths.under(tmp_path / 'one').ensure()
    s0 = vk.run_session(tiny_cfg(p0, 3), p0, splits=data, progress=False)
    assert s0['step'] == 18
    a, b = final_state(p2.working / 'cpu'), final_state(p0.working / 'cpu')
    assert_same_tensors(a['model'], b['model'], 'model')      # bit for bit, EMA codebook buffers included
    assert_same_tensors(a['optimizer'], b['optimizer'], 'optimizer')
    assert_same_tensors(a['scaler'], b['scaler'], 'scaler')
    assert (a['epoch'], a['step'], a['step_in_epoch']) == (b['epoch'], b['step'], b['step_in_epoch'])


def test_chained_session_without_previous_checkpoint_stops(tmp_path, make_frames):
    p = vk.KagglePaths.under(tmp_path).ensure()
    with pytest.raises(vk.SessionStopped, match='no checkpoint was found'):
        vk.run_session(tiny_cfg(p, 1), p, require_previous=True, splits=splits(make_frames), progress=False,
                       previous='me/vqvae-kaggle-train/versions/1', download=lambda h: (_ for _ in ()).throw(ConnectionError('offline')))
    assert not list_checkpoints(p.working)           # nothing trained


def test_session_budget_counts_from_the_kernel_start(tmp_path, make_frames, step_deadline):
    p = vk.KagglePaths.under(tmp_path).ensure()
    with pytest.raises(vk.SessionTimeError, match='no training time left'):
        vk.run_session(tiny_cfg(p, 1), p, splits=splits(make_frames), progress=False, session_hours=1, margin_minutes=20,
                       started_at=time.time() - 45 * 60)
    step_deadline.limit = 1
    s = vk.run_session(tiny_cfg(p, 1), p, splits=splits(make_frames), progress=False, session_hours=1, margin_minutes=20,
                       started_at=time.time() - 30 * 60)
    budget = json.loads((p.working / 'cpu' / 'sessions.jsonl').read_text().splitlines()[-1])['budget_minutes']
    assert 0 < budget <= 10 and s['stopped'] == 'deadline'


# -- signals and crashes -----------------------------------------------------------------------------------------

TRAIN_SCRIPT = r'''
import sys, time, json
sys.path.insert(0, {tests!r})
from conftest import synthetic_frames
from vqvae_kaggle.config import apply_overrides
from vqvae_kaggle.presets import get_preset
import vqvae_kaggle.train as T
import vqvae_kaggle.shared as S
cfg = apply_overrides(get_preset('cpu'), {overrides!r})
data = (synthetic_frames({n_train}, {h}, {w}, seed=1), synthetic_frames(8, {h}, {w}, seed=2))
{patch}
summary = T.Trainer(cfg, out_dir={out!r}, splits=data, progress=False).fit()
print('SUMMARY ' + json.dumps(summary, default=str))
'''


def start_training(tmp_path, out, overrides, n_train=24, patch=''):
    code = TRAIN_SCRIPT.format(tests=str(TESTS), overrides=overrides, n_train=n_train, h=H, w=W, out=str(out), patch=patch)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([PY, '-c', code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)


def wait_for(cond, proc, what, timeout=120):
    t = time.monotonic()
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f'training ended (rc {proc.returncode}) before {what}:\n{proc.stdout.read()}\n{proc.stderr.read()}')
        if time.monotonic() - t > timeout:
            proc.kill(); raise AssertionError(f'timed out waiting for {what}')
        time.sleep(0.05)


def train_rows(out):
    path = Path(out) / 'metrics.jsonl'
    return [r for r in map(json.loads, path.read_text().splitlines()) if r.get('split') == 'train'] if path.exists() else []


def test_sigterm_mid_epoch_exits_cleanly_with_a_checkpoint_that_resumes(tmp_path, make_frames, step_deadline):
    out = tmp_path / 'run'
    overrides = [*TINY, 'run.epochs=1']
    # 400 frames: 100 steps in the epoch; each step is slowed down so that the signal lands inside the epoch
    slow = 'step = T.Trainer.train_step\nT.Trainer.train_step = lambda self, b: (time.sleep(0.1), step(self, b))[1]'
    proc = start_training(tmp_path, out, overrides, n_train=400, patch=slow)
    wait_for(lambda: len(train_rows(out)) >= 3, proc, 'three training steps')
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    summary = json.loads(stdout.split('SUMMARY ', 1)[1])
    assert summary['stopped'] == 'signal SIGTERM'
    assert 3 <= summary['step'] < 100 and summary['step_in_epoch'] == summary['step'] and summary['epochs_done'] == 0
    state = load_checkpoint(summary['checkpoint'])                    # verifies against its manifest
    assert (state['step'], state['epoch'], state['step_in_epoch']) == (summary['step'], 0, summary['step'])

    # it resumes where it stopped, mid-epoch, and trains on
    data = (make_frames(400, H, W, seed=1), make_frames(8, H, W, seed=2))
    cfg = apply_overrides(get_preset('cpu'), overrides)
    step_deadline.limit = 2
    t = Trainer(cfg, out_dir=out, splits=data, progress=False)
    assert t.resumed_from == Path(summary['checkpoint']) and t.step == summary['step'] and t.step_in_epoch == summary['step']
    s = t.fit()
    assert (s['stopped'], s['step'], s['step_in_epoch']) == ('deadline', summary['step'] + 2, summary['step'] + 2)


def test_kill_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, make_frames, step_deadline):
    out = tmp_path / 'run'
    marker = tmp_path / 'writing'
    # The second checkpoint (end of epoch 1) is written half, flushed to disk, and then the writer hangs until killed.
    patch = textwrap.dedent(f'''
        import builtins, os
        from pathlib import Path
        real_open, seen = builtins.open, []
        class HalfWriter:
            def __init__(self, f): self.f = f
            def __enter__(self): return self
            def __exit__(self, *e): self.f.close()
            def __getattr__(self, n): return getattr(self.f, n)
            def write(self, data):
                self.f.write(data[:len(data) // 2]); self.f.flush(); os.fsync(self.f.fileno())
                Path({str(marker)!r}).write_text(str(len(data)))
                time.sleep(3600)
        def open_(path, mode='r', *a, **k):
            f = real_open(path, mode, *a, **k)
            if 'w' in mode and Path(path).name.startswith('.ckpt-') and '.pt.tmp-' in Path(path).name:
                seen.append(path)
                if len(seen) == 2: return HalfWriter(f)
            return f
        S.open = open_   # the atomic writer's `open` (module globals come before builtins)
        ''')
    proc = start_training(tmp_path, out, [*TINY, 'run.epochs=3'], patch=patch)
    wait_for(marker.exists, proc, 'the second checkpoint write')
    proc.kill(); proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    ckpts = out / 'checkpoints'
    stray = list(ckpts.glob('.ckpt-00000012.pt.tmp-*'))
    assert len(stray) == 1 and 0 < stray[0].stat().st_size < int(marker.read_text())   # the half-written file
    assert not (ckpts / 'ckpt-00000012.pt').exists() and not (ckpts / 'ckpt-00000012.json').exists()
    with warnings.catch_warnings():
        warnings.simplefilter('error')                                  # no fallback needed: the previous one is intact
        state, info = load_latest(ckpts)
    assert (info.step, state['epoch'], state['step_in_epoch']) == (6, 1, 0)

    cfg = apply_overrides(get_preset('cpu'), [*TINY, 'run.epochs=3'])
    step_deadline.limit = 1
    t = Trainer(cfg, out_dir=out, splits=splits(make_frames), progress=False)
    assert t.step == 6
    t.fit()                                                             # its next checkpoint also clears the stray file
    assert not list(ckpts.glob('.ckpt-*.tmp-*'))
    assert [c.step for c in list_checkpoints(ckpts)] == [7, 6]


def test_truncated_newest_checkpoint_falls_back_with_a_warning(tmp_path, make_frames):
    p = vk.KagglePaths.under(tmp_path / 's1').ensure()
    data = splits(make_frames)
    vk.run_session(tiny_cfg(p, 2), p, splits=data, progress=False)          # checkpoints at steps 6 and 12
    newest = list_checkpoints(p.working)[0].path
    assert newest.name == 'ckpt-00000012.pt'
    newest.write_bytes(newest.read_bytes()[:1000])                          # truncated, as by a full disk
    p2 = attach_output(tmp_path / 's1', tmp_path / 's2')
    with pytest.warns(UserWarning, match='corrupt or truncated.*falling back'):
        t = Trainer(tiny_cfg(p2, 3), resume_dirs=vk.previous_output_dirs(p2.input), splits=data, progress=False)
    assert t.step == 6 and t.resumed_from.name == 'ckpt-00000006.pt'


def test_incompatible_config_is_an_error_naming_the_differences(tmp_path, make_frames):
    p = vk.KagglePaths.under(tmp_path / 's1').ensure()
    data = splits(make_frames)
    vk.run_session(tiny_cfg(p, 1), p, splits=data, progress=False)
    p2 = attach_output(tmp_path / 's1', tmp_path / 's2')
    changed = tiny_cfg(p2, 2, 'model.channels=8,32', 'quantizer.codebook_size=64', 'optim.lr=5e-4')
    with pytest.raises(TrainingError) as e:
        vk.run_session(changed, p2, splits=data, progress=False)
    msg = str(e.value)
    assert 'model.channels: [8, 16] -> [8, 32]' in msg and 'quantizer.codebook_size: 32 -> 64' in msg
    assert 'optim.lr' not in msg                                            # a compatible change is not an error
    s = vk.run_session(changed, p2, fresh=True, splits=data, progress=False)   # unless the user asks to start fresh
    sessions = [json.loads(l) for l in (p2.working / 'cpu' / 'sessions.jsonl').read_text().splitlines()]
    assert s['step'] == 12 and [x['resumed_from'] for x in sessions] == ['']


# -- the front-end notebook --------------------------------------------------------------------------------------

RUNNER = r'''
import json, sys
from execnb.nbio import read_nb
from execnb.shell import CaptureShell
nb = read_nb(sys.argv[1])
try:
    CaptureShell().run_all(nb, exc_stop=True)
    status = 'ok'
except BaseException as e:
    status = f'{type(e).__name__}: {e}'
out = []
for c in nb.cells:
    for o in c.get('outputs', []):
        t = o.get('output_type')
        if t == 'stream': out.append(''.join(o['text']))
        elif t == 'error': out.append(f"{o['ename']}: {o['evalue']}\n")
        elif t in ('display_data', 'execute_result'): out.append(f"[display {' '.join(sorted(o['data']))}]\n")
print('RESULT ' + json.dumps(dict(status=status, output=''.join(out))))
'''


@pytest.fixture
def kaggle_root(tmp_path, make_frames, monkeypatch):
    "An emulated /kaggle with a frame array dataset attached, and an empty TORCH_HOME."
    root = tmp_path / 'kaggle'
    ds = root / 'input' / 'game-frames'
    ds.mkdir(parents=True)
    fs = make_frames(32, H, W, seed=3)
    np.savez(ds / 'frames.npz', frames=fs.frames, episodes=fs.episodes)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch-home'))
    return root


def run_frontend(root, params, tmp_path, staged=False, name='nb'):
    "Run kernel/train.ipynb top to bottom in a fresh interpreter, in the emulated Kaggle at `root`, with `params` injected."
    nb_dir = tmp_path / f'{name}-stage'
    env = dict(os.environ, VQVAE_KAGGLE_ROOT=str(root), MPLBACKEND='Agg')
    if staged:   # exactly what `kernel push` sends: the package rides inside the notebook as a wheel
        kc.stage_kernel(REPO, nb_dir, params)
        env['VQVAE_KAGGLE_PIP_TARGET'] = str(tmp_path / f'{name}-site')   # install into a folder, not this environment
        env.pop('PYTHONPATH', None)
    else:
        nb_dir.mkdir()
        nb = kc.inject_parameters(json.loads((REPO / 'kernel' / 'train.ipynb').read_text()), params)
        (nb_dir / 'train.ipynb').write_text(json.dumps(nb))
        env['PYTHONPATH'] = str(REPO)
    r = subprocess.run([PY, '-c', RUNNER, str(nb_dir / 'train.ipynb')], env=env, capture_output=True, text=True, cwd=tmp_path,
                       timeout=600)
    assert 'RESULT ' in r.stdout, r.stderr[-3000:]
    return json.loads(r.stdout.split('RESULT ', 1)[1])


NB_PARAMS = dict(PRESET='cpu', DATA='game-frames/frames.npz', WANDB='disabled', OVERRIDES=[*TINY, 'run.epochs=1'])


def test_frontend_notebook_lpips_off_two_sessions_with_the_pushed_wheel(tmp_path, kaggle_root):
    res = run_frontend(kaggle_root, dict(NB_PARAMS, LPIPS_WEIGHT=0), tmp_path, staged=True, name='s1')
    assert res['status'] == 'ok', res['output']
    out = res['output']
    assert f"vqvae-kaggle {kc.package_version(REPO / 'vqvae_kaggle')} from {tmp_path / 's1-site' / 'vqvae_kaggle'}" in out
    assert 'LPIPS: off' in out and 'wandb: disabled' in out and 'previous output: none' in out
    assert out.count('[display ') >= 3 and 'image/png' in out                # sample grids and curves shown inline
    run = kaggle_root / 'working' / 'cpu'
    assert json.loads((run / 'summary.json').read_text())['step'] == 6      # 24 train frames (of 32), batch 4: 6 steps

    # the next session: the previous output attached as an input, one more epoch, and it must continue
    root2 = tmp_path / 'kaggle2'
    shutil.copytree(kaggle_root / 'input', root2 / 'input')
    shutil.copytree(kaggle_root / 'working', root2 / 'input' / 'vqvae-kaggle-train')
    res = run_frontend(root2, dict(NB_PARAMS, LPIPS_WEIGHT=0, REQUIRE_PREVIOUS=True, OVERRIDES=[*TINY, 'run.epochs=2']),
                       tmp_path, staged=True, name='s2')
    assert res['status'] == 'ok', res['output']
    assert f"resumed from {root2 / 'input' / 'vqvae-kaggle-train' / 'cpu' / 'checkpoints' / 'ckpt-00000006.pt'}" in res['output']
    run2 = root2 / 'working' / 'cpu'
    assert json.loads((run2 / 'summary.json').read_text())['step'] == 12
    sessions = [json.loads(l) for l in (run2 / 'sessions.jsonl').read_text().splitlines()]
    assert [s['package'] for s in sessions] == [kc.package_version(REPO / 'vqvae_kaggle')] * 2 and sessions[0]['kind'] == 'emulated'


def test_frontend_notebook_stops_when_lpips_is_requested_without_weights(tmp_path, kaggle_root):
    res = run_frontend(kaggle_root, dict(NB_PARAMS, LPIPS_WEIGHT=0.1, LPIPS_DOWNLOAD=False), tmp_path)
    assert res['status'].startswith('SessionStopped: LPIPS (alex) needs alexnet-owt-7be5be79.pth'), res
    assert 'STOPPED: LPIPS (alex) needs' in res['output'] and 'turn LPIPS off (LPIPS_WEIGHT = 0)' in res['output']
    assert not list_checkpoints(kaggle_root / 'working')                    # stopped before any training


def standin_alexnet_weights(path):
    "A file named like the AlexNet weights with AlexNet's shapes and random values (no real weights exist offline)."
    import torchvision
    g, sd = torch.Generator().manual_seed(0), {}
    for k, v in torchvision.models.alexnet().state_dict().items():
        strides = [(1, 3, 5, 7)[i] for i in range(v.dim())][::-1]
        base = torch.randn(sum((n - 1) * s for n, s in zip(v.shape, strides)) + 1, generator=g) * 0.05
        sd[k] = base.as_strided(v.shape, strides)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, path)


def test_frontend_notebook_with_lpips_weights_in_an_attached_dataset(tmp_path, kaggle_root):
    # An attached dataset laid out as a TORCH_HOME: the front end points TORCH_HOME at it. The file's values are random
    # (the real AlexNet weights cannot be fetched here): this checks the wiring, not the metric.
    standin_alexnet_weights(kaggle_root / 'input' / 'lpips-alexnet' / 'hub' / 'checkpoints' / 'alexnet-owt-7be5be79.pth')
    # 64x48 frames (the attached 32x24 ones, resized): AlexNet's pooling needs more than 32x24 pixels
    params = dict(NB_PARAMS, LPIPS_WEIGHT=0.1, LPIPS_DOWNLOAD=False, OVERRIDES=[*NB_PARAMS['OVERRIDES'], 'data.width=64', 'data.height=48'])
    res = run_frontend(kaggle_root, params, tmp_path)
    assert res['status'] == 'ok', res['output']
    assert f"LPIPS: TORCH_HOME={kaggle_root / 'input' / 'lpips-alexnet'}" in res['output']
    assert 'LPIPS (alex): ready, self-test passed' in res['output']
    rows = train_rows(kaggle_root / 'working' / 'cpu')
    assert rows and all(r['lpips'] > 0 and r['lpips_weight'] == pytest.approx(0.1) for r in rows)


# -- several GPUs: the session runs under torchrun ------------------------------------------------------------------

def test_session_on_two_processes_then_continues_on_one(tmp_path, make_frames):
    # 'gpus=2' on this CPU-only machine: two gloo processes under torchrun, the data from an attached frame array
    fs = make_frames(32, H, W, seed=5, episodes=8)
    p1 = vk.KagglePaths.under(tmp_path / 's1').ensure()
    (p1.input / 'frames').mkdir(parents=True)
    np.savez(p1.input / 'frames' / 'frames.npz', frames=fs.frames, episodes=fs.episodes)
    cfg = vk.session_config('cpu', [*TINY, 'run.max_steps=5', 'data.val_fraction=0.25', 'data.workers=1'],
                            data='frames/frames.npz', paths=p1)
    s1 = vk.run_session(cfg, p1, gpus='2', progress=False)
    assert s1['step'] == 5 and s1['stopped'] == 'max_steps'
    out = Path(cfg.run.out_dir)
    assert json.loads((out / 'sessions.jsonl').read_text().splitlines()[-1])['processes'] == 2
    assert load_checkpoint(list_checkpoints(out / 'checkpoints')[0].path)['world_size'] == 2
    # the next session sees that output as input and continues on one process
    p2 = attach_output(tmp_path / 's1', tmp_path / 's2')
    (p2.input / 'frames').mkdir(parents=True)
    shutil.copy(p1.input / 'frames' / 'frames.npz', p2.input / 'frames' / 'frames.npz')
    cfg2 = vk.session_config('cpu', [*TINY, 'run.max_steps=9', 'data.val_fraction=0.25', 'data.workers=1'],
                             data='frames/frames.npz', paths=p2)
    s2 = vk.run_session(cfg2, p2, require_previous=True, gpus='1', progress=False)
    assert s2['step'] == 9


def test_frontend_runs_under_papermill_with_injected_parameters(tmp_path, kaggle_root, monkeypatch):
    "Kaggle executes notebooks with papermill: the front end runs under it, parameters injected after its `parameters` cell."
    papermill = pytest.importorskip('papermill')
    monkeypatch.setenv('VQVAE_KAGGLE_ROOT', str(kaggle_root))
    monkeypatch.setenv('PYTHONPATH', str(REPO))
    monkeypatch.setenv('MPLBACKEND', 'Agg')
    out = tmp_path / 'executed.ipynb'
    papermill.execute_notebook(str(REPO / 'kernel' / 'train.ipynb'), str(out), parameters=dict(NB_PARAMS, LPIPS_WEIGHT=0),
                               cwd=str(tmp_path), kernel_name='python3', progress_bar=False,
                               execution_timeout=300)
    nb = json.loads(out.read_text())
    tags = [c['metadata'].get('tags', []) for c in nb['cells']]
    i = next(k for k, t in enumerate(tags) if 'parameters' in t)
    assert 'injected-parameters' in tags[i + 1] and "PRESET = \"cpu\"" in ''.join(nb['cells'][i + 1]['source'])
    assert json.loads((kaggle_root / 'working' / 'cpu' / 'summary.json').read_text())['step'] == 6
    text = json.dumps(nb['cells'])
    assert 'LPIPS: off' in text and 'image/png' in text


def test_distributed_session_prepares_the_frames_first_and_frees_the_front_ends_lpips(tmp_path, monkeypatch):
    "Under torchrun the frames are cached before any rank starts (so no rank waits at a barrier while they render), and the "
    "front end's LPIPS leaves the GPU the ranks train on."
    import vqvae_kaggle.distributed as dist_mod
    paths = vk.KagglePaths.under(tmp_path / 'k').ensure()
    cfg = vk.session_config('cpu', [*TINY, 'run.epochs=1', 'data.crafter_train_seeds=1', 'data.crafter_val_seeds=1',
                                    'data.frames_per_episode=6', 'data.workers=1'], data='crafter', paths=paths)
    seen = {}
    class StandInLPIPS:
        device = 'cuda:0'
        def to(self, device): self.device = device; return self
    def fake_run_distributed(cfg, out, resume_dirs, fresh, nproc, hours, margin, started_at, budget):
        seen.update(nproc=nproc, entries=sorted(p.parent.name for p in Path(cfg.data.cache_dir).glob('crafter-*/manifest.json')),
                    lpips_device=lpips.device)
        return dict(stopped='done', step=0, epochs_done=0, session_seconds=0.0, data=None), None, 1.0
    monkeypatch.setattr(dist_mod, 'resolve_nproc', lambda gpus: 2)
    monkeypatch.setattr(vk, '_run_distributed', fake_run_distributed)
    lpips = StandInLPIPS()
    summary = vk.run_session(cfg, paths, gpus='2', lpips_model=lpips, progress=False)
    assert seen['nproc'] == 2 and len(seen['entries']) == 1, seen     # the frames were rendered before the launch
    assert seen['lpips_device'] == 'cpu'
    assert summary['data']['trained'] == 'crafter'
