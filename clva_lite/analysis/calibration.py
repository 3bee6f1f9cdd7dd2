"""Fit head classes on calibration data: one prefill per prompt, shares read at the last prompt token."""

from __future__ import annotations

import torch

from ..attention.capture import capture
from ..attention.heads import HeadClasses, check_criterion, fit_head_classes
from ..progress import tqdm


def record_prefill(loaded, images: list, questions: list[str], *, batch_size: int = 16, desc: str = "prefill"
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Visual attention and group shares of the last prompt token for every (image, question).

    Returns ``visual`` (N, L, H, V) and ``shares`` (N, L, H, 4), on the CPU.
    """
    visual, shares = [], []
    for start in tqdm(range(0, len(questions), batch_size), desc=desc, leave=False):
        inputs = loaded.inputs(images[start:start + batch_size], questions[start:start + batch_size])
        with torch.no_grad(), capture(loaded, inputs) as record:
            loaded.model(**inputs)
        visual.append(record.visual[0].float().cpu())
        shares.append(record.shares[0].float().cpu())
    return torch.cat(visual), torch.cat(shares)


def calibrate_heads(loaded, images: list, questions: list[str], *, split: str, criterion: str = "share",
                    rule: str = "topk", fraction: float = 0.25, low: float = 0.05, high: float = 0.3,
                    batch_size: int = 16) -> HeadClasses:
    """Head classes from each head's mean visual share and focus over ``(images, questions)``, ranked by
    ``criterion`` (``"share"``, ``"focus"`` or ``"share_focus"``; ``.with_criterion`` re-ranks them later).

    ``split`` names where the data came from and is recorded; fitting on ``"test"`` is refused.
    """
    if str(getattr(split, "value", split)) == "test":
        raise ValueError("head classes must not be fitted on the test split; use the calibration split")
    check_criterion(criterion)
    visual, shares = record_prefill(loaded, images, questions, batch_size=batch_size, desc="calibrate heads")
    return fit_head_classes(shares, visual=visual, split=str(getattr(split, "value", split)), criterion=criterion,
                            rule=rule, fraction=fraction, low=low, high=high)
