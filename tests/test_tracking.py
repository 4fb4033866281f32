"""The real wandb client in offline mode (no server is reachable from here): the run's files are written locally,
with the logged history, the runtime note in its config, and the resumed id."""
import json
from pathlib import Path
import pytest

wandb = pytest.importorskip('wandb')
from vqvae_kaggle.tracking import Tracker, read_metrics


def test_offline_wandb_run_records_metrics_notes_and_resumes(tmp_path):
    t = Tracker(tmp_path, {'optim': {'lr': 1e-3}}, mode='offline', name='offline-test', verbose=False)
    assert t.mode == 'offline' and t.run is not None and t.run_id
    t.log({'loss': 0.5}, step=1, epoch=0)
    t.note('runtime', {'name': 'NVIDIA T4', 'capability': '7.5', 'precision': 'fp16 + grad scaler'})
    assert t.run.config['runtime']['capability'] == '7.5' and t.run.config['optim']['lr'] == 1e-3
    t.alert('collapse', 'usage fell to 1%')          # offline: cannot be sent, still logged
    run_id = t.run_id
    t.finish()
    rows = read_metrics(tmp_path / 'metrics.jsonl')
    assert [r.get('note') or r.get('alert') or r['split'] for r in rows] == ['train', 'runtime', 'collapse']
    runs = list((tmp_path / 'wandb').glob(f'offline-run-*-{run_id}'))
    assert len(runs) == 1 and list(runs[0].glob('*.wandb'))   # the local run file `wandb sync` would upload
    again = Tracker(tmp_path, mode='offline', run_id=run_id, verbose=False)
    assert again.run_id == run_id
    again.finish()
