"""Shared fixtures: every tool that writes to a home folder is pointed at a temporary one, wandb is offline."""
import math as _math, os, numpy as np, pytest
import vqvae_kaggle.train as train_mod

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


# -- a deadline at a chosen step ----------------------------------------------------------------------------------
class StepDeadline(train_mod.SessionClock):
    """The trainer's own clock, except that its deadline arrives after `limit` training steps of the session instead of
    after so many seconds: the deadline path of `Trainer.fit` (should_stop -> 'deadline' -> checkpoint) at a
    deterministic step."""
    limit = None

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.steps = 0

    def record_step(self, seconds):
        super().record_step(seconds)
        self.steps += 1

    def remaining(self):
        return -1.0 if self.limit is not None and self.steps >= self.limit else _math.inf


@pytest.fixture
def step_deadline(monkeypatch):
    monkeypatch.setattr(train_mod, 'SessionClock', StepDeadline)
    monkeypatch.setattr(StepDeadline, 'limit', None)
    return StepDeadline


@pytest.fixture
def one_thread():
    "One CPU thread: float sums (and so, rarely, codes) may differ with the thread count; for the tests that compare bits."
    import torch
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
