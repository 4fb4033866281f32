"A 3.13 kernel with python3.12 on PATH: the game's environment is built from python3.12 (0.31.20100129), venv and target."
import json, os, subprocess, sys, time
from vqvae_kaggle import minecraft as mc
mc.game_interpreter = lambda running=None: mc._find_interpreter(('/opt/python3.13/bin/python3.13', (3, 13)), os.environ['PATH'])
print('interpreter', mc.game_interpreter(), 'release', mc.game_release(), 'fingerprint', mc.game_fingerprint())
for method in ('venv', 'target'):
    os.environ['VQVAE_MINECRAFT_INSTALL'] = method
    t = time.time(); cmd = mc.minecraft_command(progress=True); print(method, 'ready in', round(time.time() - t), 's:', cmd[:4])
    out = subprocess.run([*cmd, str(mc.GAME_SCRIPT), '--seed', '0', '--frames', '40', '--width', '256', '--height', '144',
                          '--frame-gap', '2', '--skip-first', '20'], capture_output=True, text=True, env=dict(os.environ, LP_NUM_THREADS='1'))
    d = json.loads(out.stdout)
    print(method, d['python'], d['game_release'], d['frames_sha256'], d['actions_sha256'][:16])
