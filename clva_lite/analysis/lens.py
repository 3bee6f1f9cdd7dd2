"""A logit lens on yes/no answers: by which decoder layer has the model made up its mind?

CLVA changes attention in the *deep* band only. Where a model has settled its answer before that band, steering
deep attention can change it only by reversing a margin the residual stream already carries. The logit lens
(nostalgebraist, 2020) reads the residual stream after each decoder layer, at the last prompt position, through the
decoder's final norm and the unembedding; here only the margin ``logit("yes") - logit("no")`` of the first answer
token.
"""

from __future__ import annotations

import pandas as pd
import torch

from ..attention.capture import unwrap


def _answer_token(tokenizer, word: str) -> int:
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise ValueError(f"the answer word {word!r} is {len(ids)} tokens for this tokenizer; the lens needs a word "
                         "that is one token (pass words=(...) as the model spells its first answer token)")
    return ids[0]


def yes_no_margins(loaded, images: list, questions: list[str], *, words: tuple[str, str] = ("yes", "no"),
                   batch_size: int = 32, desc: str = "logit lens") -> torch.Tensor:
    """(N, L) float32: for each prompt and decoder layer, ``logit(words[0]) - logit(words[1])`` at the last prompt
    position when that layer's output goes through the final norm and the head. The last column is the model's own
    margin (its logits). Positive means the layer leans to ``words[0]``. Questions about the same picture share its
    image prefix (:func:`~clva_lite.eval.prefix.forward_prompts`)."""
    from ..eval.prefix import forward_prompts

    if not questions:
        raise ValueError("no prompts given; pass at least one image and question")
    if len(images) != len(questions):
        raise ValueError(f"{len(images)} images for {len(questions)} questions; pass one image per question")
    model = unwrap(loaded)
    decoder = model.get_decoder()
    if getattr(decoder, "norm", None) is None:
        raise ValueError(f"{type(decoder).__name__} has no final `norm`; the logit lens needs the decoder's last norm")
    tokens = tuple(_answer_token(loaded.processor.tokenizer, w) for w in words)
    margins = [None] * len(questions)
    for rows, out, _ in forward_prompts(loaded, images, questions, batch_size=batch_size, desc=desc,
                                        output_hidden_states=True):
        for k, row in zip(rows, layer_margins(model, out, tokens)):
            margins[k] = row
    return torch.stack(margins)


@torch.no_grad()
def layer_margins(model, out, tokens: tuple[int, int]) -> torch.Tensor:
    """(batch, L) float32 on the CPU: ``logit(tokens[0]) - logit(tokens[1])`` at the last position after each decoder
    layer, from a forward output with ``hidden_states`` (the last column is the model's own logits)."""
    norm, head = model.get_decoder().norm, model.get_output_embeddings()
    # hidden_states: the embeddings, then one per layer; the last one already went through the final norm
    layers = [head(norm(h[:, -1])) for h in out.hidden_states[1:-1]] + [out.logits[:, -1]]
    return torch.stack([logits[:, tokens[0]] - logits[:, tokens[1]] for logits in layers], 1).float().cpu()


def _agrees(margins: torch.Tensor) -> torch.Tensor:
    """(N, L) bool: the layer's margin has the sign of the final answer's."""
    return (margins > 0) == (margins[:, -1:] > 0)


def settled_layer(margins: torch.Tensor) -> torch.Tensor:
    """(N,) long: for each prompt the first layer from which every later layer's margin has the sign of the final
    answer (0: the answer never changes; L - 1: only the last layer gives it). margins: (N, L)."""
    trailing = _agrees(margins).flip(1).long().cumprod(1).sum(1)  # length of the all-agreeing run at the end
    return margins.shape[1] - trailing


def lens_table(margins: torch.Tensor, bands: dict[str, list[int]] | None = None) -> pd.DataFrame:
    """One row per layer: the share of prompts whose margin there has the final answer's sign, the share settled by
    that layer (see :func:`settled_layer`), the median |margin|, and the layer's band when ``bands`` are given."""
    agrees = _agrees(margins).float().mean(0)
    settled = settled_layer(margins)
    layers = range(margins.shape[1])
    table = pd.DataFrame({
        "agrees with final answer": agrees.numpy(),
        "settled by this layer": [float((settled <= layer).float().mean()) for layer in layers],
        "median |margin|": margins.abs().median(0).values.numpy(),
    }, index=pd.Index(layers, name="layer"))
    if bands:
        table["band"] = [next((name for name, members in bands.items() if layer in members), "") for layer in layers]
    return table
