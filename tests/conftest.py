"""Shared fixtures: every tool that writes to a home folder is pointed at a temporary one, wandb is offline."""
import os, numpy as np, pytest

@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    for var, sub in [('WANDB_DIR', 'wandb'), ('WANDB_CACHE_DIR', 'wandb-cache'), ('WANDB_CONFIG_DIR', 'wandb-config'),
                     ('MPLCONFIGDIR', 'mpl'), ('KAGGLEHUB_CACHE', 'kagglehub'), ('KAGGLE_CONFIG_DIR', 'kaggle')]:
        (tmp_path / 'home' / sub).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(var, str(tmp_path / 'home' / sub))
    monkeypatch.setenv('WANDB_SILENT', 'true')
    monkeypatch.delenv('WANDB_API_KEY', raising=False)
    monkeypatch.delenv('WANDB_MODE', raising=False)
    monkeypatch.setenv('MPLBACKEND', 'Agg')

def synthetic_frames(n, height, width, seed=0, episodes=4):
    "Blocky, game-like uint8 frames: flat tiles of a few colours, so a tokenizer has something to learn."
    from vqvae_kaggle.frames import FrameSet
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, size=(12, 3), dtype=np.uint8)
    tiles = rng.integers(0, len(palette), size=(n, height // 8 + 1, width // 8 + 1))
    frames = palette[tiles].repeat(8, 1).repeat(8, 2)[:, :height, :width]
    return FrameSet(np.ascontiguousarray(frames), np.arange(n) % episodes, [f'ep{i}' for i in range(episodes)])

@pytest.fixture
def make_frames(): return synthetic_frames
