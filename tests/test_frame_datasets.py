"""Minecraft frames reach a Kaggle kernel for real: a frame dataset rendered here (the CLI), published through the real
kaggle client's own checks (only its network calls stand in), trained on by the front-end notebook from either mount
layout with no OpenGL and no game; a kernel without frames stops in seconds, naming both fixes; a fallback that the
parameters allow is recorded everywhere; rendered frames survive into the next session."""
import contextlib, io, json, os, shutil, time
from pathlib import Path

import numpy as np
import pytest

from vqvae_kaggle import kaggle as vk
from vqvae_kaggle.cli import main
from vqvae_kaggle.config import Config, DataConfig, apply_overrides
from vqvae_kaggle.presets import get_preset, load_config
from vqvae_kaggle.data import load_splits
from vqvae_kaggle.sources.frame_dataset import frame_dataset_manifest
from vqvae_kaggle.kaggle_datasets import DATASET_METADATA, dataset_metadata, publish_frame_dataset, stage_frame_dataset
from vqvae_kaggle.kaggle_client import KaggleCredentialsError
from test_sessions import run_frontend, TINY

REPO = Path(__file__).resolve().parents[1]
NO_GAME = dict(__EGL_VENDOR_LIBRARY_FILENAMES='/nonexistent/egl-vendors.json',   # no EGL driver at all
               VQVAE_MINECRAFT_PYTHON='/nonexistent/python')                       # and no game: any rendering fails loudly
W, H = 32, 24


@pytest.fixture(scope='module')
def minecraft_dataset(tmp_path_factory):
    "A real Minecraft frame dataset made by the CLI: 2 training worlds and 1 held-out world of 6 frames at 32x24."
    out = tmp_path_factory.mktemp('frames') / 'minecraft-frames'
    rc = main(['frames', 'render', str(out), '--worlds', '2', '--val-worlds', '1', '--frames-per-world', '6',
               '--width', str(W), '--height', str(H), '--workers', '2', '--no-progress'])
    assert rc == 0
    return out


def test_render_makes_the_cache_entry_of_the_config_with_a_card_and_timings(minecraft_dataset, capsys):
    m = frame_dataset_manifest(minecraft_dataset)
    assert m['params']['source'] == 'minecraft' and m['counts']['frames'] == 18 and m['frame_shape'] == [H, W, 3]
    assert [(t['seed'], t['split']) for t in m['params']['tasks']] == [(0, 'train'), (1, 'train'), (10000, 'val')]
    assert all(s['seconds'] > 0 and 'actions' in s for s in m['shards'])
    card = (minecraft_dataset / 'README.md').read_text()
    assert 'training worlds (seeds): 0-1' in card and 'held-out worlds (seeds): 10000' in card and 'keep the dataset private' in card
    # rendered again with the same settings: reused, nothing rendered (no OpenGL now)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('__EGL_VENDOR_LIBRARY_FILENAMES', NO_GAME['__EGL_VENDOR_LIBRARY_FILENAMES'])
        mp.setenv('PATH', '/nonexistent')                                     # no Xvfb either
        assert main(['frames', 'render', str(minecraft_dataset), '--worlds', '2', '--val-worlds', '1', '--frames-per-world', '6',
                     '--width', str(W), '--height', str(H)]) == 0
    assert 'already holds these worlds' in capsys.readouterr().out
    # the same frames as the training cache makes for that config
    d = DataConfig(source=str(minecraft_dataset), width=W, height=H, cache_dir=str(minecraft_dataset.parent / 'cache'))
    train, val = load_splits(Config(data=d), progress=False)
    assert train.names == ['minecraft-world-0', 'minecraft-world-1'] and val.names == ['minecraft-world-10000']
    assert train.actions.shape == (12, 10) and train.origin['game'] == 'minecraft'


def test_render_refuses_a_folder_holding_something_else(tmp_path, capsys):
    (tmp_path / 'notes').mkdir(); (tmp_path / 'notes' / 'todo.txt').write_text('mine')
    assert main(['frames', 'render', str(tmp_path / 'notes'), '--game', 'crafter', '--worlds', '1']) == 2
    assert 'is not a frame dataset' in capsys.readouterr().err and (tmp_path / 'notes' / 'todo.txt').read_text() == 'mine'


class NoNetwork(Exception):
    "Where the real client would open its first connection."


def real_client_upload(staged: Path, exists: bool):
    "The installed kaggle client's own dataset_create_new / dataset_create_version on `staged`, its network calls replaced: what it would upload."
    from requests import HTTPError
    with contextlib.redirect_stdout(io.StringIO()):
        from kaggle.api.kaggle_api_extended import KaggleApi
    api = KaggleApi()
    api.config_values = {api.CONFIG_NAME_USER: 'me'}
    uploaded = []
    def status(ref, format=None):
        if exists: return 'ready'
        e = HTTPError('404'); e.response = type('R', (), {'status_code': 404})(); raise e
    def upload(file_name, full_path, *a, **k):
        uploaded.append((file_name, Path(full_path).read_bytes())); return None   # read through the link, as the client does
    class Server:   # Kaggle's servers: the first request sent to them ends the call
        def __enter__(self): return self
        def __exit__(self, *exc): return False
        def __getattr__(self, name): return self
        def __call__(self, *a, **k): raise NoNetwork('connect')
    api.dataset_status, api._upload_file, api.build_kaggle_client = status, upload, Server
    with pytest.raises(NoNetwork) as stopped:
        if exists: api.dataset_create_version(str(staged), 'notes', quiet=True, dir_mode='skip')
        else: api.dataset_create_new(str(staged), public=False, quiet=True, dir_mode='skip')
    assert stopped.value.args == ('connect',), stopped.value.args   # the client's own checks passed: it went on to connect
    return uploaded


def test_publish_stages_a_folder_the_real_client_accepts(minecraft_dataset, tmp_path):
    (minecraft_dataset / 'frames.u8.npy').write_bytes(b'derived')          # a local copy training makes: never uploaded
    meta = dataset_metadata('me/minecraft-frames', description=(minecraft_dataset / 'README.md').read_text())
    staged = stage_frame_dataset(minecraft_dataset, meta, tmp_path / 'stage')
    for exists in (False, True):
        uploaded = dict(real_client_upload(staged, exists))
        listed = {s['file'] for s in frame_dataset_manifest(minecraft_dataset)['shards']}
        assert listed | {'manifest.json', 'README.md'} <= set(uploaded) and 'frames.u8.npy' not in uploaded
        assert uploaded['manifest.json'] == (minecraft_dataset / 'manifest.json').read_bytes()
    # the metadata has the keys and shapes `kaggle datasets init` writes
    with contextlib.redirect_stdout(io.StringIO()):
        from kaggle.api.kaggle_api_extended import KaggleApi
        api = KaggleApi(); api.config_values = {api.CONFIG_NAME_USER: 'me'}
        init = json.loads(Path(api.dataset_initialize(str(tmp_path))).read_text())
    staged_meta = json.loads((staged / DATASET_METADATA).read_text())
    assert set(init) <= set(staged_meta) and [set(l) for l in staged_meta['licenses']] == [set(l) for l in init['licenses']]


def test_dataset_calls_bind_against_the_installed_client():
    import inspect
    with contextlib.redirect_stdout(io.StringIO()):
        from kaggle.api.kaggle_api_extended import KaggleApi
    api = object()
    inspect.signature(KaggleApi.dataset_status).bind(api, 'me/minecraft-frames')
    inspect.signature(KaggleApi.dataset_create_new).bind(api, '/tmp/stage', public=False, quiet=False, dir_mode='skip')
    inspect.signature(KaggleApi.dataset_create_version).bind(api, '/tmp/stage', 'notes', quiet=False, dir_mode='skip')


def test_publish_without_credentials_says_so_before_anything_is_sent(minecraft_dataset, tmp_path, monkeypatch, capsys):
    for var in ('KAGGLE_USERNAME', 'KAGGLE_KEY', 'KAGGLE_API_TOKEN'): monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv('KAGGLE_CONFIG_DIR', str(tmp_path / 'empty'))
    monkeypatch.setenv('HOME', str(tmp_path))
    shutil.copy(REPO / 'kernel-metadata.json', tmp_path / 'kernel-metadata.json')
    assert main(['frames', 'publish', str(minecraft_dataset), '--id', 'me/minecraft-frames', '--folder', str(tmp_path)]) == 2
    assert 'credentials' in capsys.readouterr().err.lower()
    assert json.loads((tmp_path / 'kernel-metadata.json').read_text())['dataset_sources'] == []   # nothing attached


def kernel_root(tmp_path, name='kaggle'):
    root = tmp_path / name
    (root / 'input').mkdir(parents=True)
    return root


PARAMS = dict(PRESET='cpu', WANDB='disabled', LPIPS_WEIGHT=0, OVERRIDES=[*TINY, 'run.epochs=1'])


@pytest.mark.parametrize('layout', ['minecraft-frames', 'datasets/me/minecraft-frames'])
def test_kernel_trains_on_the_attached_dataset_without_opengl_or_the_game(minecraft_dataset, tmp_path, monkeypatch, layout):
    for k, v in NO_GAME.items(): monkeypatch.setenv(k, v)
    monkeypatch.setenv(vk.OFFLINE_ENV, '1')                                   # internet off: nothing could be installed
    root = kernel_root(tmp_path)
    shutil.copytree(minecraft_dataset, root / 'input' / layout)
    res = run_frontend(root, PARAMS, tmp_path)                                 # DATA is the notebook's default: 'minecraft'
    assert res['status'] == 'ok', res['output']
    assert f"DATA: minecraft frame dataset: 2 training and 1 held-out worlds, 18 frames of {W}x{H} at {root / 'input' / layout}" in res['output']
    run = root / 'working' / 'cpu'
    summary = json.loads((run / 'summary.json').read_text())
    assert summary['data']['game'] == 'minecraft' and summary['data']['fallback'] is None and summary['step'] == 3
    assert load_config(run / 'config.json').data.source == str(root / 'input' / layout)
    assert not (run / vk.FRAME_CACHE).exists()                                 # attached frames are not copied into the output


def test_kernel_without_frames_stops_in_seconds_and_trains_nothing(tmp_path, monkeypatch):
    for k, v in NO_GAME.items(): monkeypatch.setenv(k, v)
    monkeypatch.setenv(vk.OFFLINE_ENV, '1')
    root = kernel_root(tmp_path)
    t = time.monotonic()
    res = run_frontend(root, PARAMS, tmp_path)
    assert res['status'].startswith('SessionStopped: no minecraft frames for this session'), res
    for fix in ('vqvae-kaggle frames publish', 'dataset_sources', '"enable_internet": true'): assert fix in res['output']
    assert 'crafter' not in res['output'].split('STOPPED:')[0].lower()          # nothing of another game before the stop
    assert not (root / 'working' / 'cpu' / 'checkpoints').exists() and not (root / 'temp' / 'data-cache').exists()
    print(f'stopped after {time.monotonic() - t:.1f} s (interpreter start and imports included)')


def test_kernel_whose_game_cannot_render_stops_unless_fallback_is_asked(tmp_path, monkeypatch):
    for k, v in NO_GAME.items(): monkeypatch.setenv(k, v)
    root = kernel_root(tmp_path)
    res = run_frontend(root, dict(PARAMS, RENDER='always'), tmp_path, name='stop')
    assert res['status'].startswith('SessionStopped: Minecraft cannot be rendered in this kernel'), res
    assert "FALLBACK='crafter'" in res['output'] and not (root / 'working' / 'cpu' / 'checkpoints').exists()


def test_an_allowed_fallback_is_recorded_everywhere(tmp_path, monkeypatch):
    "FALLBACK='crafter': the session trains Crafter, and config.json, summary.json, sessions.jsonl, metrics.jsonl and wandb say so."
    for k, v in NO_GAME.items(): monkeypatch.setenv(k, v)
    root = kernel_root(tmp_path)
    over = [*TINY, 'run.epochs=1', 'data.minecraft_train_worlds=1', 'data.minecraft_val_worlds=1', 'data.crafter_train_seeds=2',
            'data.crafter_val_seeds=1', 'data.frames_per_episode=6', 'data.workers=1', 'run.wandb=offline']
    res = run_frontend(root, dict(PARAMS, RENDER='always', FALLBACK='crafter', WANDB='offline', OVERRIDES=over), tmp_path, name='fb')
    assert res['status'] == 'ok', res['output']
    assert "WARNING: TRAINING ON 'crafter', NOT 'minecraft'" in res['output']
    run = root / 'working' / 'cpu'
    summary = json.loads((run / 'summary.json').read_text())
    assert summary['data']['requested'] == 'minecraft' and summary['data']['trained'] == 'crafter'
    assert 'VQVAE_MINECRAFT_PYTHON' in summary['data']['fallback']
    assert load_config(run / 'config.json').data.source == 'crafter'
    session = json.loads((run / 'sessions.jsonl').read_text().splitlines()[-1])
    assert session['data']['trained'] == 'crafter' and session['data']['fallback']
    notes = [json.loads(l) for l in (run / 'metrics.jsonl').read_text().splitlines() if '"note"' in l]
    assert any(n['note'] == 'data_origin' and n['trained'] == 'crafter' for n in notes)
    wandb_log = next(run.glob('wandb/offline-run-*/run-*.wandb')).read_bytes()   # an offline run keeps its config in its log
    assert b'data_origin' in wandb_log and b'"trained":"crafter"' in wandb_log
    assert "this session trained on 'crafter', not 'minecraft'" in res['output']          # show_session says it once more


def test_rendered_frames_survive_into_the_next_session(tmp_path, monkeypatch):
    "Session 1 renders Crafter; session 2 (session 1's output attached) renders nothing and keeps the frames for session 3."
    import vqvae_kaggle.sources.crafter as frames_mod
    calls = []
    real = frames_mod.render_crafter_episode
    monkeypatch.setattr(frames_mod, 'render_crafter_episode', lambda seed, *a, **k: calls.append(seed) or real(seed, *a, **k))
    over = [*TINY, 'data.crafter_train_seeds=2', 'data.crafter_val_seeds=1', 'data.frames_per_episode=6', 'data.workers=1']
    one = vk.KagglePaths.under(tmp_path / 's1').ensure()
    cfg = vk.session_config('cpu', [*over, 'run.epochs=1'], data='crafter', paths=one)
    s1 = vk.run_session(cfg, one, progress=False)
    assert calls == [0, 1, 10000] and s1['data']['trained'] == 'crafter'
    kept = sorted(p.name for p in (one.working / 'cpu' / vk.FRAME_CACHE).iterdir())
    assert len(kept) == 1 and kept[0].startswith('crafter-')
    two = vk.KagglePaths.under(tmp_path / 's2').ensure()
    shutil.copytree(one.working, two.input / 'vqvae-kaggle-train')
    cfg2 = vk.session_config('cpu', [*over, 'run.epochs=2'], data='crafter', paths=two)
    s2 = vk.run_session(cfg2, two, require_previous=True, progress=False)
    assert calls == [0, 1, 10000] and s2['step'] == 2 * s1['step']            # nothing rendered again; it continued
    assert sorted(p.name for p in (two.working / 'cpu' / vk.FRAME_CACHE).iterdir()) == kept
    assert not any(p.is_symlink() for p in (two.working / 'cpu' / vk.FRAME_CACHE).rglob('*'))


def test_session_limit_follows_the_push_timeout_and_the_quota(tmp_path, make_frames, capsys):
    paths = vk.KagglePaths.under(tmp_path / 'k').ensure()
    cfg = vk.session_config('cpu', [*TINY, 'run.epochs=1'], data='crafter', paths=paths)
    frames = make_frames(24, H, W, seed=1), make_frames(8, H, W, seed=2)
    # 30 min of Kaggle's limit already spent (the kernel started then), a 40 min timeout, 12 min margin: about -2 min: no time
    with pytest.raises(vk.SessionTimeError):
        vk.run_session(cfg, paths, timeout_seconds=40 * 60, margin_minutes=12, started_at=time.time() - 30 * 60, splits=frames,
                       progress=False)
    assert 'limited to 0.67 h by the push timeout (2400 s)' in capsys.readouterr().out
    s = vk.run_session(cfg, paths, quota_hours_left=1.0, margin_minutes=12, started_at=time.time() - 30 * 60, splits=frames,
                       progress=False, session_token='abc123')
    out = capsys.readouterr().out
    assert 'limited to 1.00 h by the GPU quota left this week' in out and 'session: 18.' in out   # 60 - 30 - 12 = 18 min left
    assert s['session_token'] == 'abc123'
    assert json.loads((paths.working / 'cpu' / 'summary.json').read_text())['session_token'] == 'abc123'
    assert json.loads((paths.working / 'cpu' / 'sessions.jsonl').read_text().splitlines()[-1])['session_token'] == 'abc123'

