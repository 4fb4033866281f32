"Slower and integration tests of vqvae_kaggle.metrics (the notebook nbs/06_metrics.ipynb has the quick ones)."
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vqvae_kaggle.metrics import (PSNR_CAP, PROBE_NAMES, MetricAverager, artifact_probe, code_usage,
                                  flat_region_artifact_score, gaussian_window, probe_frames, psnr,
                                  reconstruction_metrics, spectral_peaks, ssim, SSIM_C1, SSIM_C2,
                                  DETAIL_FLOOR, GMSD_C, LUMA_WEIGHTS, SHARP_CUTOFF, gmsd, hf_energy, hf_ratio,
                                  lap_var_ratio, luminance)


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
        avg.update({k: m[k] for k in ('mse', 'psnr', 'ssim', 'input_std', 'recon_std', 'hf_ratio', 'gmsd', 'lap_var_ratio')},
                   n=hi - lo)
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



# -- sharpness ------------------------------------------------------------------------------------------------------
def gaussian_blur(x, sigma):
    "Separable Gaussian blur of (B, C, H, W) with reflected borders."
    r = max(1, math.ceil(3 * sigma))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=x.dtype) ** 2 / (2 * sigma ** 2)); k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode='reflect'), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode='reflect'), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def block_texture(n, h=72, w=128, seed=0):
    "Minecraft-like: 8x8 blocks of five materials, 2x2 texels of +-20% brightness, a flat sky strip on top."
    g = torch.Generator().manual_seed(seed)
    materials = torch.tensor([[0.36, 0.60, 0.20], [0.55, 0.38, 0.24], [0.50, 0.50, 0.50], [0.20, 0.45, 0.15], [0.80, 0.75, 0.50]])
    ids = torch.randint(0, len(materials), (n, h // 8 + 1, w // 8 + 1), generator=g)
    base = materials[ids].permute(0, 3, 1, 2).repeat_interleave(8, 2).repeat_interleave(8, 3)[..., :h, :w]
    shade = torch.rand(n, 1, h // 2 + 1, w // 2 + 1, generator=g).repeat_interleave(2, 2).repeat_interleave(2, 3)[..., :h, :w]
    x = base * (0.8 + 0.4 * shade)
    x[:, :, :h // 4] = torch.tensor([0.53, 0.81, 0.92]).view(1, 3, 1, 1)
    return x.clamp(0, 1)


def checker_texture(n, h=72, w=128, seed=0):
    "A 3-pixel checkerboard whose two colours change from image to image."
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
    board = ((yy // 3 + xx // 3) % 2).float()
    a, b = 0.2 + 0.3 * torch.rand(n, 3, 1, 1, generator=g), 0.5 + 0.3 * torch.rand(n, 3, 1, 1, generator=g)
    return a + (b - a) * board


def noise_texture(n, h=72, w=128, seed=0):
    "Uniform noise around mid-grey, per pixel and channel: all detail, no structure."
    return 0.25 + 0.5 * torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


TEXTURES = {'blocks': block_texture, 'checker': checker_texture, 'noise': noise_texture}


@pytest.mark.parametrize('name', list(TEXTURES))
def test_blur_scores_worse_on_all_three_the_more_the_worse(name):
    x = TEXTURES[name](4)
    same = reconstruction_metrics(x, x)
    assert (same['hf_ratio'], same['gmsd'], same['lap_var_ratio']) == (1.0, 0.0, 1.0)
    mild, strong = (reconstruction_metrics(x, gaussian_blur(x, s)) for s in (0.7, 1.5))
    for m in (mild, strong): assert m['hf_ratio'] < 1 and m['gmsd'] > 0 and m['lap_var_ratio'] < 1, (name, m)
    assert strong['hf_ratio'] < mild['hf_ratio'] and strong['lap_var_ratio'] < mild['lap_var_ratio'], (name, mild, strong)
    assert strong['gmsd'] > mild['gmsd'], (name, mild, strong)


@pytest.mark.parametrize('name', list(TEXTURES))
def test_noise_is_punished_by_gmsd_and_rewarded_by_the_energy_ratios(name):
    "The documented behaviour: HF and Laplacian ratios count noise as detail (> 1); GMSD counts it as damage."
    x = TEXTURES[name](4, seed=1)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    faint, loud = (reconstruction_metrics(x, (x + a * noise).clamp(0, 1)) for a in (0.02, 0.08))
    assert 0 < faint['gmsd'] < loud['gmsd'], (name, faint, loud)
    assert loud['hf_ratio'] > 1 and loud['lap_var_ratio'] > 1, (name, loud)


def test_noise_that_restores_hf_energy_does_not_restore_gmsd():
    "A blurred copy 'sharpened' with noise until its HF ratio is back at 1: GMSD says it is worse than the blur alone."
    x = block_texture(4, seed=3)
    soft = gaussian_blur(x, 1.0)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    faked = next(y for y in ((soft + a * noise).clamp(0, 1) for a in (0.05, 0.1, 0.15, 0.2)) if hf_ratio(x, y) >= 1)
    assert gmsd(x, faked) > gmsd(x, soft) > 0


def gmsd_numpy(a, b):
    "GMSD of two (3, H, W) float64 RGB arrays by the definition: BT.601 luminance, Prewitt by explicit 3x3 windows, valid, std."
    from numpy.lib.stride_tricks import sliding_window_view
    hx = np.array([[1, 0, -1]] * 3, np.float64) / 3
    def grad(img):
        y = np.tensordot(np.array(LUMA_WEIGHTS), img, axes=1)
        win = sliding_window_view(y, (3, 3))
        return np.hypot(np.einsum('ijkl,kl->ij', win, hx), np.einsum('ijkl,kl->ij', win, hx.T))
    mr, md = grad(a), grad(b)
    return float(((2 * mr * md + GMSD_C) / (mr ** 2 + md ** 2 + GMSD_C)).std())


def test_gmsd_matches_numpy_definition():
    x = block_texture(3, seed=5)
    y = (gaussian_blur(x, 0.8) + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(6))).clamp(0, 1)
    got = gmsd(x, y, per_image=True)
    for i in range(len(x)):
        assert got[i].item() == pytest.approx(gmsd_numpy(x[i].double().numpy(), y[i].double().numpy()), rel=1e-4)
    assert GMSD_C == pytest.approx(0.0026, abs=2e-5)   # the paper's c for [0, 1] images


def test_hf_energy_of_white_noise_is_its_variance_times_the_band_share():
    "Parseval and the window normalisation: E[hf_energy] of white noise = sigma^2 x the share of frequencies above the cutoff."
    h, w, sigma = 72, 128, 0.05
    x = (0.5 + sigma * torch.randn(16, 1, h, w, generator=torch.Generator().manual_seed(7))).clamp(0, 1)
    fy, fx = torch.fft.fftfreq(h)[:, None], torch.fft.fftfreq(w)[None, :]
    share = ((fy ** 2 + fx ** 2) > SHARP_CUTOFF ** 2).double().mean().item()
    assert 0.9 < share < 0.97
    assert hf_energy(x).mean().item() == pytest.approx(sigma ** 2 * share, rel=0.03)


def test_flat_frames_and_uint8():
    sky = torch.tensor([0.53, 0.81, 0.92]).view(1, 3, 1, 1).expand(2, 3, 36, 64).contiguous()
    m = reconstruction_metrics(sky, torch.full_like(sky, 0.4))
    assert (m['hf_ratio'], m['gmsd'], m['lap_var_ratio']) == (1.0, 0.0, 1.0)   # no detail in either: nothing lost
    speckled = (sky + 0.05 * torch.randn(sky.shape, generator=torch.Generator().manual_seed(8))).clamp(0, 1)
    assert hf_ratio(sky, speckled) > 10 and gmsd(sky, speckled) > 0.1
    x = (block_texture(2, seed=9) * 255).round().to(torch.uint8)
    y = (gaussian_blur(x.float() / 255, 1.0) * 255).round().to(torch.uint8)
    for fn in (hf_ratio, gmsd, lap_var_ratio): assert fn(x, y) == pytest.approx(fn(x.float() / 255, y.float() / 255), rel=1e-5)


def test_sharpness_errors_name_the_problem():
    x = block_texture(2)
    with pytest.raises(ValueError, match=r'x and x_hat differ in shape: \(2, 3, 72, 128\) vs \(1, 3, 72, 128\)'): gmsd(x, x[:1])
    with pytest.raises(ValueError, match=r'x_hat: expected values in \[0, 1\]'): hf_ratio(x, x * 2 - 1)
    with pytest.raises(ValueError, match='at least 3x3 pixels, got 2x8'): lap_var_ratio(x[..., :2, :8], x[..., :2, :8])
    with pytest.raises(ValueError, match='at least 3x3 pixels, got 72x2'):   # SSIM and the tiles would refuse first: skipped
        reconstruction_metrics(x[..., :2], x[..., :2], with_ssim=False, with_artifact=False)
    with pytest.raises(ValueError, match='1 or 3 channels'): luminance(torch.zeros(1, 4, 8, 8))
    assert reconstruction_metrics(x[..., :2], x[..., :2], with_ssim=False, with_artifact=False, with_sharpness=False)['mse'] == 0
