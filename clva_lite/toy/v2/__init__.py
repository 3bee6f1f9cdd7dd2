"""Toy v2: a world and a training recipe whose geometry and stages follow LLaVA-1.5 more closely than v1's.

* ``world``: 24 categories in 6 co-occurring groups of four, 3-6 objects per 96 x 96 scene, 144 visual tokens;
* ``questions``: captions and POPE (random / popular / adversarial) on v2 scenes, train-split statistics;
* ``model``: ``LlavaForConditionalGeneration`` with a CLIP tower (penultimate-layer features) and a 16 x 8 Llama
  decoder, saved as a plain Hugging Face folder that ``clva_lite.load_model(folder)`` loads;
* ``train``: vision (CLIP-like contrastive), language (text only), align (projector), instruct (projector +
  decoder), each stage checkpointed; ``python -m clva_lite.toy train --recipe v2 --out DIR [--quick]``;
* ``explore`` / ``metrics``: reduced-scale variants measured on the calibration split
  (``python -m clva_lite.toy.v2.explore --help``).

v1 (``clva_lite.toy``) stays the bundled model; nothing here changes it. Status: work in progress. At the reduced
scale explored so far no variant learns the task (POPE at chance on calibration; ``data/toy-v2-variants.json``):
the contrastive vision stage does not yet learn shapes and the text-only stage does not yet learn existence.
"""
