"A 3.13 kernel with python3.12 on PATH: the game's environment is built from python3.12 (0.31.20100129), venv and target."
import json, os, subprocess, sys, time
from vqvae_kaggle.sources import minecraft_runtime as rt
rt.game_interpreter = lambda running=None: rt._find_interpreter(('/opt/python3.13/bin/python3.13', (3, 13)), os.environ['PATH'])
print('interpreter', rt.game_interpreter(), 'release', rt.game_release(), 'fingerprint', rt.game_fingerprint())
for method in ('venv', 'target'):
    os.environ['VQVAE_MINECRAFT_INSTALL'] = method
    t = time.time(); cmd = rt.minecraft_command(progress=True); print(method, 'ready in', round(time.time() - t), 's:', cmd[:4])
    out = subprocess.run([*cmd, str(rt.GAME_SCRIPT), '--seed', '0', '--frames', '40', '--width', '256', '--height', '144',
                          '--frame-gap', '2', '--skip-first', '20'], capture_output=True, text=True, env=dict(os.environ, LP_NUM_THREADS='1'))
    d = json.loads(out.stdout)
    print(method, d['python'], d['game_release'], d['frames_sha256'], d['actions_sha256'][:16])
