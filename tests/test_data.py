"Integration tests of vqvae_kaggle.data: parallel extraction into the cache, reuse, and the loader on a GPU."
import json, os, tempfile, warnings
from dataclasses import replace
from pathlib import Path

for var in ('WANDB_DIR', 'MPLCONFIGDIR', 'KAGGLEHUB_CACHE', 'KAGGLE_CONFIG_DIR'):
    os.environ.setdefault(var, tempfile.mkdtemp(prefix=f'{var.lower()}-'))

import numpy as np
import pytest
import torch
from vqvae_kaggle.config import Config, DataConfig
from vqvae_kaggle.data import BatchLoader, load_splits, load_cache_entry


def crafter_cfg(tmp_path, **kw):
    d = dict(crafter_train_seeds=2, crafter_val_seeds=2, frames_per_episode=5, skip_first=3, frame_gap=2,
             cache_dir=str(tmp_path / 'cache'), workers=2)
    d.update(kw)
    return Config(data=DataConfig(**d))


def test_crafter_parallel_extraction_cached_and_reused(tmp_path):
    cfg = crafter_cfg(tmp_path)
    train, val = load_splits(cfg, progress=False)
    assert train.names == ['crafter-seed-0', 'crafter-seed-1']
    assert val.names == ['crafter-seed-10000', 'crafter-seed-10001']
    assert train.frames.shape == (10, 72, 128, 3) and val.frames.shape == (10, 72, 128, 3)
    entries = [p for p in (tmp_path / 'cache').iterdir()]
    assert len(entries) == 1 and not entries[0].name.endswith('.partial')
    manifest = json.loads((entries[0] / 'manifest.json').read_text())
    assert manifest['counts'] == dict(frames=20, shards=4, skipped=0, episodes=4)
    # Reuse: identical frames (crafter is not deterministic, so equality proves nothing was re-rendered).
    train2, val2 = load_splits(cfg, progress=False)
    np.testing.assert_array_equal(train2.frames, train.frames)
    np.testing.assert_array_equal(val2.frames, val.frames)
    assert [p.name for p in (tmp_path / 'cache').iterdir()] == [entries[0].name]


def test_crafter_resized_config_gets_its_own_entry(tmp_path):
    small = crafter_cfg(tmp_path, width=64, height=64, crafter_train_seeds=1, crafter_val_seeds=1, workers=1)
    train, val = load_splits(small, progress=False)
    assert train.frames.shape == (5, 64, 64, 3)
    load_splits(crafter_cfg(tmp_path, crafter_train_seeds=1, crafter_val_seeds=1, workers=1), progress=False)
    assert len(list((tmp_path / 'cache').iterdir())) == 2


def test_batchloader_epochs_cover_every_frame_once_per_rank_set():
    frames = np.random.default_rng(0).integers(0, 255, (96, 4, 6, 3), dtype=np.uint8)
    ids = torch.from_numpy(frames.reshape(96, -1)[:, :8].astype(np.int64))
    for epoch in range(3):
        seen = []
        for rank in range(4):
            for b in BatchLoader(frames, 8, rank=rank, world_size=4, seed=7).epoch_batches(epoch):
                seen.append(b.permute(0, 2, 3, 1).reshape(len(b), -1)[:, :8].long())
        seen = torch.cat(seen)
        assert len(seen) == 96
        assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, ids.tolist()))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_batchloader_gpu_resident_and_streamed_give_the_same_batches():
    frames = np.random.default_rng(1).integers(0, 255, (1000, 72, 128, 3), dtype=np.uint8)
    kw = dict(batch_size=64, seed=5, hflip=True)
    cpu = BatchLoader(frames, **kw)
    gpu = BatchLoader(frames, device='cuda', resident=True, **kw)
    streamed = BatchLoader(frames, device='cuda', resident=False, **kw)
    assert gpu.data.is_cuda and not streamed.data.is_cuda
    for epoch in (0, 1):
        for a, b, c in zip(cpu.epoch_batches(epoch), gpu.epoch_batches(epoch), streamed.epoch_batches(epoch)):
            assert b.is_cuda and c.is_cuda and b.dtype == torch.uint8
            assert torch.equal(a, b.cpu()) and torch.equal(a, c.cpu())
    tail = list(gpu.epoch_batches(1, start_step=3))
    full = list(streamed.epoch_batches(1))
    assert all(torch.equal(x, y) for x, y in zip(tail, full[3:])) and len(tail) == len(full) - 3
