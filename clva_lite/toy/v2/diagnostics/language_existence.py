"""Diagnostic: does the v2 decoder learn in-context existence QA from scene text (answers-only loss)?"""
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)
from clva_lite.toy.questions import existence_question
from clva_lite.toy.v2 import world as w2
from clva_lite.toy.v2.model import ModelConfig, build_untrained_model
from clva_lite.toy.v2.train import Texts, TrainConfigV2, existence_accuracy

lr, steps, layers = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
cfg = TrainConfigV2(language_loss="answers")
rng = np.random.default_rng(0); texts = Texts(rng, cfg)
m = build_untrained_model(0, ModelConfig(layers=layers)); m.train()
for sub in (m.config, m.config.text_config): sub._attn_implementation = "sdpa"
dec = m.model.language_model
scenes = w2.generate_scenes('train', 4000); held = w2.generate_scenes('calibration', 200)
def doc(s):
    present = rng.random() < 0.5
    pool = s.categories if present else [c for c in w2.CATEGORIES if c not in s.categories]
    q = existence_question(pool[int(rng.integers(len(pool)))])
    p = [texts.words["<s>"]] + texts.ids(f"scene : {texts.scene_text(s)} question : {q} answer :")
    a = texts.ids("yes ." if present else "no .") + [texts.words["</s>"]]
    return p + a, [0] * len(p) + [1] * len(a)
opt = torch.optim.AdamW(dec.parameters(), lr=lr, weight_decay=0.01); t = time.time(); L = []
for step in range(steps):
    for g in opt.param_groups: g['lr'] = lr * min(1, (step + 1) / 50)
    docs = [doc(scenes[i]) for i in rng.integers(4000, size=32)]
    ids, att, mask = texts.pad([d[0] for d in docs], [d[1] for d in docs])
    h = dec(inputs_embeds=m.get_input_embeddings()(ids), attention_mask=att).last_hidden_state
    logits = m.lm_head(h[:, :-1]); tg = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tg.reshape(-1), ignore_index=-100)
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(dec.parameters(), 1.0); opt.step(); L.append(float(loss.detach()))
    if step % 100 == 99:
        dec.eval(); acc = existence_accuracy(m, None, held, texts, np.random.default_rng(1), as_text=True); dec.train()
        print(f"lr={lr} layers={layers} step {step+1} loss {np.mean(L[-100:]):.3f} held-out acc {acc:.3f} {time.time()-t:.0f}s", flush=True)
