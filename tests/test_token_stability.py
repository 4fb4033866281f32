"""Tokenize-time hysteresis (issue 22): margin 0 is plain `encode` bit for bit (the main job's quantizer settings: lookup
projection, L2-normalised codes), the rule never reaches across an episode start nor depends on how frames are cut into
batches, and on constructed sequences (identical frames; one moving patch over a noisy still background) it keeps the
static codes and changes the moving ones."""
from pathlib import Path
import numpy as np, pytest, torch
import torch.nn.functional as F

from vqvae_kaggle.config import Config, apply_overrides
from vqvae_kaggle.model import build_tokenizer, to_model_input
from vqvae_kaggle import token_stability as ts

TINY = ['model.channels=8,16', 'model.res_blocks=0', 'model.embed_dim=8', 'quantizer.codebook_size=32', 'quantizer.lookup_dim=4',
        'quantizer.l2_normalize=true', 'data.width=32', 'data.height=16']


pytestmark = pytest.mark.usefixtures('one_thread')   # conftest: these tests compare bits


def tiny_tokenizer(*extra):
    torch.manual_seed(0)
    return build_tokenizer(apply_overrides(Config(), TINY + list(extra))).eval()


@pytest.fixture(scope='module')
def tok():
    "An untrained tiny tokenizer with the main job's quantizer settings (its random codebook still spreads codes over cells)."
    return tiny_tokenizer()


@pytest.fixture(scope='module', params=['l2+lookup', 'raw'])
def any_tok(request):
    "Both lookup paths: projected and L2-normalised rows, and raw latents against a raw codebook."
    return tiny_tokenizer() if request.param == 'l2+lookup' else tiny_tokenizer('quantizer.l2_normalize=false', 'quantizer.lookup_dim=null')


def plain_encode(model, frames):
    return model.encode(to_model_input(torch.from_numpy(frames).permute(0, 3, 1, 2))).numpy()


def test_margin_zero_is_plain_encode_bit_for_bit(any_tok):
    frames = np.random.default_rng(0).integers(0, 256, (7, 16, 32, 3), dtype=np.uint8)
    plain = plain_encode(any_tok, frames)
    first = np.array([1, 0, 0, 1, 0, 0, 0], bool)
    for bs in (64, 3):
        assert np.array_equal(ts.stable_encode(any_tok, frames, 0.0, first, batch_size=bs), plain)


def test_margin_zero_on_the_main_tokenizer():
    "The real checkpoint (if this clone has it) on real-looking frames: still bit for bit."
    if not Path('runs/cpu').exists(): pytest.skip('no runs/cpu checkpoint here')
    from vqvae_kaggle.checkpoint import load_tokenizer
    model = load_tokenizer('runs/cpu')[0]
    frames = ts.moving_patch_frames(4, 72, 128, patch=16)[0]
    assert np.array_equal(ts.stable_encode(model, frames, 0.0), plain_encode(model, frames))


def test_episode_starts_and_chunks(tok):
    frames, _ = ts.moving_patch_frames(8)
    first = np.zeros(8, bool); first[[0, 5]] = True
    whole = ts.stable_encode(tok, frames, 0.5, first)
    # a new episode starts from plain codes, whatever came before it
    assert np.array_equal(whole[5], plain_encode(tok, frames[5:6])[0])
    # in chunks, with the previous row's codes carried over: the same codes as in one piece, whatever the batch size
    parts = [ts.stable_encode(tok, frames[:3], 0.5, first[:3], batch_size=2)]
    parts.append(ts.stable_encode(tok, frames[3:], 0.5, first[3:], prev=parts[0][-1], batch_size=4))
    assert np.array_equal(np.concatenate(parts), whole)


def test_identical_frames_keep_their_codes(any_tok):
    frame = np.random.default_rng(1).integers(0, 256, (1, 16, 32, 3), dtype=np.uint8)
    for m in (0.0, 0.3):
        codes = ts.stable_encode(any_tok, np.repeat(frame, 5, 0), m)
        assert (codes == codes[0]).all()


def test_moving_patch_static_cells_stay_moving_cells_change(tok):
    frames, moved = ts.moving_patch_frames(10, noise=4)
    plain, stable = ts.stable_encode(tok, frames, 0.0), ts.stable_encode(tok, frames, 0.2)
    (h, w), (H, W) = plain.shape[1:], frames.shape[1:3]
    cell_moved = moved.reshape(len(moved), h, H // h, w, W // w).any((2, 4))
    flips = lambda c, mask: (c[1:] != c[:-1])[mask].mean()
    assert flips(plain, ~cell_moved) > 0.02                      # the noise does flip some still cells when plain
    assert flips(stable, ~cell_moved) < 0.5 * flips(plain, ~cell_moved)
    assert flips(stable, cell_moved) > 0.3                       # where the patch went, codes still change


def test_rule_on_a_constructed_codebook():
    g = torch.Generator().manual_seed(0)
    book = F.normalize(torch.randn(8, 4, generator=g), dim=1)
    mid = F.normalize(book[0] + book[1], dim=0)
    wobble = torch.stack([F.normalize(mid + s * 0.02 * (book[0] - book[1]), dim=0) for s in (1, -1, 1, -1)])
    jump = torch.stack([book[2], book[2], book[5], book[5]])
    rows = torch.stack([wobble, jump], 1)[:, None]
    assert ts.hysteresis_codes(rows, book, 0.0)[:, 0, 0].tolist() == [0, 1, 0, 1]
    stable = ts.hysteresis_codes(rows, book, 0.2)
    assert stable[:, 0, 0].tolist() == [0, 0, 0, 0] and stable[:, 0, 1].tolist() == [2, 2, 5, 5]
    with pytest.raises(ValueError, match='margin'): ts.hysteresis_codes(rows, book, -1.0)


def test_fsq_is_refused():
    torch.manual_seed(0)
    model = build_tokenizer(apply_overrides(Config(), TINY + ['quantizer.kind=fsq']))
    with pytest.raises(ValueError, match='EMAQuantizer'): ts.stable_encode(model, np.zeros((2, 16, 32, 3), np.uint8), 0.1)


def test_stability_meta():
    assert ts.stability_meta(0) == dict(mechanism='none', margin=0.0)
    assert ts.stability_meta(0.2)['mechanism'] == 'hysteresis'


def test_default_margin_only_where_it_was_measured(tok):
    "The default margin is in squared distances between L2-normalised vectors: raw codebooks and FSQ get plain encoding."
    assert ts.default_margin(tok.quantizer) == ts.HYSTERESIS_MARGIN > 0
    assert ts.default_margin(tiny_tokenizer('quantizer.l2_normalize=false').quantizer) == 0.0
    assert ts.default_margin(tiny_tokenizer('quantizer.kind=fsq').quantizer) == 0.0


def test_consistency_is_off_by_default_and_old_configs_still_parse():
    "Training-time consistency (loss.consistency): a config written before the field existed parses, with the term off."
    from vqvae_kaggle.config import config_to_dict, config_from_dict, recorded_config, ConfigError
    old = config_to_dict(Config())
    for k in ('consistency', 'consistency_noise', 'consistency_brightness', 'consistency_margin'): del old['loss'][k]
    assert config_from_dict(old).loss.consistency == 0 and recorded_config(old).loss.consistency == 0
    assert apply_overrides(Config(), ['loss.consistency=0.5']).loss.consistency == 0.5
    with pytest.raises(ConfigError, match='loss.consistency'): apply_overrides(Config(), ['loss.consistency=-1'])
    with pytest.raises(ConfigError, match="needs quantizer.kind='ema'"): apply_overrides(Config(), ['loss.consistency=1', 'quantizer.kind=fsq'])


def test_consistency_loss_is_zero_for_the_frame_itself_and_grows_with_the_perturbation(tok):
    x = to_model_input(torch.from_numpy(ts.moving_patch_frames(4)[0]).permute(0, 3, 1, 2))
    with torch.no_grad():
        _, aux = tok(x)
        loss = lambda s, m: ts.consistency_loss(tok, ts.perturbed_copy(x, s, s, (0, 0, 0)), aux['indices'], m).item()
        assert loss(0, 0.0) == 0.0                       # the frame's own code is its nearest
        assert 0 < loss(0, 0.05) <= 0.05                 # a margin: rows near a boundary pay, at most the margin
        assert loss(0, 0.05) < loss(0.05, 0.05) < loss(0.5, 0.05)


# -- training-time consistency on constructed sequences ------------------------------------------------------------
TRAIN_TINY = ['model.channels=8,16', 'model.res_blocks=1', 'model.embed_dim=8', 'quantizer.codebook_size=32', 'quantizer.lookup_dim=4',
              'data.width=32', 'data.height=16', 'optim.batch_size=8', 'optim.warmup_steps=2', 'run.wandb=disabled',
              'run.budget_minutes=none', 'run.val_frames=8', 'run.sample_frames=2', 'run.log_every=10', 'run.threads=1', 'run.max_steps=100']


def moving_patch_set(episodes, seed):
    from vqvae_kaggle.frames import FrameSet
    frames = np.concatenate([ts.moving_patch_frames(8, noise=4, seed=seed + i)[0] for i in range(episodes)])
    return FrameSet(frames, np.repeat(np.arange(episodes), 8), [f'ep{i}' for i in range(episodes)])


@pytest.fixture(scope='module')
def trained_pair(tmp_path_factory):
    "The same tiny tokenizer trained 100 steps on moving-patch episodes, without and with the consistency term (weight 1)."
    from vqvae_kaggle.presets import get_preset
    from vqvae_kaggle.train import Trainer
    splits = moving_patch_set(8, 0), moving_patch_set(2, 100)
    out = {}
    for weight in (0, 1):
        t = Trainer(apply_overrides(get_preset('cpu'), TRAIN_TINY + [f'loss.consistency={weight}']),
                    out_dir=tmp_path_factory.mktemp(f'consistency-{weight}'), splits=splits, progress=False)
        out[weight] = (t.model.eval(), t.fit()['val'])
    return out


def flip_rates(model, frames, moved=None):
    "(share of still cells whose code changed between consecutive frames, the same on cells the patch moved over)."
    codes = ts.stable_encode(model, frames, 0.0)
    change = codes[1:] != codes[:-1]
    if moved is None: return change.mean(), None
    (h, w), (H, W) = codes.shape[1:], frames.shape[1:3]
    cell_moved = moved.reshape(len(moved), h, H // h, w, W // w).any((2, 4))
    return change[~cell_moved].mean(), change[cell_moved].mean()


def test_consistency_keeps_static_codes_and_changes_moving_ones(trained_pair):
    (plain, plain_val), (stable, stable_val) = trained_pair[0], trained_pair[1]
    # identical frames: the same codes, with or without the term
    still = np.repeat(ts.moving_patch_frames(2, noise=0, seed=300)[0][:1], 5, 0)
    for model in (plain, stable): assert flip_rates(model, still)[0] == 0
    # identical frames under fresh pixel noise (+-4 levels): far fewer flips
    rng = np.random.default_rng(0)
    noisy = np.clip(still[:1].astype(int) + rng.integers(-4, 5, (8, *still.shape[1:])), 0, 255).astype(np.uint8)
    assert flip_rates(plain, noisy)[0] > 0.1                                     # without it, noise alone flips many cells
    assert flip_rates(stable, noisy)[0] < 0.5 * flip_rates(plain, noisy)[0]
    # one moving patch over a noisy still background (held-out sequences): still cells flip less, moved cells still change
    for seed in (200, 201, 202):
        frames, moved = ts.moving_patch_frames(10, noise=4, seed=seed)
        (p_still, p_moved), (s_still, s_moved) = flip_rates(plain, frames, moved), flip_rates(stable, frames, moved)
        assert s_still < 0.8 * p_still and s_moved > 0.9 and p_moved > 0.9
    # and the codebook stays in use (the term does not buy stability by using fewer codes)
    assert stable_val['usage'] > 0.9 * plain_val['usage']
