"""Issue 25: a run's tokenizer published to Kaggle Models and loaded back by handle. Kaggle's servers are the only thing
that stands in: the staging, the card, the handle resolution (kagglehub's own cache code, an emulated kernel's inputs in
both layouts) and every call into kagglehub are the real ones, bound against the installed client's signatures."""
import inspect, json, re, warnings
from pathlib import Path
import numpy as np
import pytest, torch

import kagglehub
from kagglehub.cache import Cache
from kagglehub.handle import parse_model_handle as kagglehub_handle
from vqvae_kaggle import kaggle_models as km, model_handles as mh
from vqvae_kaggle.checkpoint import CheckpointError, export_tokenizer, load_tokenizer, resolve_checkpoint
from vqvae_kaggle.config import apply_overrides
from vqvae_kaggle.presets import get_preset
from vqvae_kaggle.model import encode_frames
from vqvae_kaggle.report import fmt_metric, run_eval
from vqvae_kaggle.train import Trainer

pytestmark = pytest.mark.filterwarnings("ignore:.*single episode")
W, H = 32, 24
HANDLE = 'alice/mc-tokenizer/pytorch/tiny'


def tiny_cfg(folder, *extra):
    "The cpu preset shrunk to a few CPU seconds, on folder/frames.npy, writing folder/run."
    return apply_overrides(get_preset('cpu'), [
        f'data.source={folder/"frames.npy"}', f'data.cache_dir={folder/"cache"}', f'data.width={W}', f'data.height={H}',
        'model.channels=8,16', 'model.res_blocks=0', 'model.embed_dim=8', 'quantizer.codebook_size=32', 'optim.batch_size=4',
        'run.val_frames=4', 'run.sample_frames=2', 'run.budget_minutes=none', 'run.threads=1', f'run.out_dir={folder/"run"}', *extra])


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    "A short training on blocky frames, evaluated: (run folder, frames)."
    from conftest import synthetic_frames
    tmp = tmp_path_factory.mktemp('run')
    frames = synthetic_frames(24, H, W, seed=3).frames
    np.save(tmp/'frames.npy', frames)
    cfg = tiny_cfg(tmp, 'run.wandb=disabled', 'run.epochs=12')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        Trainer(cfg, progress=False).fit()
    run_eval(tmp/'run', device='cpu', batch_size=4, lpips=False, fid=False)
    return tmp/'run', frames


class KaggleServer:
    "Stands only where Kaggle's servers would be: records each upload, bound against the installed kagglehub's signature."
    def __init__(self): self.calls = []
    def model_upload(self, *args, **kwargs):
        bound = inspect.signature(kagglehub.model_upload).bind(*args, **kwargs)
        folder = Path(bound.arguments['local_model_dir'])
        self.calls.append(dict(bound.arguments, files=sorted(p.name for p in folder.iterdir())))


@pytest.fixture
def credentials(monkeypatch):
    monkeypatch.setenv('KAGGLE_USERNAME', 'alice'); monkeypatch.setenv('KAGGLE_KEY', 'k' * 32)


def test_publish_stages_the_model_folder_and_a_card_true_to_eval_json(trained, credentials, tmp_path):
    run, _ = trained
    server = KaggleServer()
    r = km.publish_model(run, 'kaggle:' + HANDLE, version_notes='first', client=server, stage_dir=tmp_path/'stage')
    assert len(server.calls) == 1
    call = server.calls[0]
    assert call['handle'] == HANDLE and call['license_name'] == 'Apache 2.0' and call['version_notes'] == 'first'
    assert kagglehub_handle(call['handle']).framework_enum()          # the client itself accepts the handle
    assert call['files'] == sorted(km.MODEL_FILES) == r['files']       # exactly the export, config, card and samples
    folder = Path(call['local_model_dir'])
    # the export is the run's newest checkpoint, loadable on its own
    model, cfg, state = load_tokenizer(folder/'tokenizer.safetensors')
    assert state['step'] == json.loads((run/'summary.json').read_text())['step']
    assert json.loads((folder/'config.json').read_text()) == json.loads((run/'config.json').read_text())
    # every number in the card's table is the run's eval.json, rounded as the card says
    card, ev = (folder/'README.md').read_text(), json.loads((run/'eval'/'eval.json').read_text())['sources']['val']
    row = next(l for l in card.splitlines() if l.startswith('| val |')).strip('|').split('|')[1:]
    for (key, _, fmt), cell in zip(km.CARD_METRICS, row):
        assert cell.strip() == fmt_metric(ev.get(key), fmt), key
    assert 'From eval/eval.json' in card and '![held-out frames and reconstructions](samples.png)' in card
    assert f"load_tokenizer('kaggle:{HANDLE}')" in card and 'Apache 2.0' in card
    assert re.search(r'12x16 = 192 tokens from 32 codes \(5 bits each, 960 bits per frame\)', card)
    assert 'model.channels' in card and 'run.out_dir' not in card  # differences from the preset, run settings aside


def test_publish_through_the_real_client_reports_an_unreachable_server(trained, credentials, tmp_path):
    "No client passed: the installed kagglehub.model_upload runs, and without a network says so, naming the handle."
    run, _ = trained
    with pytest.raises(km.ModelPublishError, match=f'{HANDLE}: Kaggle refused the upload.*staged folder'):
        km.publish_model(run, HANDLE, stage_dir=tmp_path/'stage')
    assert sorted(p.name for p in (tmp_path/'stage').iterdir()) == sorted(km.MODEL_FILES)   # kept, to retry by hand


def test_collapsed_run_is_refused_unless_allowed(trained, credentials, tmp_path):
    run, _ = trained
    summary = json.loads((run/'summary.json').read_text())
    bad = tmp_path/'collapsed'
    import shutil; shutil.copytree(run, bad)
    (bad/'summary.json').write_text(json.dumps(dict(summary, alerts=['step 40: smoothed codebook usage 2.0% < 5%'])))
    server = KaggleServer()
    with pytest.raises(km.ModelPublishError, match='collapsed.*smoothed codebook usage'):
        km.publish_model(bad, HANDLE, client=server, stage_dir=tmp_path/'stage')
    assert server.calls == [] and not (tmp_path/'stage').exists()      # refused before anything is staged or sent
    km.publish_model(bad, HANDLE, client=server, allow_collapsed=True)
    assert len(server.calls) == 1


def test_publish_without_credentials_sends_nothing(trained, monkeypatch, tmp_path):
    for k in ('KAGGLE_USERNAME', 'KAGGLE_KEY', 'KAGGLE_API_TOKEN', 'KAGGLE_KERNEL_RUN_TYPE'): monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv('HOME', str(tmp_path))
    server = KaggleServer()
    with pytest.raises(km.ModelPublishError, match='no Kaggle credentials'):
        km.publish_model(trained[0], HANDLE, client=server)
    assert server.calls == []


def codes_of(checkpoint, frames):
    model, _, _ = load_tokenizer(checkpoint)
    return encode_frames(model, frames)


@pytest.mark.parametrize('layout', ['old', 'new'])
def test_load_by_handle_from_an_emulated_kernel_input(trained, tmp_path, monkeypatch, layout):
    run, frames = trained
    local = export_tokenizer(run, tmp_path/'local.safetensors')
    root = tmp_path/'kaggle'
    mount = (root/'input'/'mc-tokenizer' if layout == 'old' else root/'input'/'models'/'alice'/'mc-tokenizer')/'pytorch'/'tiny'/'2'
    km.stage_model(run, HANDLE, mount)
    monkeypatch.setenv('VQVAE_KAGGLE_ROOT', str(root))
    with pytest.raises(CheckpointError, match=f'{HANDLE}/3: the model is not attached under .*cannot be downloaded'):
        resolve_checkpoint(f'kaggle:{HANDLE}/3')   # another version is not mounted: kagglehub is asked, offline it fails
    monkeypatch.setattr(kagglehub, 'model_download', lambda *a, **k: pytest.fail('a mounted model is not downloaded'))
    for spec in (f'kaggle:{HANDLE}', f'kaggle:{HANDLE}/2'):
        assert resolve_checkpoint(spec) == mount/'tokenizer.safetensors'
        np.testing.assert_array_equal(codes_of(spec, frames), codes_of(local, frames))


def test_load_by_handle_from_the_kagglehub_cache(trained, tmp_path, monkeypatch):
    "A version downloaded before: kagglehub's own cache code finds it, with no network."
    run, frames = trained
    h = kagglehub_handle(f'{HANDLE}/1')
    cache = Cache()
    km.stage_model(run, HANDLE, cache.get_path(h))
    cache.mark_as_complete(h)
    monkeypatch.delenv('VQVAE_KAGGLE_ROOT', raising=False)
    spec = f'kaggle:{HANDLE}/1'
    assert mh.resolve_model(spec) == Path(cache.get_path(h))
    np.testing.assert_array_equal(codes_of(spec, frames), codes_of(export_tokenizer(run, tmp_path/'x.safetensors'), frames))
    with pytest.raises(mh.ModelHandleError, match='Offline, only a versioned handle'):
        mh.resolve_model(f'kaggle:{HANDLE}')    # the newest version needs the server


def test_session_end_logs_the_export_as_a_wandb_model_artifact(tmp_path, make_frames):
    "With wandb on (offline here), a session's end writes the slim export and logs it as a model artifact with its metrics."
    frames = make_frames(24, H, W, seed=3).frames
    np.save(tmp_path/'frames.npy', frames)
    cfg = tiny_cfg(tmp_path, 'run.wandb=offline', 'run.epochs=1')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        t = Trainer(cfg, progress=False)
        summary = t.fit()
    export = tmp_path/'run'/'tokenizer.safetensors'
    assert load_tokenizer(export)[2]['step'] == summary['step']          # the session's last checkpoint, exported
    logs = list((tmp_path/'run'/'wandb').glob('offline-run-*/run-*.wandb'))
    assert len(logs) == 1
    log = logs[0].read_bytes()
    for needle in (f'tokenizer-{t.tracker.run_id}', 'tokenizer.safetensors', 'package_version', f'step-{summary["step"]}'):
        assert needle.encode() in log, needle                           # the artifact record, its file, metadata and alias


def test_cli_model_stage_publish_attach(trained, tmp_path, monkeypatch, capsys):
    from vqvae_kaggle.cli import main
    from vqvae_kaggle.kaggle_push import KernelMetadata, read_metadata
    run, _ = trained
    assert main(['model', 'stage', str(run), '--id', HANDLE, '--out', str(tmp_path/'m')]) == 0
    assert sorted(p.name for p in (tmp_path/'m').iterdir()) == sorted(km.MODEL_FILES)
    for k in ('KAGGLE_USERNAME', 'KAGGLE_KEY', 'KAGGLE_API_TOKEN', 'KAGGLE_KERNEL_RUN_TYPE'): monkeypatch.delenv(k, raising=False)
    assert main(['model', 'publish', str(run), '--id', HANDLE]) == 2
    assert 'no Kaggle credentials' in capsys.readouterr().err
    (tmp_path/'k'/'kernel').mkdir(parents=True); (tmp_path/'k'/'kernel'/'train.ipynb').write_text('{}')
    KernelMetadata('alice/vqvae-kaggle-train', 'vqvae-kaggle-train').write(tmp_path/'k')
    assert main(['model', 'attach', f'{HANDLE}/3', '--folder', str(tmp_path/'k')]) == 0
    assert read_metadata(tmp_path/'k')[0]['model_sources'] == [f'{HANDLE}/3']
    assert main(['model', 'attach', HANDLE, '--folder', str(tmp_path/'k')]) == 2
    assert 'give the version' in capsys.readouterr().err


def test_kernel_front_end_publishes_at_the_end_and_never_fails_the_session_for_it(tmp_path, make_frames, monkeypatch):
    """PUBLISH_MODEL in the emulated kernel: the session trains, then stages its model folder and calls the installed
    kagglehub's upload, which (no network here) fails: loudly, with the session complete and the folder in the output."""
    from test_sessions import run_frontend, NB_PARAMS, TINY as SESSION_TINY, H as SH, W as SW
    root = tmp_path/'kaggle'
    (root/'input'/'game-frames').mkdir(parents=True)
    fs = make_frames(32, SH, SW, seed=3)
    np.savez(root/'input'/'game-frames'/'frames.npz', frames=fs.frames, episodes=fs.episodes)
    monkeypatch.setenv('KAGGLE_USERNAME', 'alice'); monkeypatch.setenv('KAGGLE_KEY', 'k' * 32)
    res = run_frontend(root, dict(NB_PARAMS, LPIPS_WEIGHT=0, PUBLISH_MODEL=HANDLE, OVERRIDES=[*SESSION_TINY, 'run.epochs=12']),
                       tmp_path)
    assert res['status'] == 'ok', res['output']
    out, run = res['output'], root/'working'/'cpu'
    assert 'WARNING: MODEL NOT PUBLISHED' in out and f'{HANDLE}: Kaggle refused the upload' in out, out[-3000:]
    assert sorted(p.name for p in (run/'model').iterdir()) == sorted(km.MODEL_FILES)
    assert json.loads((run/'summary.json').read_text())['step'] == 72
