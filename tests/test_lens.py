import pytest
import torch

from clva_lite.analysis.lens import lens_table, settled_layer, yes_no_margins
from clva_lite.toy import generate_scene

QUESTIONS = ["is there a star", "is there a moon", "is there a ring", "describe the image ."]


def _margins(loaded, **kwargs):
    images = [generate_scene("calibration", i).image() for i in range(len(QUESTIONS))]
    return images, yes_no_margins(loaded, images, QUESTIONS, **kwargs)


def test_margins_read_each_layer_through_the_final_norm_and_the_last_column_is_the_model(untrained):
    images, margins = _margins(untrained, batch_size=3)  # two batches, the second one shorter
    model = untrained.model
    layers = model.config.text_config.num_hidden_layers
    assert margins.shape == (len(QUESTIONS), layers)
    tokenizer = untrained.processor.tokenizer
    yes, no = (tokenizer(w, add_special_tokens=False).input_ids[0] for w in ("yes", "no"))
    inputs = untrained.inputs(images, QUESTIONS)
    outputs = {}  # layer -> its output, read by hooks, independently of output_hidden_states
    decoder = model.get_decoder()
    handles = [layer.register_forward_hook(lambda m, a, out, i=i: outputs.__setitem__(i, out[0] if isinstance(
        out, tuple) else out)) for i, layer in enumerate(decoder.layers)]
    try:
        logits = model(**inputs).logits[:, -1]
    finally:
        for handle in handles:
            handle.remove()
    assert torch.allclose(margins[:, -1], logits[:, yes] - logits[:, no], atol=1e-4)
    head = model.get_output_embeddings()
    for layer in (0, layers // 2):
        lens = head(decoder.norm(outputs[layer][:, -1]))
        assert torch.allclose(margins[:, layer], lens[:, yes] - lens[:, no], atol=1e-4)


def test_settled_layer_counts_the_final_agreeing_run():
    margins = torch.tensor([[1.0, 2.0, 3.0],  # never changes: 0
                            [1.0, -1.0, 2.0],  # only the last layer: 2
                            [-1.0, 1.0, 1.0],  # from layer 1
                            [1.0, -2.0, -1.0]])  # from layer 1 (no)
    assert settled_layer(margins).tolist() == [0, 2, 1, 1]
    table = lens_table(margins, {"early": [0], "deep": [2]})
    assert table["settled by this layer"].tolist() == [0.25, 0.75, 1.0]
    assert table["agrees with final answer"].tolist() == [0.5, 0.75, 1.0]
    assert table["band"].tolist() == ["early", "", "deep"]


def test_bad_input_is_a_clear_error(untrained):
    with pytest.raises(ValueError, match="one token"):
        _margins(untrained, words=("yes please", "no"))
    with pytest.raises(ValueError, match="one image per question"):
        yes_no_margins(untrained, [], ["is there a star"])


def test_lens_figure_draws_both_curves_and_the_bands():
    import matplotlib
    matplotlib.use("Agg")
    from clva_lite.plots import lens_curves

    table = lens_table(torch.tensor([[1.0, -1.0, 2.0], [-1.0, 1.0, 1.0]]), {"early": [0], "deep": [2]})
    figure = lens_curves(table, {"early": [0], "deep": [2]})
    ax = figure.axes[0]
    assert [list(line.get_ydata()) for line in ax.get_lines()] == [[0.5, 0.5, 1.0], [0.0, 0.5, 1.0]]
    assert len(ax.patches) == 2  # one shaded span per band
