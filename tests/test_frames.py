"Slower tests of vqvae_kaggle.frames: longer Crafter episodes."
import os, tempfile

for var in ('WANDB_DIR', 'MPLCONFIGDIR', 'KAGGLEHUB_CACHE', 'KAGGLE_CONFIG_DIR'):
    os.environ.setdefault(var, tempfile.mkdtemp(prefix=f'{var.lower()}-'))

import numpy as np
import pytest
from vqvae_kaggle.frames import FrameError, render_crafter, render_crafter_episode


def test_crafter_policy_explores_the_world():
    ep = render_crafter_episode(3, frames=40, skip_first=20, frame_gap=2)
    assert ep.shape == (40, 72, 128, 3) and ep.dtype == np.uint8
    # The map area (top 7 tile rows) must change often: a stuck player would repeat frames.
    views = ep[:, :56].reshape(40, -1)
    changed = (views[1:] != views[:-1]).any(1).mean()
    assert changed > 0.5, f'only {changed:.0%} of consecutive frames differ'


def test_crafter_render_resizes_and_labels_each_world():
    fs = render_crafter([4, 9, 11], frames_per_episode=2, skip_first=0, frame_gap=1, width=64, height=36, progress=False)
    assert fs.frames.shape == (6, 36, 64, 3)
    assert fs.names == ['crafter-seed-4', 'crafter-seed-9', 'crafter-seed-11']
    assert fs.episode_counts() == {n: 2 for n in fs.names}


@pytest.mark.parametrize('kw', [dict(frames=0), dict(frames=2, frame_gap=0), dict(frames=2, skip_first=-1)])
def test_crafter_rejects_bad_counts(kw):
    with pytest.raises(FrameError):
        render_crafter_episode(0, **kw)
