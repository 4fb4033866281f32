"""Issue 24: no setting, path or file a user can type loses a run or runs the wrong thing. Each bad value gets exit
status 2 and one line naming the value (or the file), and leaves an existing run folder and frame cache byte-identical."""
import hashlib, json, shutil
from pathlib import Path
import numpy as np, pytest, torch
from vqvae_kaggle.cli import main, config_from_args, build_parser
from vqvae_kaggle.checkpoint import save_checkpoint, list_checkpoints
from vqvae_kaggle.config import SECTIONS, ConfigError, Config, RunConfig, apply_overrides, validate
from vqvae_kaggle.presets import get_preset
from test_cli import TINY, make_source

def snapshot(*folders) -> dict:
    "Every file under `folders` with its SHA-256: equal snapshots mean byte-identical trees."
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for f in folders for p in sorted(Path(f).rglob('*')) if p.is_file()}

def cli(args) -> int:
    "main()'s exit status, also for the parser's own errors (argparse exits with 2)."
    try: return main(args)
    except SystemExit as e: return e.code

@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "A finished 3-step run on a frame array, its frame cache, and files a user might type."
    root = tmp_path_factory.mktemp('bad-input')
    src = make_source('npz', root)
    sets = [f'--set={s}' for s in TINY + [f'data.cache_dir={root / "cache"}']]
    assert main(['train', '--data', src, '--out', str(root / 'run'), '--no-progress', *sets]) == 0
    (root / 'broken.json').write_text('{"optim": {"lr": 1e-3,}}')
    (root / 'partial.json').write_text('{"preset": "v1.0", "optim": {"lr": 1e-4}}')
    (root / 'misspelt.json').write_text('{"optim": {"learning_rate": 1e-4}}')
    (root / 'list.json').write_text('[1, 2]')
    torch.save({'step': 3, 'weights': {}}, root / 'no-model.pt')
    return dict(root=root, src=src, sets=sets)

# the 23 string-valued fields, a value each must refuse and what the message says is allowed (written out here, not read
# from the config's own rules, so that a rule that goes missing or changes fails this table)
SWITCH = "one of 'auto', 'on', 'off'"
STRING_FIELDS = [
    ('data.source', '', 'a non-empty string'), ('data.fallback_source', '', 'a non-empty string'),
    ('data.val_source', '', 'a non-empty string'), ('data.cache_dir', '', 'a non-empty string'),
    ('data.layout', 'videos', "one of 'auto', 'minerl', 'gamefactory', 'images', 'array'"),
    ('model.upsample', 'bilinear', "one of 'nearest', 'transpose'"), ('model.norm', 'batch', "one of 'group', 'none'"),
    ('model.act', 'gelu', "one of 'silu', 'relu'"), ('quantizer.kind', 'lfq', "one of 'ema', 'fsq'"),
    ('quantizer.gradient', 'straight', "one of 'ste', 'rotation'"), ('loss.lpips_net', 'resnet', "one of 'alex', 'vgg', 'squeeze'"),
    ('loss.lpips_unit', 'minutes', "one of 'steps', 'epochs'"), ('loss.adv_loss', 'wgan', "one of 'hinge', 'non_saturating'"),
    ('optim.schedule', 'step', "one of 'cosine', 'linear', 'constant'"), ('optim.amp', 'fp8', "one of 'auto', 'fp16', 'bf16', 'off'"),
    ('run.out_dir', '', 'a non-empty string'), ('run.device', 'gpu', "'auto', 'cpu', 'mps', 'cuda' or 'cuda:N'"),
    ('run.wandb', 'yes', "one of 'auto', 'online', 'offline', 'disabled'"), ('run.wandb_project', '', 'a non-empty string'),
    ('run.channels_last', 'yes', SWITCH), ('run.compile', 'yes', SWITCH), ('run.cudnn_benchmark', 'yes', SWITCH),
    ('run.fused_adam', 'yes', SWITCH)]

def test_every_string_field_is_checked():
    "The 23 string-valued fields of issue 24, each with its rule."
    strings = [f'{s}.{f}' for s, c in SECTIONS.items() for f, t in c.__annotations__.items() if 'str' in str(t)]
    assert sorted(strings) == sorted(k for k, _, _ in STRING_FIELDS) and len(strings) == 23

# (arguments after the subcommand; {root}, {src} are filled in), the message expected on stderr
TRAIN_CASES = [
    (['--budget-minutes', '0'], 'run.budget_minutes = 0.0 is not allowed: a finite number > 0, or none (no budget'),
    (['--budget-minutes', '-1'], 'run.budget_minutes = -1.0 is not allowed'),
    (['--budget-minutes', 'soon'], "run.budget_minutes: cannot read 'soon' as float"),
    (['--set', 'run.keep_checkpoints=-1'], 'run.keep_checkpoints = -1 is not allowed: an integer >= 1'),
    (['--set', 'run.keep_checkpoints=0'], 'run.keep_checkpoints = 0 is not allowed: an integer >= 1'),
    (['--set', 'run.log_every=0'], 'run.log_every = 0 is not allowed: an integer >= 1'),
    (['--set', 'data.val_fraction=0'], 'no held-out frames to evaluate on (data.val_fraction=0'),
    (['--set', 'data.val_fraction=1'], 'data.val_fraction = 1.0 is not allowed: a finite number in [0, 1)'),
    (['--set', 'optim.lr=0'], 'optim.lr = 0.0 is not allowed: a finite number > 0'),
    (['--set', 'optim.batch_size=0'], 'optim.batch_size = 0 is not allowed'),
    (['--set', 'run.epochs=0'], 'run.epochs = 0 is not allowed'),
    (['--set', 'data.max_frames=-5'], 'data.max_frames = -5 is not allowed: an integer >= 1, or none (all frames)'),
    (['--resume-from', '{root}/no-such-run'], '--resume-from {root}/no-such-run: no such folder'),
    (['--resume-from', '{root}/partial.json'], 'it is a file'),
    (['--config', '{root}/broken.json'], 'config file {root}/broken.json is not valid JSON'),
    (['--config', '{root}/misspelt.json'], "config file {root}/misspelt.json: optim: unknown field(s) ['learning_rate']"),
    (['--config', '{root}/list.json'], 'config file {root}/list.json: expected a JSON object'),
    (['--config', '{root}/partial.json', '--preset', 'cpu'], "config file {root}/partial.json: it names preset 'v1.0' but preset 'cpu'"),
    (['--config', '{root}/missing.json'], 'config file not found: {root}/missing.json'),
    *[(['--set', f'{field}={value}'], f'{field} = {value!r} is not allowed: {allowed}') for field, value, allowed in STRING_FIELDS],
]
OTHER_CASES = [
    (['eval', '--checkpoint', '{root}/run', '--max-frames', '-5'], 'argument --max-frames: expected an integer >= 1, got -5'),
    (['eval', '--checkpoint', '{root}/run', '--max-frames', '0'], 'argument --max-frames: expected an integer >= 1, got 0'),
    (['eval', '--checkpoint', '{root}/no-model.pt'], "{root}/no-model.pt is not a vqvae-kaggle checkpoint: it has no 'model' and no 'config' entry"),
    (['tokenize', '--checkpoint', '{root}/run', '--out', '{root}/tok', '--frame-gap', '0'], 'argument --frame-gap: expected an integer >= 1, got 0'),
    (['tokenize', '--checkpoint', '{root}/run', '--out', '{root}/tok', '--skip-first', '-1'], 'argument --skip-first: expected an integer >= 0, got -1'),
    (['decode', '--tokens', '{root}/tok', '--max-frames', '-5'], 'argument --max-frames: expected an integer >= 1, got -5'),
    (['decode', '--tokens', '{root}/tok', '--start', '-2'], 'argument --start: expected an integer >= 0, got -2'),
]

@pytest.mark.parametrize('args, message', [(['train', *a], m) for a, m in TRAIN_CASES] + OTHER_CASES,
                         ids=lambda v: ' '.join(v) if isinstance(v, list) else None)
def test_bad_value_is_refused_and_touches_nothing(run, args, message, capsys):
    root = run['root']
    fill = lambda s: s.format(root=root, src=run['src'])
    args = [fill(a) for a in args]
    if args[0] == 'train':   # the case's own options last: they win over the run's settings
        args = ['train', '--data', run['src'], '--out', str(root / 'run'), '--no-progress', *run['sets'], *args[1:]]
    before = snapshot(root / 'run', root / 'cache')
    rc = cli(args)
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1] if err.strip() else ''
    assert rc == 2, f'exit status {rc}, stderr ends {last[:200]!r}'
    assert fill(message) in err, f'stderr ends {last[:300]!r}'
    assert 'Traceback' not in err
    changed = sorted(set(snapshot(root / 'run', root / 'cache').items()) ^ set(before.items()))
    assert not changed, f'the run folder or cache changed: {changed[:3]}'   # checkpoints, config, metrics and cache untouched

def test_config_file_preset_is_the_base(run):
    "A partial config file that names a preset trains on that preset, not on the default cpu one."
    args = lambda *a: build_parser().parse_args(['train', *a])
    cfg = config_from_args(args('--config', str(run['root'] / 'partial.json')))
    v1 = get_preset('v1.0')
    assert (cfg.name, cfg.model, cfg.optim.lr) == ('v1.0', v1.model, 1e-4)
    assert config_from_args(args('--config', str(run['root'] / 'partial.json'), '--preset', 'v1.0')).model == v1.model
    assert config_from_args(args('--budget-minutes', 'none')).run.budget_minutes is None   # no budget, said explicitly

def test_python_construction_is_checked():
    "A Config built in Python is checked like one read from a file; a field assigned afterwards is caught by validate."
    with pytest.raises(ConfigError, match="model.act = 'gelu'"): Config(model=type(Config().model)(act='gelu'))
    with pytest.raises(ConfigError, match='run.budget_minutes = 0'): RunConfig(budget_minutes=0)
    cfg = get_preset('cpu'); cfg.run.log_every = 0
    with pytest.raises(ConfigError, match='run.log_every = 0'): validate(cfg)

def test_decode_names_the_cli_flag_for_another_tokenizer(run, capsys):
    "decode with a checkpoint other than the one that made the tokens: the error names --allow-other-tokenizer, which works."
    root = run['root']
    tok = root / 'tok'
    if not tok.exists():
        assert main(['tokenize', '--checkpoint', str(root / 'run'), '--out', str(tok), '--batch-size', '4', '--no-progress']) == 0
    other = root / 'other' / 'checkpoints'
    state = torch.load(list_checkpoints(root / 'run')[0].path, weights_only=False)
    save_checkpoint(other, {**state, 'step': 99}, step=99, epoch=0)   # the same weights, another file: another SHA-256
    before = snapshot(tok)
    assert main(['decode', '--tokens', str(tok), '--checkpoint', str(root / 'other'), '--out', str(root / 'd.npy'), '--no-progress']) == 2
    err = capsys.readouterr().err
    assert 'pass --allow-other-tokenizer' in err and not (root / 'd.npy').exists()
    assert snapshot(tok) == before
    assert main(['decode', '--tokens', str(tok), '--checkpoint', str(root / 'other'), '--out', str(root / 'd.npy'),
                 '--allow-other-tokenizer', '--max-frames', '3', '--no-progress']) == 0
    assert np.load(root / 'd.npy').shape[0] == 3

def test_enumerations_agree_with_the_modules_that_use_them():
    "Where a module that reads an enumerated setting keeps its own list (frames, losses, model), it is the config's list."
    from vqvae_kaggle import config as c
    from vqvae_kaggle.sources.recordings import LAYOUTS
    from vqvae_kaggle.losses import BACKBONE_FILES
    from vqvae_kaggle.model import ACTIVATION_LAYERS
    assert (LAYOUTS, tuple(BACKBONE_FILES), tuple(ACTIVATION_LAYERS)) == (c.LAYOUTS, c.LPIPS_NETS, c.ACTIVATIONS)
    assert c.DataConfig.RULES['layout'].choices == c.LAYOUTS and c.LossConfig.RULES['lpips_net'].choices == c.LPIPS_NETS
