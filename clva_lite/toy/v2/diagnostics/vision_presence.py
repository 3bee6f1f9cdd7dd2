"""Diagnostic: can the v2 CLIP tower learn category presence (supervised multi-label, upper bound for the
contrastive stage) on the v2 world as is, with bigger objects, or on a clean background?"""
import dataclasses
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)
import clva_lite.toy.world as v1
from clva_lite.toy.v2 import world as w2
from clva_lite.toy.v2.model import build_untrained_model
from clva_lite.toy.world import COLOURS

mode, steps = sys.argv[1], int(sys.argv[2])
def render(scene):
    rng = np.random.default_rng(scene.background_seed)
    if 'clean' in mode:
        image = np.ones((96, 96, 3)) * rng.uniform(40, 120, size=3)
    else:
        image = v1._background(rng, 96); v1._clutter(rng, image)
    for obj in scene.objects:
        if 'big' in mode: obj = dataclasses.replace(obj, size=obj.size * 1.5)
        mask = w2.object_mask(obj)[..., None]
        op = rng.uniform(0.3, 0.45) if obj.faint else 1.0
        image = image * (1 - mask * op) + np.array(COLOURS[obj.colour]) * mask * op
    return np.clip(image, 0, 255).astype(np.uint8)
scenes = w2.generate_scenes('train', 2000)
px = torch.from_numpy(np.stack([render(s) for s in scenes])).permute(0, 3, 1, 2).contiguous()
y = torch.tensor([[c in s.categories for c in w2.CATEGORIES] for s in scenes]).float()
m = build_untrained_model(0); tower = m.model.vision_tower.train(); m.config.vision_config._attn_implementation = "sdpa"
head = torch.nn.Linear(96, 24)
lr = 1e-3
opt = torch.optim.AdamW([*tower.parameters(), *head.parameters()], lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
rng = np.random.default_rng(0); t = time.time(); losses = []
for step in range(steps):
    for g in opt.param_groups: g['lr'] = lr * min(1, (step + 1) / 30)
    idx = torch.from_numpy(rng.integers(1600, size=64))
    out = tower(pixel_values=px[idx].float() / 127.5 - 1)
    f = tower.post_layernorm(out.last_hidden_state[:, 1:]).amax(1)
    loss = F.binary_cross_entropy_with_logits(head(f), y[idx])
    opt.zero_grad(); loss.backward(); opt.step(); losses.append(float(loss.detach()))
    if step % 50 == 49: print(mode, step + 1, round(np.mean(losses[-50:]), 4), round(time.time() - t), flush=True)
with torch.no_grad():
    out = tower(pixel_values=px[1600:].float() / 127.5 - 1)
    s = head(tower.post_layernorm(out.last_hidden_state[:, 1:]).amax(1)); ye = y[1600:]
    aucs = [float((s[ye[:, k] > 0, k][:, None] > s[ye[:, k] == 0, k][None]).float().mean()) for k in range(24)]
print(mode, 'held-out mean AUC', round(float(np.mean(aucs)), 4))
