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
    for k in ('consistency', 'consistency_noise', 'consistency_brightness'): del old['loss'][k]
    assert config_from_dict(old).loss.consistency == 0 and recorded_config(old).loss.consistency == 0
    assert apply_overrides(Config(), ['loss.consistency=0.5']).loss.consistency == 0.5
    with pytest.raises(ConfigError, match='loss.consistency'): apply_overrides(Config(), ['loss.consistency=-1'])
    with pytest.raises(ConfigError, match="needs quantizer.kind='ema'"): apply_overrides(Config(), ['loss.consistency=1', 'quantizer.kind=fsq'])


def test_consistency_loss_is_the_commitment_for_the_frame_itself_and_grows_with_the_perturbation(tok):
    x = to_model_input(torch.from_numpy(ts.moving_patch_frames(4)[0]).permute(0, 3, 1, 2))
    with torch.no_grad(): _, aux = tok(x)
    same = ts.consistency_loss(tok, ts.perturbed_copy(x, 0, 0, (0, 0, 0)), aux['indices'])
    torch.testing.assert_close(same, aux['commit_loss'])
    with torch.no_grad():
        far = [ts.consistency_loss(tok, ts.perturbed_copy(x, s, s, (0, 0, 0)), aux['indices']) for s in (0.05, 0.5)]
    assert same < far[0] < far[1]
