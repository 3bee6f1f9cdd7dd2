import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)
from clva_lite.toy.v2.model import build_untrained_model
from clva_lite.toy.v2.train import render_images
from clva_lite.toy.v2.world import CATEGORIES

lr=float(sys.argv[1]); steps=int(sys.argv[2]); pool=sys.argv[3]
imgs=render_images(2000)
m=build_untrained_model(0); tower=m.model.vision_tower.train()
for sub in (m.config.vision_config,): sub._attn_implementation="sdpa"
y=torch.tensor([[c in s.categories for c in CATEGORIES] for s in imgs.scenes]).float()
head=torch.nn.Linear(96,24)
opt=torch.optim.AdamW([*tower.parameters(),*head.parameters()], lr=lr, betas=(0.9,0.98), weight_decay=0.01)
rng=np.random.default_rng(0); t=time.time(); losses=[]
for step in range(steps):
    for g in opt.param_groups: g['lr']=lr*min(1,(step+1)/30)
    idx=torch.from_numpy(rng.integers(2000,size=64))
    out=tower(pixel_values=imgs.batch(idx))
    h=tower.post_layernorm(out.last_hidden_state[:,1:]); f = out.pooler_output if pool=='cls' else (h.amax(1) if pool=='max' else h.mean(1))
    loss=F.binary_cross_entropy_with_logits(head(f), y[idx])
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(tower.parameters(),1.0); opt.step()
    losses.append(float(loss))
    if step%25==24: print(step+1, round(np.mean(losses[-25:]),4), round(time.time()-t), flush=True)
