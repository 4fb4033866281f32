"Slower and integration tests of vqvae_kaggle.viz (the notebook nbs/09_viz.ipynb has the quick ones)."
import json, os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture(autouse=True)
def headless(tmp_path, monkeypatch):
    "No display, matplotlib config in a temporary folder."
    monkeypatch.setenv('MPLCONFIGDIR', str(tmp_path / 'mpl'))
    monkeypatch.setenv('MPLBACKEND', 'Agg')
    monkeypatch.delenv('DISPLAY', raising=False)


from vqvae_kaggle import viz
from vqvae_kaggle.viz import (ZOOM_CROP, ZOOM_MARK, browse_grids, compare_grid, figure_to_array, plot_metrics, read_metrics,
                              sample_grid, sample_grids, save_figure, save_grid, show_image, textured_crop, to_uint8_images,
                              zoom_geometry)


def batch(n=3, h=72, w=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g)


def test_grid_layout_pixel_exact():
    "Every tile lands where the layout says, scaled by nearest neighbour, diff amplified and clipped."
    x = batch(5, 8, 12)
    y = (x + 0.1).clamp(0, 1)
    xs, ys = to_uint8_images(x), to_uint8_images(y)
    grid = sample_grid(x, y, nrow=3, scale=3, diff_gain=4, sep=1)
    th, tw = 8 * 3, 12 * 3
    for i in range(5):
        block, col = divmod(i, 3)
        top = 1 + block * (1 + 3 * (th + 1) + 2)  # a block is 3 rows of tiles in a 1-pixel frame; blocks 2 pixels apart
        left = 1 + col * (tw + 1)
        tile = lambda r: grid[top + r * (th + 1): top + r * (th + 1) + th, left: left + tw]
        np.testing.assert_array_equal(tile(0), xs[i].repeat(3, 0).repeat(3, 1))
        np.testing.assert_array_equal(tile(1), ys[i].repeat(3, 0).repeat(3, 1))
        d = np.clip(np.abs(xs[i].astype(int) - ys[i].astype(int)) * 4, 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(tile(2), d.repeat(3, 0).repeat(3, 1))
    # the short last block leaves background where its third tile would be
    assert grid.shape == (2 * (1 + 3 * (th + 1)) + 2, 1 + 3 * (tw + 1), 3)
    np.testing.assert_array_equal(grid[1 + 3 * (th + 1): 3 + 3 * (th + 1)], 255)    # the band between blocks
    np.testing.assert_array_equal(grid[3 + 3 * (th + 1):, 1 + 2 * (tw + 1):], 255)


def test_grid_accepts_every_input_form():
    x = batch(2, 16, 16)
    u8 = (x * 255).round().to(torch.uint8)
    ref = sample_grid(x, x)
    np.testing.assert_array_equal(sample_grid(u8, u8), ref)
    np.testing.assert_array_equal(sample_grid(u8.permute(0, 2, 3, 1).numpy(), u8.permute(0, 2, 3, 1).numpy()), ref)
    np.testing.assert_array_equal(sample_grid(x.double(), x.double()), ref)
    assert sample_grid(x.bfloat16(), x.half()).shape == ref.shape   # what autocast decoders return
    with pytest.raises(ValueError, match='scale'): sample_grid(x, x, scale=0)
    with pytest.raises(TypeError, match='x_hat'): sample_grid(x, [1, 2])
    with pytest.raises(ValueError, match=r'x: float images must be in \[0, 1\]'): sample_grid(x * 2 - 1, x)


def test_save_grid_is_atomic_when_the_write_fails(tmp_path, monkeypatch):
    "A write that dies half-way leaves the previous file intact and no temporary file."
    path = tmp_path / 'samples' / 'val_epoch0001.png'
    old = sample_grid(batch(1, 16, 16))
    save_grid(old, path)
    def broken_save(self, fp, *a, **k):
        Path(fp).write_bytes(b'\x89PNG half')
        raise OSError('disk full')
    monkeypatch.setattr(Image.Image, 'save', broken_save)
    with pytest.raises(OSError, match='disk full'): save_grid(sample_grid(batch(2, 16, 16)), path)
    monkeypatch.undo()
    assert os.listdir(path.parent) == ['val_epoch0001.png']
    np.testing.assert_array_equal(np.asarray(Image.open(path)), old)


def test_show_image_headless_returns_image(tmp_path):
    img = sample_grid(batch(2, 16, 16))
    for thing in (img, torch.from_numpy(img).permute(2, 0, 1), save_grid(img, tmp_path / 'a.png'), Image.fromarray(img)):
        pil = show_image(thing)
        assert pil.size == (img.shape[1], img.shape[0])
    with pytest.raises(FileNotFoundError, match='nope.png'): show_image(tmp_path / 'nope.png')
    fig = plot_metrics([dict(step=1, split='train', loss=1.0), dict(step=2, split='train', loss=0.5)])
    assert show_image(fig).size == (figure_to_array(fig).shape[1], figure_to_array(fig).shape[0])


def test_compare_grid_labels_and_columns():
    x = batch(2, 24, 40)
    out = compare_grid({'a': x, 'b': 1 - x}, x, scale=2, sep=2)
    band = out.shape[0] - (2 + 2 * (48 + 2))
    assert out.dtype == np.uint8 and out.shape[1] == 2 + 3 * (80 + 2) and band > 0
    body = out[band:]
    np.testing.assert_array_equal(body[2:50, 2 + 2 * 82: 2 + 2 * 82 + 80], to_uint8_images(1 - x)[0].repeat(2, 0).repeat(2, 1))
    for j in range(3):  # some dark label pixels above each column
        assert (out[:band, 2 + j * 82: 2 + j * 82 + 80] < 128).any()


def trainer_like_log(path, epochs=40, steps=25, seed=0):
    "A log shaped like the trainer's: many train steps, one val record per epoch, some keys only some of the time."
    rng = np.random.default_rng(seed)
    with open(path, 'w') as f:
        step = 0
        for e in range(epochs):
            for _ in range(steps):
                step += 1
                rec = dict(step=step, epoch=e, split='train', loss=float(1 / step + rng.random() * 0.01),
                           mse=float(0.5 / step), commit=float(0.01 * rng.random()), usage=float(min(1, step / 500)),
                           perplexity=float(step))
                if e >= 10: rec['lpips'] = float(0.3 - 0.001 * e)
                f.write(json.dumps(rec) + '\n')
            f.write(json.dumps(dict(step=step, epoch=e, split='val', loss=1 / (e + 1), mse=0.5 / (e + 1),
                                    psnr=20 + e / 4, ssim=0.5 + e / 100, lr=None)) + '\n')
    return path


def test_plot_metrics_from_trainer_like_log(tmp_path):
    log = trainer_like_log(tmp_path / 'metrics.jsonl')
    recs = read_metrics(log)
    assert len(recs) == 40 * 26
    fig = plot_metrics(log, path=tmp_path / 'curves.png')
    titles = [a.get_title() for a in fig.axes]
    assert titles == ['loss', 'mse', 'commit', 'usage', 'perplexity', 'psnr', 'ssim', 'lpips']  # first-seen order; lr is never a number
    loss = fig.axes[0]
    assert [l.get_label() for l in loss.lines] == ['train', 'val']
    assert len(loss.lines[0].get_xdata()) == 1000 and len(loss.lines[1].get_xdata()) == 40
    lpips = fig.axes[titles.index('lpips')].lines[0]
    assert min(lpips.get_xdata()) == 10 * 25 + 1  # only where the key was logged
    arr = np.asarray(Image.open(tmp_path / 'curves.png').convert('RGB'))
    assert arr.shape == figure_to_array(fig).shape


def test_plot_metrics_without_steps_uses_epochs():
    fig = plot_metrics([dict(epoch=e, split='val', psnr=20 + e) for e in range(3)])
    ax = fig.axes[0]
    assert ax.get_xlabel() == 'epoch' and list(ax.lines[0].get_xdata()) == [0, 1, 2]
    with pytest.raises(ValueError, match='no numeric metrics'): plot_metrics([dict(step=1, split='train')])


def test_read_metrics_errors_name_file_and_line(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.jsonl'): read_metrics(tmp_path / 'missing.jsonl')
    (tmp_path / 'm.jsonl').write_text('{"step": 1}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r'm.jsonl:2: expected a JSON object'): read_metrics(tmp_path / 'm.jsonl')


def make_run(tmp_path):
    for split, epochs in (('train', (1, 2, 10)), ('val', (2, 10))):
        for e in epochs: save_grid(sample_grid(batch(2, 16, 16, seed=e)), tmp_path / 'samples' / f'{split}_step{e:07d}.png')
    (tmp_path / 'samples' / 'val_step0000003.png.tmp').write_bytes(b'')
    return tmp_path


def test_browse_grids_headless(tmp_path, capsys):
    run = make_run(tmp_path)
    found = browse_grids(run)
    assert {s: [e for e, _ in v] for s, v in found.items()} == {'train': [1, 2, 10], 'val': [2, 10]}
    out = capsys.readouterr().out
    assert 'train: step 10 (train_step0000010.png); also steps [1, 2]' in out and 'val: step 10' in out
    assert sample_grids(tmp_path / 'nothing') == {}


def test_widget_browser_when_ipywidgets_is_installed(tmp_path):
    widgets = pytest.importorskip('ipywidgets')
    grids = sample_grids(make_run(tmp_path))
    box = viz._widget_browser(grids)
    (split, epoch), out = box.children[0].children, box.children[1]
    assert list(split.options) == ['train', 'val'] and epoch.value == 10
    epoch.value = 1
    split.value = 'val'
    assert list(epoch.options) == [2, 10] and epoch.value == 10



# -- the zoom row ---------------------------------------------------------------------------------------------------
def sky_over_texture(h, w, corner, patch=32, seed=0):
    "Flat sky on the top half, flat grass below, a `patch` x `patch` noise texture with its top-left at `corner`."
    x = torch.empty(1, 3, h, w)
    x[:, :, :h // 2] = torch.tensor([0.53, 0.81, 0.92]).view(1, 3, 1, 1)
    x[:, :, h // 2:] = torch.tensor([0.35, 0.60, 0.20]).view(1, 3, 1, 1)
    t, l = corner
    x[0, :, t:t + patch, l:l + patch] = torch.rand(3, patch, patch, generator=torch.Generator().manual_seed(seed))
    return x


@pytest.mark.parametrize('h, w, corner', [(72, 128, (40, 96)), (72, 128, (0, 0)), (72, 128, (20, 50)), (36, 64, (4, 32))])
def test_textured_crop_lands_on_the_texture(h, w, corner):
    "A noise patch beats the flat sky, the flat grass and the straight horizon between them, wherever it is."
    x = sky_over_texture(h, w, corner)
    (t, l), = textured_crop(x)
    assert corner[0] <= t <= corner[0] + 32 - ZOOM_CROP and corner[1] <= l <= corner[1] + 32 - ZOOM_CROP, (t, l)
    np.testing.assert_array_equal(textured_crop(x), textured_crop(to_uint8_images(x)))   # any input form, the same choice


def test_zoom_row_pixel_exact():
    "The zoom tile holds the crop of the input and of the reconstruction, magnified where zoom_geometry says; the box marks it."
    x = torch.cat([sky_over_texture(36, 64, (4, 32), seed=s) for s in range(3)])
    y = torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    xs, ys = to_uint8_images(x), to_uint8_images(y)
    grid = sample_grid(x, y, nrow=2, scale=3, sep=1, zoom=True)
    geo = zoom_geometry(36, 64, scale=3)
    th, tw, s, z = 36 * 3, 64 * 3, geo['size'], geo['zoom']
    assert (s, z, geo['labels']) == (ZOOM_CROP, 3, True)          # 24 px at 3x: two 72-px crops side by side in a 192-px tile
    assert grid.shape == (2 * (1 + 4 * (th + 1)) + 2, 1 + 2 * (tw + 1), 3)
    corners = textured_crop(x, s)
    for i in range(3):
        block, col = divmod(i, 2)
        top, left = 1 + block * (1 + 4 * (th + 1) + 2), 1 + col * (tw + 1)
        tile = lambda r: grid[top + r * (th + 1): top + r * (th + 1) + th, left: left + tw]
        (t, l) = corners[i]
        for img, crop_left in ((xs[i], geo['lefts'][0]), (ys[i], geo['lefts'][1])):
            shown = tile(3)[geo['top']: geo['top'] + s * z, crop_left: crop_left + s * z]
            np.testing.assert_array_equal(shown, img[t:t + s, l:l + s].repeat(z, 0).repeat(z, 1))
        marked = (tile(0) == ZOOM_MARK).all(-1)
        assert marked[max(0, 3 * t - 1), 3 * l: 3 * (l + s)].all() and marked[3 * (t + s), 3 * l: 3 * (l + s)].all()
        np.testing.assert_array_equal(tile(0)[~marked], xs[i].repeat(3, 0).repeat(3, 1)[~marked])   # only the box changed
        np.testing.assert_array_equal(tile(1), ys[i].repeat(3, 0).repeat(3, 1))                     # the rest as before
    np.testing.assert_array_equal(sample_grid(x, y, nrow=2, scale=3, sep=1, zoom=True), grid)       # deterministic
    plain, head = sample_grid(x, y, nrow=2, scale=3, sep=1), slice(0, 1 + 3 * (th + 1))
    box = (grid[head] == ZOOM_MARK).all(-1)
    np.testing.assert_array_equal(grid[head][~box], plain[head][~box])   # the first block's three rows: as without zoom, but the box


def test_zoom_geometry_fits_small_tiles():
    "Whatever the frame and scale, the two crops fit side by side in a frame tile; labels only when they leave room."
    for h, w, scale in ((72, 128, 1), (72, 128, 2), (16, 32, 1), (8, 8, 1), (36, 64, 4), (200, 40, 1)):
        g = zoom_geometry(h, w, scale)
        th, tw = h * scale, w * scale
        assert 1 <= g['size'] <= min(ZOOM_CROP, h, w) and g['zoom'] >= 1
        assert g['lefts'][1] + g['size'] * g['zoom'] <= tw and g['top'] + g['size'] * g['zoom'] + 12 * g['labels'] <= th
    assert zoom_geometry(72, 128, 1)['zoom'] == 2 and zoom_geometry(72, 128, 2)['zoom'] == 5
    img = sample_grid(batch(2, 8, 8), batch(2, 8, 8, seed=1), zoom=True)   # tiny frames: crops of 2 px, no labels
    assert img.shape == (2 + 4 * 10, 2 + 2 * 10, 3)
    with pytest.raises(ValueError, match='needs the reconstructions'): sample_grid(batch(2), zoom=True)


def test_compare_grid_zoom_rows_show_the_same_patch_in_every_column():
    x = torch.cat([sky_over_texture(36, 64, (4, 32), seed=s) for s in range(2)])
    recons = {'blur': torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False), 'exact': x}
    plain, grid = compare_grid(recons, x, scale=2), compare_grid(recons, x, scale=2, zoom=True)
    band, th, tw = 12 + 8, 72, 128
    assert grid.shape == (band + 2 + 4 * (th + 2), plain.shape[1], 3)
    geo = zoom_geometry(36, 64, scale=2, crops=1, labels=False)
    s, z, top, (left,) = geo['size'], geo['zoom'], geo['top'], geo['lefts']
    assert (s, z, geo['labels']) == (24, 3, False)                       # one 24-px crop at 3x fills the 72-px tile
    for i, (t, l) in enumerate(textured_crop(x)):
        assert 4 <= t <= 12 and 32 <= l <= 40                             # on the texture
        row = band + 2 + (2 * i + 1) * (th + 2)                           # the zoom row under input i
        for j, imgs in enumerate([x, *recons.values()]):
            col = 2 + j * (tw + 2)
            shown = grid[row + top: row + top + s * z, col + left: col + left + s * z]
            np.testing.assert_array_equal(shown, to_uint8_images(imgs)[i, t:t + s, l:l + s].repeat(z, 0).repeat(z, 1))
    np.testing.assert_array_equal(compare_grid(recons, x, scale=2, zoom=True), grid)
