"""Slower quantizer tests: determinism, bit-for-bit resume for every option combination, a longer
collapse-versus-healthy training comparison, and a two-rank gloo run that must keep codebooks identical."""
import copy, itertools, os, tempfile
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from vqvae_kaggle.config import QuantizerConfig
from vqvae_kaggle.quantizer import EMAQuantizer, FSQ, build_quantizer

OPTION_NAMES = ('kmeans_init', 'restart_dead', 'l2_normalize', 'lookup_dim', 'fp32')
ALL_OPTIONS = dict(kmeans_init=True, restart_dead=True, l2_normalize=True, lookup_dim=4, fp32=True)


def option_combos():
    "Every subset of the EMA options, as constructor keywords (lookup_dim 4 when on)."
    for flags in itertools.product((False, True), repeat=len(OPTION_NAMES)):
        opts = dict(zip(OPTION_NAMES, flags))
        opts['lookup_dim'] = 4 if opts['lookup_dim'] else None
        yield opts


def combo_id(opts):
    return '+'.join(k for k, v in opts.items() if v) or 'textbook'


def image_batches(n, seed, channels=6, batch=4, size=4, centres=24, offset=2.0, palette_seed=0):
    "Deterministic 'images' whose pixels are noisy copies of a few colours (the palette) away from the origin."
    c = torch.randn(centres, channels, generator=torch.Generator().manual_seed(palette_seed)) + offset
    g = torch.Generator().manual_seed(seed)
    pix = c[torch.randint(centres, (n, batch, size, size), generator=g)] + 0.1 * torch.randn(n, batch, size, size, channels, generator=g)
    return list(pix.permute(0, 1, 4, 2, 3))


class TinyAE(nn.Module):
    "1x1 conv encoder -> quantizer -> 1x1 conv decoder: enough to train the quantizer's projections end to end."
    def __init__(self, quantizer, channels=6, dim=8, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.enc, self.dec, self.q = nn.Conv2d(channels, dim, 1), nn.Conv2d(dim, channels, 1), quantizer

    def forward(self, x):
        z_q, aux = self.q(self.enc(x))
        return self.dec(z_q), aux


def make_model(opts, qseed=0, dim=8, codebook_size=16):
    q = EMAQuantizer(dim, codebook_size, kmeans_iters=3, dead_threshold=0.5, seed=qseed, **opts)
    model = TinyAE(q, dim=dim)
    return model, torch.optim.Adam(model.parameters(), lr=1e-2)


def train(model, opt, batches):
    "Train-mode steps; returns the per-step losses and perplexities (python floats)."
    log = []
    for x in batches:
        x_hat, aux = model(x)
        loss = F.mse_loss(x_hat, x) + 0.25 * aux['commit_loss']
        opt.zero_grad(); loss.backward(); opt.step()
        log.append((loss.item(), aux['perplexity'].item()))
    return log


def assert_same_state(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa: assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize('opts', [{}, ALL_OPTIONS], ids=combo_id)
def test_same_seed_same_run(opts):
    batches = image_batches(12, seed=1)
    (m1, o1), (m2, o2), (m3, o3) = make_model(opts), make_model(opts), make_model(opts, qseed=1)
    log1, log2, log3 = train(m1, o1, batches), train(m2, o2, batches), train(m3, o3, batches)
    assert log1 == log2
    assert_same_state(m1, m2)
    assert not torch.equal(m1.q.embed, m3.q.embed)  # the quantizer's seed matters: the test above can fail


@pytest.mark.parametrize('opts', list(option_combos()), ids=combo_id)
def test_resume_is_bit_for_bit(opts):
    batches = image_batches(10, seed=2)
    model, opt = make_model(opts)
    uninterrupted = train(model, opt, batches)

    first, opt1 = make_model(opts)
    log = train(first, opt1, batches[:4])
    saved = copy.deepcopy((first.state_dict(), opt1.state_dict()))
    resumed, opt2 = make_model(opts)
    train(resumed, opt2, image_batches(3, seed=99))  # dirty every buffer first: loading must overwrite them all
    resumed.load_state_dict(saved[0], strict=True)
    opt2.load_state_dict(saved[1])
    log += train(resumed, opt2, batches[4:])
    assert log == uninterrupted
    assert_same_state(resumed, model)
    if opts['kmeans_init']: assert bool(resumed.q.initialised)


def test_fsq_resume_is_bit_for_bit():
    batches = image_batches(8, seed=3)
    def fsq_model():
        model = TinyAE(FSQ(8, (4, 3, 3), fp32=True))
        return model, torch.optim.Adam(model.parameters(), lr=1e-2)
    model, opt = fsq_model()
    full = train(model, opt, batches)
    first, opt1 = fsq_model()
    log = train(first, opt1, batches[:3])
    resumed, opt2 = fsq_model()
    resumed.load_state_dict(first.state_dict(), strict=True); opt2.load_state_dict(opt1.state_dict())
    log += train(resumed, opt2, batches[3:])
    assert log == full
    assert_same_state(resumed, model)
    assert model.q.histogram.sum() > 0


def eval_mse(model, batches):
    model.eval()
    with torch.no_grad(): return sum(F.mse_loss(model(x)[0], x).item() for x in batches) / len(batches)


DEFAULT_OPTIONS = dict(kmeans_init=True, restart_dead=True, l2_normalize=True, lookup_dim=16, fp32=True)  # the 'default' preset's


def test_textbook_collapses_options_stay_healthy():
    "300 Adam steps of a tiny autoencoder on 'pixels' of 256 colours, 256 codes of dim 64: the seed's failure and its fix."
    data = dict(channels=12, batch=16, size=8, centres=256, offset=1.0)
    train_b, val_b = image_batches(300, seed=4, **data), image_batches(5, seed=5, **data)
    results = {}
    for name, opts in [('textbook', {}), ('options', DEFAULT_OPTIONS)]:
        q = EMAQuantizer(64, 256, seed=0, **opts)
        model = TinyAE(q, channels=12, dim=64)
        log = train(model, torch.optim.Adam(model.parameters(), lr=3e-3), train_b)
        results[name] = dict(q.code_stats(), perplexity=sum(p for _, p in log[-20:]) / 20, val_mse=eval_mse(model, val_b))
    print(results)
    tb, op = results['textbook'], results['options']
    assert tb['ema_usage'] < 0.05 and op['ema_usage'] > 0.5
    assert tb['perplexity'] < 10 and op['perplexity'] > 100
    assert op['val_mse'] < 0.5 * tb['val_mse']


def test_build_quantizer_seed_reaches_the_codebook():
    a = build_quantizer(QuantizerConfig(), 32, seed=0)
    b = build_quantizer(QuantizerConfig(), 32, seed=0)
    c = build_quantizer(QuantizerConfig(), 32, seed=1)
    assert torch.equal(a.embed, b.embed) and not torch.equal(a.embed, c.embed)


# --- two ranks over gloo: all-reduced statistics, identical codebooks ------------------------------

def _rank_batches(rank, n=6):
    return [z * (1 + rank) + rank for z in image_batches(n, seed=10 + rank, channels=8, batch=2)]


def _dist_worker(rank, world, store, opts, out):
    dist.init_process_group('gloo', init_method=f'file://{store}', rank=rank, world_size=world)
    try:
        q = EMAQuantizer(8, 16, kmeans_iters=3, dead_threshold=4.0, seed=0, **opts)
        for z in _rank_batches(rank): q(z)
        torch.save(q.state_dict(), f'{out}/rank{rank}.pt')
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize('opts', [{}, ALL_OPTIONS], ids=combo_id)
def test_two_ranks_keep_identical_codebooks(opts, tmp_path):
    mp.spawn(_dist_worker, args=(2, str(tmp_path / 'store'), opts, str(tmp_path)), nprocs=2)
    s0, s1 = (torch.load(tmp_path / f'rank{r}.pt') for r in range(2))
    for k in s0: assert torch.equal(s0[k], s1[k]), k
    # Two ranks with batches a and b make the updates one process makes on the global batch, whose samples the
    # loader deals round-robin (a0, b0, a1, b1, ...): the EMA sums are all-reduced, and k-means and restarts draw
    # from the gathered global batch, so the random options match too.
    single = EMAQuantizer(8, 16, kmeans_iters=3, dead_threshold=4.0, seed=0, **opts)
    for a, b in zip(_rank_batches(0), _rank_batches(1)): single(torch.stack([a, b], 1).flatten(0, 1))
    torch.testing.assert_close(s0['cluster_size'], single.cluster_size, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s0['embed'], single.embed, rtol=1e-4, atol=1e-4)
    assert int(s0['restarts']) == int(single.restarts) and bool(s0['initialised']) == bool(single.initialised)
    if opts.get('restart_dead'): assert int(single.restarts) > 0  # the random draws were exercised
