"Slower and integration tests of vqvae_kaggle.metrics (the notebook nbs/06_metrics.ipynb has the quick ones)."
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vqvae_kaggle.metrics import (PSNR_CAP, PROBE_NAMES, MetricAverager, artifact_probe, code_usage,
                                  flat_region_artifact_score, gaussian_window, probe_frames, psnr,
                                  reconstruction_metrics, spectral_peaks, ssim, SSIM_C1, SSIM_C2)


def smooth_batch(n, h=72, w=128, seed=0):
    "Smooth random images with a flat strip on top, in [0, 1]."
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, 3, h // 8, w // 8, generator=g), size=(h, w), mode='bilinear', align_corners=False)
    x[:, :, :16] = torch.tensor([0.53, 0.81, 0.92]).view(1, 3, 1, 1)
    return x


def ssim_numpy(a, b):
    "SSIM of two (C, H, W) float64 arrays by explicit valid-window sums (independent of torch's conv2d)."
    from numpy.lib.stride_tricks import sliding_window_view
    w = gaussian_window().numpy()
    k = w.shape[0]
    out = []
    for ca, cb in zip(a, b):
        pa, pb = sliding_window_view(ca, (k, k)), sliding_window_view(cb, (k, k))
        ma, mb = np.einsum('ijkl,kl->ij', pa, w), np.einsum('ijkl,kl->ij', pb, w)
        va = np.einsum('ijkl,kl->ij', pa * pa, w) - ma ** 2
        vb = np.einsum('ijkl,kl->ij', pb * pb, w) - mb ** 2
        cab = np.einsum('ijkl,kl->ij', pa * pb, w) - ma * mb
        out.append(((2 * ma * mb + SSIM_C1) * (2 * cab + SSIM_C2)) / ((ma ** 2 + mb ** 2 + SSIM_C1) * (va + vb + SSIM_C2)))
    return float(np.mean(out))


def test_ssim_matches_numpy_on_full_frames():
    g = torch.Generator().manual_seed(3)
    x = smooth_batch(3)
    for sigma in (0.02, 0.1):
        y = (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1)
        got = ssim(x, y, per_image=True)
        for i in range(len(x)):
            assert got[i].item() == pytest.approx(ssim_numpy(x[i].double().numpy(), y[i].double().numpy()), abs=1e-5)


def test_ssim_window_is_normalised_gaussian():
    w = gaussian_window()
    assert w.shape == (11, 11) and w.sum().item() == pytest.approx(1.0)
    assert w[5, 5] == w.max() and w[0, 5].item() == pytest.approx(w[5, 5].item() * math.exp(-25 / (2 * 1.5 ** 2)))


def test_ssim_symmetric_and_contrast_sensitive():
    g = torch.Generator().manual_seed(4)
    x = smooth_batch(2)
    y = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert ssim(x, y) == pytest.approx(ssim(y, x), abs=1e-6)
    flattened = 0.5 + 0.2 * (x - 0.5)  # same structure, less contrast
    assert ssim(x, flattened) < 0.99


def test_psnr_accepts_uint8_and_matches_float():
    g = torch.Generator().manual_seed(5)
    a = torch.randint(0, 256, (2, 3, 16, 16), generator=g, dtype=torch.uint8)
    b = torch.randint(0, 256, (2, 3, 16, 16), generator=g, dtype=torch.uint8)
    assert psnr(a, b) == pytest.approx(psnr(a.float() / 255, b.float() / 255))
    assert psnr(a, a) == PSNR_CAP


def test_psnr_per_image_cap_keeps_mean_finite():
    x = smooth_batch(2)
    y = x.clone(); y[1] = (y[1] + 0.1).clamp(0, 1)
    per = psnr(x, y, per_image=True)
    assert per[0].item() == PSNR_CAP and per[1].item() < 30
    assert psnr(x, y) == pytest.approx(per.mean().item())


def test_averaging_over_batches_equals_whole_batch():
    "Per-image means weighted by batch size give the whole-batch value, whatever the split."
    g = torch.Generator().manual_seed(6)
    x = smooth_batch(7)
    y = (x + 0.03 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    whole = reconstruction_metrics(x, y, with_artifact=False)
    avg = MetricAverager()
    for lo, hi in ((0, 4), (4, 6), (6, 7)):
        m = reconstruction_metrics(x[lo:hi], y[lo:hi], with_artifact=False)
        avg.update({k: m[k] for k in ('mse', 'psnr', 'ssim', 'input_std', 'recon_std')}, n=hi - lo)
    for k, v in avg.compute().items(): assert v == pytest.approx(whole[k], rel=1e-5), k


def test_metrics_are_deterministic():
    x = smooth_batch(3)
    y = (x + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(7))).clamp(0, 1)
    assert reconstruction_metrics(x, y) == reconstruction_metrics(x, y)
    recon = lambda t: F.interpolate(F.avg_pool2d(t, 4), scale_factor=4, mode='nearest')
    a, b = artifact_probe(recon, 128, 72), artifact_probe(recon, 128, 72)
    assert a == b


class TransposedDecoder(nn.Module):
    "The seed's upsampling: stride-2 average-pool 'encoder', ConvTranspose 4x4 / stride 2 'decoder' (random, seeded)."
    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.up = nn.ConvTranspose2d(3, 3, 4, stride=2, padding=1)
    def forward(self, x): return (x + 0.05 * torch.tanh(self.up(F.avg_pool2d(x, 2)))).clamp(0, 1)


class NearestDecoder(nn.Module):
    "Our upsampling: nearest-neighbour x2 then a 3x3 convolution (replicate padding), random, seeded."
    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 3, 3, padding=1, padding_mode='replicate')
    def forward(self, x):
        return (x + 0.05 * torch.tanh(self.conv(F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode='nearest')))).clamp(0, 1)


def test_probe_separates_transposed_from_nearest_upsampling():
    "A random transposed convolution paints a period-2 pattern on uniform frames; nearest + conv3x3 cannot."
    with torch.no_grad():
        t = artifact_probe(TransposedDecoder(), 128, 72)
        n = artifact_probe(NearestDecoder(), 128, 72)
    uniform = ['sky', 'grass', 'water', 'sand', 'grey']
    for name in uniform:
        assert t['frames'][name]['peak_period'] == 2.0, (name, t['frames'][name])
        assert t['frames'][name]['grid_energy_2'] > 0.8, (name, t['frames'][name])
        assert t['frames'][name]['artifact'] > 0.5
        # nearest + conv3x3 maps a uniform frame to a uniform frame: a colour shift at most, no pattern
        assert n['frames'][name]['peak_period'] is None and n['frames'][name]['artifact'] < 1e-3, (name, n['frames'][name])
    assert t['probe_grid_energy'] > n['probe_grid_energy'] + 0.5
    assert t['probe_artifact'] > n['probe_artifact']


def test_probe_frames_shapes_and_flatness():
    for w, h in ((64, 64), (64, 36), (128, 72)):
        p = probe_frames(w, h)
        assert p.shape == (len(PROBE_NAMES), 3, h, w) and p.dtype == torch.float32
        assert flat_region_artifact_score(p, p)['flat_patches'] == len(PROBE_NAMES) * (h // 8) * (w // 8)
    with pytest.raises(ValueError, match='at least 2x2'): probe_frames(1, 10)


def test_probe_rejects_bad_reconstruct():
    with pytest.raises(ValueError, match='reconstruct must return'): artifact_probe(lambda x: x[:, :, ::2], 32, 16)
    with pytest.raises(ValueError, match=r'\[0, 1\]'): artifact_probe(lambda x: x * 2 - 1, 32, 16)


def test_spectral_peak_at_each_grid_period():
    h, w = 72, 128
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
    for p in (2, 4, 8, 16):
        stripes = (0.02 * torch.cos(2 * math.pi * xx / p)).expand(3, h, w)
        s = spectral_peaks(stripes)
        assert s['peak_period'] == pytest.approx(p) and s['peak_ratio'] == pytest.approx(1.0)
        assert s['grid_energy'] == pytest.approx(1.0)


def test_artifact_score_grows_with_pattern_amplitude():
    sky = probe_frames(128, 72)[:1]
    yy, xx = torch.meshgrid(torch.arange(72), torch.arange(128), indexing='ij')
    checker = ((xx + yy) % 2 * 2 - 1).float()
    scores = [flat_region_artifact_score(sky, (sky + a / 255 * checker).clamp(0, 1))['artifact'] for a in (1, 2, 4, 8)]
    assert scores == sorted(scores) and scores[0] > 0
    assert scores[3] / scores[0] == pytest.approx(8, rel=0.05)  # linear in the amplitude


def test_code_usage_on_full_codebook():
    idx = torch.randperm(1024, generator=torch.Generator().manual_seed(0))
    u = code_usage(idx.view(32, 32), 1024)
    assert u['usage'] == 1.0 and u['dead_codes'] == 0 and u['perplexity'] == pytest.approx(1024)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_metrics_on_cuda_match_cpu():
    x = smooth_batch(3)
    y = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(8))).clamp(0, 1)
    cpu = reconstruction_metrics(x, y)
    gpu = reconstruction_metrics(x.cuda(), y.cuda())
    for k in cpu: assert gpu[k] == pytest.approx(cpu[k], rel=1e-4, abs=1e-5), k
    assert code_usage(torch.arange(10).cuda(), 16)['used_codes'] == 10
    assert artifact_probe(lambda t: t, 64, 36, device='cuda')['probe_psnr'] == PSNR_CAP
