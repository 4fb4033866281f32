"""The reference world model (issue 22): its loss falls on a token folder with a learnable rule (frames shift as the
action says), shuffling the actions measurably hurts it there, a broken model (one that cannot see the action) does not
learn the rule, rollouts and training windows stay inside episodes, the same seed gives the same loss curve bit for
bit on CPU, and a saved model loads to the same predictions."""
from dataclasses import replace
import json
import numpy as np, pytest, torch

from vqvae_kaggle.tokens import load_tokens
from vqvae_kaggle import world_model as wm

QUICK = wm.WorldModelConfig(layers=2, width=32, heads=2, context=3, steps=100, batch_size=16, lr=1e-2)


pytestmark = pytest.mark.usefixtures('one_thread')   # conftest: bit-for-bit comparisons need a fixed thread count


@pytest.fixture(scope='module')
def rule(tmp_path_factory):
    return wm.rule_token_folder(tmp_path_factory.mktemp('rule') / 'tokens', episodes=8, length=24)


@pytest.fixture(scope='module')
def trained(rule, tmp_path_factory):
    n = torch.get_num_threads(); torch.set_num_threads(1)
    try: return wm.train_world_model(rule, QUICK, tmp_path_factory.mktemp('wm'), progress=False)
    finally: torch.set_num_threads(n)


def test_rule_folder_follows_its_rule(rule):
    t = load_tokens(rule)
    codes, acts, starts = t['codes'], t['actions'], list(t['episode_starts'])
    for i in range(len(codes) - 1):
        if i + 1 in starts: continue
        assert (codes[i + 1] == np.roll(codes[i], int(acts[i].argmax()) - 1, axis=1)).all()


def test_loss_falls_and_actions_matter(rule, trained):
    h = trained['history']
    assert h[-1] < 0.3 * h[0], f'loss {h[0]:.2f} -> {h[-1]:.2f} nats/token'
    ev = wm.evaluate_world_model(trained['model'], rule, k=4, rollouts=8)
    # given the action the next frame is certain; shuffled, the model guesses among three shifts with misplaced confidence
    assert ev['action_gain'] > 10, ev
    assert ev['accuracy'] > ev['accuracy_shuffled'] + 0.2 and ev['accuracy'] > ev['copy_accuracy'] + 0.2, ev
    assert ev['rollout_accuracy'][0] > ev['rollout_copy_accuracy'][0], ev


def test_a_model_blind_to_actions_does_not_learn_the_rule(rule, trained, tmp_path):
    "A broken model (the action input cut) must not pass the bar the working one passes."
    folder = wm.write_token_folder(tmp_path / 'blind', load_tokens(rule)['codes'], load_tokens(rule)['episode_starts'], None, 8)
    r = wm.train_world_model(folder, QUICK, progress=False)
    ev = wm.evaluate_world_model(r['model'], folder, k=2, rollouts=2)
    ref = wm.evaluate_world_model(trained['model'], rule, k=2, rollouts=2)
    assert ev['bits_per_frame'] > ref['bits_per_frame'] + 10, (ev['bits_per_frame'], ref['bits_per_frame'])


def test_same_seed_same_curve_bit_for_bit(rule):
    cfg = replace(QUICK, steps=8)
    a, b = (wm.train_world_model(rule, cfg, progress=False)['history'] for _ in range(2))
    assert a == b
    assert wm.train_world_model(rule, replace(cfg, seed=1), progress=False)['history'] != a


def test_windows_and_rollouts_stay_inside_episodes(tmp_path):
    lengths = [7, 3, 12, 5]
    starts = np.cumsum([0, *lengths[:-1]])
    codes = np.repeat(np.arange(len(lengths)), lengths)[:, None, None].repeat(2, 1).repeat(2, 2).astype(np.uint8)  # token = episode id
    folder = wm.write_token_folder(tmp_path / 'eps', codes, starts, np.zeros((len(codes), 2), np.float32), 4)
    ranges = wm.episode_ranges(starts, len(codes))
    episode_of = lambda rows: set(np.searchsorted(starts, rows, 'right') - 1)
    for s in wm.window_starts(ranges, 4): assert len(episode_of(s + np.arange(4))) == 1
    rows = wm.rollout_windows(ranges, 2, 3, 50)
    assert len(rows) and all(len(episode_of(r)) == 1 for r in rows)
    assert len(rows) == sum(max(0, n - 5 + 1) for n in lengths)    # every window of 5 frames that fits, none that does not
    model = wm.WorldModel(replace(QUICK, context=2, width=16), 4, (2, 2), 2)
    ev = wm.evaluate_world_model(model, folder, k=3, rollouts=50)
    for r in ev['rollout_rows']:
        assert len(episode_of(np.array(r))) == 1
        assert (codes[r] == codes[r[0]]).all()


def test_block_causal_mask():
    torch.manual_seed(0)
    model = wm.WorldModel(replace(QUICK, context=3, width=16), 8, (2, 3), 2).eval()
    tok, act = torch.randint(8, (2, 3, 2, 3)), torch.randn(2, 3, 2)
    out = model(tok, act)
    later = tok.clone(); later[:, 2] = (later[:, 2] + 1) % 8
    act2 = act.clone(); act2[:, 2] += 1
    assert torch.allclose(model(later, act2)[:, :2], out[:, :2], atol=1e-6)   # the future is never seen
    act3 = act.clone(); act3[:, 1] += 1
    assert not torch.allclose(model(tok, act3)[:, 1], out[:, 1])             # a frame's own action is


def test_save_load_and_cli(rule, trained, tmp_path):
    model, info = wm.load_world_model(trained['path'])
    tok, act = wm.gather_windows(load_tokens(rule)['codes'], load_tokens(rule)['actions'], np.array([0, 30]), 3)
    assert torch.equal(model(tok, act), trained['model'](tok, act))
    assert info['tokens'] == str(rule) and info['steps'] == QUICK.steps
    out = tmp_path / 'cli'
    wm.main(['train', str(rule), '--out', str(out), '--set', 'steps=2', 'width=16', 'heads=2', 'context=2', '--episodes', '0:6'])
    r = wm.main(['eval', str(out), str(rule), '-k', '2', '--rollouts', '3', '--episodes', '6:'])
    saved = json.loads((out / 'eval.json').read_text())
    assert saved['episodes'] == 2 and r['rollouts'] == 3
    assert min(min(x) for x in saved['rollout_rows']) >= 6 * 24      # only the held-out episodes
    with pytest.raises(ValueError, match='unknown world-model settings'): wm.world_model_config('tiny', depth=3)


def test_vqvae_kaggle_worldmodel_command(rule, tmp_path, capsys):
    "`vqvae-kaggle worldmodel train|eval`: the world model's own command line (add_world_model_commands / run_world_model) in cli.py."
    from vqvae_kaggle.cli import main
    with pytest.raises(SystemExit) as e: main(['worldmodel', '--help'])
    assert e.value.code == 0
    out = tmp_path / 'wm'
    assert main(['worldmodel', 'train', str(rule), '--out', str(out), '--set', 'steps=2', 'width=16', 'heads=2', 'context=2']) == 0
    assert main(['worldmodel', 'eval', str(out), str(rule), '-k', '2', '--rollouts', '2']) == 0
    assert json.loads((out / 'eval.json').read_text())['rollouts'] == 2
    assert main(['worldmodel', 'eval', str(tmp_path / 'missing'), str(rule)]) == 2   # a user error, said in one line
