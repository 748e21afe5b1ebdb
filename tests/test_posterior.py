"""Posteriors: priors from frequencies, argmax unchanged by temperature, fitted T hand-checked."""

from __future__ import annotations

import numpy as np
import pytest

from magicflow.experiments.posterior import fit_temperature, log_priors, posteriors


def test_log_priors_from_frequencies():
    assert np.allclose(np.exp(log_priors(np.array([0, 0, 0, 1]), 3)), [3 / 5, 1 / 5, 1 / 5])


def test_posteriors_match_a_hand_computed_softmax():
    ll = np.array([[-1000.0, -1010.0]])
    p = posteriors(ll, np.log([0.5, 0.5]), temperature=10.0)
    assert p[0, 0] == pytest.approx(1 / (1 + np.exp(-1.0)))
    assert p.sum() == pytest.approx(1.0)


def test_fitted_temperature_recovers_the_generating_one():
    rng = np.random.default_rng(0)
    true_t = 40.0
    logits = rng.normal(0, 2, size=(4000, 3))
    labels = np.array([rng.choice(3, p=np.exp(row) / np.exp(row).sum()) for row in logits])
    t = fit_temperature(logits * true_t, np.zeros(3), labels)
    assert t == pytest.approx(true_t, rel=0.1)
    p = posteriors(logits * true_t, np.zeros(3), t)
    assert (p.argmax(1) == logits.argmax(1)).all()  # temperature never changes the decision


def test_predictions_use_one_prior_row_per_training_image():
    """The diagnosis task's layout: AD images bring 9 neighbour slices each, CN images 1. At
    one AD image in seven, slice counts would give p(AD) = 9/15 = 0.60; images give 1/7."""
    import pandas as pd
    import torch

    from magicflow.experiments.infer import predictions_table
    from magicflow.experiments.data import SliceSet

    meta = pd.DataFrame({"dataset": "d", "image": ["ad"] * 9 + [f"cn{i}" for i in range(6)]})
    train = SliceSet(torch.zeros(15, 1, 2, 2), torch.tensor([1] * 9 + [0] * 6), meta)
    test_meta = pd.DataFrame({"dataset": ["d"], "subject": ["s"], "session": ["1"], "image": ["t"], "offset": [0]})
    test = SliceSet(torch.zeros(1, 1, 2, 2), torch.tensor([0]), test_meta)
    # equal likelihoods: the prior alone decides, and the posterior is the prior
    table, _ = predictions_table(
        test,
        SliceSet(torch.zeros(0, 1, 2, 2), torch.zeros(0, dtype=torch.long)),
        train,
        ["CN", "AD"],
        np.zeros((1, 2)),
        np.zeros((0, 2)),
    )
    assert table["posterior_AD"].iloc[0] == pytest.approx(1 / 7)
    assert table["predicted"].iloc[0] == "CN"


# --------------------------------------------------------------------------- issue 30.5: calibration, precision
def _set(labels: list[int], images: list[str]):
    import pandas as pd
    import torch

    from magicflow.experiments.data import SliceSet

    meta = pd.DataFrame(
        {"dataset": "d", "subject": [i.split("-")[0] for i in images], "session": "1", "image": images, "offset": 0}
    )
    return SliceSet(torch.zeros(len(labels), 1, 2, 2), torch.tensor(labels), meta)


def test_a_separable_validation_set_no_longer_drives_the_temperature_to_zero():
    # two validation images, both right by a 300-nat margin: the plain NLL is flat near 0 and
    # the fit stops at T ~ 0.06 (the value), where posteriors are exactly 1 and 0;
    # add-one targets (n + 1) / (n + K) = 3/4 give sigmoid(300 / T) = 3/4
    scores = np.array([[0.0, -300.0], [-300.0, 0.0]])
    labels = np.array([0, 1])
    plain = fit_temperature(scores, np.zeros(2), labels, smoothing=False)
    assert plain < 1 and posteriors(scores, np.zeros(2), plain)[0, 0] == 1.0
    t = fit_temperature(scores, np.zeros(2), labels)
    assert t == pytest.approx(300 / np.log(3), rel=1e-5)
    assert posteriors(scores, np.zeros(2), t)[0, 0] == pytest.approx(0.75, rel=1e-5)


def test_smoothed_targets_are_add_one():
    from magicflow.experiments.posterior import smoothed_targets

    assert np.allclose(smoothed_targets(np.array([2, 0]), 3), [[1 / 5, 1 / 5, 3 / 5], [3 / 5, 1 / 5, 1 / 5]])


def test_the_temperature_is_fitted_on_validation_images_and_applied_unchanged_to_test():
    """Validation: two images of three slices, each slice 100 nats for its class. Summed per
    image the margins are 300, so T = 300 / ln 3 = 273.07; fitted per slice (six units) it
    would be 100 / ln 7 = 51.4, and without smoothing ~0."""
    from magicflow.experiments.infer import predictions_table

    val = _set([0, 0, 0, 1, 1, 1], ["a-1"] * 3 + ["b-1"] * 3)
    val_ll = np.array([[0.0, -100.0]] * 3 + [[-100.0, 0.0]] * 3)
    train = _set([0, 1], ["c-1", "e-1"])  # one image per class: uniform prior
    test = _set([1], ["f-1"])
    test_ll = np.array([[-1000.0, -1010.0]])
    table, t = predictions_table(test, val, train, ["CN", "AD"], test_ll, val_ll)
    assert t == pytest.approx(300 / np.log(3), rel=1e-5)
    assert (table["temperature"] == t).all()
    # the test slice's posterior is softmax(ll / T) at that very T
    assert table["posterior_CN"].iloc[0] == pytest.approx(1 / (1 + np.exp(-10 / t)), rel=1e-9)
    assert table[["logprior_CN", "logprior_AD"]].iloc[0].tolist() == pytest.approx([np.log(0.5)] * 2)


def test_an_image_whose_slices_disagree_on_the_label_is_refused():
    from magicflow.errors import InputError
    from magicflow.experiments.posterior import image_index, labels_by_image

    val = _set([0, 1], ["a-1", "a-1"])
    with pytest.raises(InputError, match="validation slices: image number 0"):
        labels_by_image(val.labels.numpy(), image_index(val.meta, 2), "validation slices")


def test_images_are_summed_in_order_of_first_appearance():
    import pandas as pd

    from magicflow.experiments.posterior import image_index, sum_by_image

    meta = pd.DataFrame({"dataset": ["d", "d", "e", "d"], "image": ["b", "a", "b", "b"]})
    index = image_index(meta, 4)
    assert index.tolist() == [0, 1, 2, 0]  # the same image name in another dataset is another image
    assert sum_by_image(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]), index).tolist() == [
        [8.0, 10.0],
        [3.0, 4.0],
        [5.0, 6.0],
    ]


def test_predictions_tsv_keeps_full_precision(tmp_path):
    """At %.6g a log-likelihood of -12345.6789012345 lost its last 9 digits and a posterior
    of 1 - 1e-9 became exactly 1; written by write_predictions and read back, both survive."""
    import pandas as pd

    from magicflow.evaluate.inputs import read_predictions
    from magicflow.experiments.infer import predictions_frame, write_predictions

    test = _set([0, 1], ["a-1", "b-1"])
    ll = np.array([[-12345.6789012345, -12365.6789012345], [-1.0e4 / 3, -1.0e4 / 3 - 30]])
    post = posteriors(ll, np.zeros(2), 1.0)
    assert float(f"{post[0, 0]:.6g}") == 1.0 and float(f"{post[1, 0]:.6g}") == 1.0  # what the old file held
    table = predictions_frame(test, ["CN", "AD"], ll, post, ll.argmax(1), 1.0)
    write_predictions(table, tmp_path / "predictions.tsv")
    back = read_predictions(tmp_path / "predictions.tsv")
    assert back[["loglik_CN", "loglik_AD"]].to_numpy().tolist() == ll.tolist()
    assert back[["posterior_CN", "posterior_AD"]].to_numpy().tolist() == post.tolist()
    assert back["posterior_CN"].iloc[0] < 1.0 and back["posterior_CN"].iloc[1] < 1.0
    assert isinstance(back, pd.DataFrame) and list(back["logprior_CN"]) == [0.0, 0.0]
