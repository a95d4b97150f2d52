"""The domain check: input checks on every model, a feature distance to the training set where there is one."""

from __future__ import annotations

import numpy as np
import pytest

from _cards import write_card
from napari_segxai.core.case import Case
from napari_segxai.core.model.card import build_network
from napari_segxai.core.model.domain import DomainCheck, PERCENTILES, check_domain, silent_voxels
from napari_segxai.core.model.domain_reference import (DomainReference, case_summary, deepest_layer,
                                                        knn_distances, lesion_confidence)
from napari_segxai.core.model.loading import load_model_card


def _case(seed=0, shape=(16, 16, 16), border=3, scale=1.0) -> Case:
    rng = np.random.default_rng(seed)
    channels = np.zeros((2, *shape), np.float32)
    inside = (slice(border, -border),) * 3
    for c in range(2):
        channels[c][inside] = scale * rng.uniform(1.0, 2.0, (shape[0] - 2 * border,) * 3) * (c + 1)
    return Case(channels, ("flair", "t1"), np.diag([2.0, 2.0, 2.0, 1.0]), name=f"case{seed}")


@pytest.fixture
def card(tmp_path):
    return load_model_card(write_card(tmp_path / "model"))


def test_verdict_reads_as_a_sentence():
    good = DomainCheck((), ("head: 1 mL",), distance=0.5, threshold=1.0)
    assert good.in_distribution and good.describe() == "in distribution (feature distance 0.50, threshold 1.00)"
    bad = DomainCheck(("almost no signal",), (), note="no training record: input checks only")
    assert bad.verdict == "out of distribution: almost no signal"
    assert bad.describe().endswith("(no training record: input checks only)")


def test_silent_voxels_are_zero_or_minimum_in_every_channel():
    channels = np.array([[0.0, -1.0, 3.0, 0.0], [0.0, 0.0, 0.0, 2.0]])
    assert silent_voxels(channels).tolist() == [True, True, False, False]


def test_nearest_neighbour_distance_grows_away_from_the_training_cases():
    train = np.random.default_rng(0).normal(size=(20, 6))
    near, far = train[3] + 0.01, train[3] + 10.0
    distances = knn_distances(train, np.stack([near, far]))
    assert distances[0] < distances[1]
    assert knn_distances(train, train, leave_out_self=True).shape == (20,)


def test_without_a_training_record_only_the_input_checks_run(card):
    check = check_domain(_case(), card, device="cpu")
    assert check.in_distribution and check.distance is None
    assert "input checks only" in check.describe()
    empty = _case(border=7)  # a 2-voxel cube of signal in 4096 voxels
    empty.channels[:, 7:9, 7:9, 7:9] = 0
    empty.channels[:, 8, 8, 8] = 1.0
    flagged = check_domain(empty, card, device="cpu")
    assert not flagged.in_distribution and "almost no signal" in flagged.verdict


def test_feature_distance_and_intensities_against_a_reference(card):
    network = build_network(card, "cpu")
    layer = deepest_layer(network, card, "cpu")
    rows = [case_summary(_case(seed), card, network, layer, "cpu") for seed in range(6)]
    features = np.stack([r[0] for r in rows])
    reference = _reference(rows, calibration=knn_distances(features, features, leave_out_self=True), threshold=0.0,
                           layer=layer)
    assert reference.percentiles.shape == (6, 2, len(PERCENTILES))
    for lesions in (reference.lesions, reference.largest, reference.focality):  # cases without labels: no lesions
        assert np.isnan(lesions).all()
    alike = check_domain(_case(10), card, network=network, device="cpu",
                         reference=DomainReference(**{**reference.__dict__, "threshold": 1e9}))
    assert alike.in_distribution and alike.distance is not None
    unlike = check_domain(_case(11, border=1), card, network=network, device="cpu", reference=reference)
    assert not unlike.in_distribution and "mL" in unlike.verdict  # a head far larger than the training cases'


def test_reference_round_trips_through_its_file(tmp_path):
    reference = DomainReference(features=np.ones((3, 4), np.float32), percentiles=np.zeros((3, 2, 3), np.float32),
                                volumes=np.array([1.0, 2.0, 3.0]), lesions=np.array([4.0, np.nan, 6.0]),
                                largest=np.array([3.0, np.nan, 6.0]), focality=np.array([0.75, np.nan, 1.0]),
                                calibration=np.array([0.1, 0.2]), threshold=0.22, layer="model.1.conv",
                                confidence=np.array([0.8, np.nan]))
    again = DomainReference.load(reference.save(tmp_path / "domain.npz"))
    assert again.layer == "model.1.conv" and again.threshold == pytest.approx(0.22)
    np.testing.assert_array_equal(again.features, reference.features)
    for name in ("lesions", "largest", "focality", "confidence"):
        np.testing.assert_array_equal(getattr(again, name), getattr(reference, name))


def test_a_predicted_lesion_unlike_the_training_lesions_is_flagged(card):
    from napari_segxai.core.model.inference import segment

    network = build_network(card, "cpu")
    layer = deepest_layer(network, card, "cpu")
    labelled = []
    for seed, side in enumerate((2, 3, 4)):   # training lesions of 8, 27 and 64 voxels of 8 mm^3: 0.064-0.512 mL
        case = _case(seed)
        label = np.zeros(case.channels.shape[1:], np.int16)
        label[6:6 + side, 6:6 + side, 6:6 + side] = 1
        labelled.append(Case(case.channels, case.modalities, case.affine, label=label, name=case.name))
    rows = [case_summary(c, card, network, layer, "cpu") for c in labelled]
    assert [r[3] for r in rows] == [pytest.approx((v, v, 1.0)) for v in (0.064, 0.216, 0.512)]  # one part each
    reference = _reference(rows, calibration=np.zeros(1), threshold=1e9, layer=layer)
    case = _case(10)
    seg = segment(case, card, network=network, device="cpu")

    def check(voxels, parts=1):
        """A predicted lesion of ``voxels`` in one run of voxels, or in ``parts`` runs of it two voxels apart."""
        labels = np.zeros_like(seg.labels)
        for part in range(parts):
            labels[2 * part].reshape(-1)[:voxels] = 1
        return check_domain(case, card, network=network, device="cpu", reference=reference,
                            segmentation=type(seg)(**{**seg.__dict__, "labels": labels}))

    assert check(27).in_distribution
    assert "predicted lesion: 0.2 mL in 1 connected part(s), the largest 0.2 mL (100%)" in check(27).measurements
    none = check(0)
    assert not none.in_distribution and "no lesion predicted, and every training case had one" in none.verdict
    tiny, huge = check(2), check(200)   # 0.016 mL < 0.064 / 2; 1.6 mL > 0.512 x 2
    assert "the largest predicted lesion is 0.0 mL, the training cases' 0.1 to 0.5 mL: the model was not trained on " \
           "lesions this small" in tiny.verdict
    assert not huge.in_distribution and "1.6 mL" in huge.verdict and "this large" in huge.verdict
    assert check(27, parts=2).in_distribution  # two equal masses: half in the largest, as half of the training 100%
    scattered = check(27, parts=3)             # three: a third in the largest
    assert "the predicted lesion is scattered over 3 separate parts, the largest holding 33% of it, while each " \
           "training case's lesion was one main mass (at least 100% in its largest part): the model was not trained " \
           "on scattered lesions" in scattered.verdict and "this small" not in scattered.verdict


def test_lesion_confidence_is_the_share_of_the_lesion_the_model_is_sure_of():
    labels = np.array([0, 1, 2, 2, 1])
    softmax = np.array([[0.9, 0.05, 0.5, 0.02, 0.1],    # background
                        [0.05, 0.9, 0.2, 0.49, 0.45],
                        [0.05, 0.05, 0.3, 0.49, 0.45]])
    assert lesion_confidence(softmax, labels, "softmax") == pytest.approx(3 / 4)  # 0.95, 0.5, 0.98, 0.9 lesion
    assert np.isnan(lesion_confidence(softmax, np.zeros(5, int), "softmax"))
    regions = np.array([[0.1, 0.95, 0.95, 0.6, 0.3],     # nested sigmoid regions: the surest one counts
                        [0.0, 0.20, 0.91, 0.5, 0.95]])
    assert lesion_confidence(regions, labels, "sigmoid") == pytest.approx(3 / 4)


def test_a_lesion_the_model_is_unsure_of_is_flagged(card):
    from napari_segxai.core.model.inference import segment

    network = build_network(card, "cpu")
    layer = deepest_layer(network, card, "cpu")
    case = _case(10)
    rows = [case_summary(case, card, network, layer, "cpu")]
    reference = _reference(rows, calibration=np.zeros(1), threshold=1e9, layer=layer,
                           confidence=np.array([0.9, 0.8, np.nan]))
    seg = segment(case, card, network=network, device="cpu")
    labels = np.zeros_like(seg.labels)
    labels[6:10, 6:10, 6:10] = 1                        # 64 lesion voxels

    def check(sure_voxels, reference=reference):
        probabilities = np.zeros((2, *labels.shape), np.float32)
        probabilities[0] = 0.6                          # lesion probability 0.4: unsure
        probabilities[0].reshape(-1)[np.flatnonzero(labels)[:sure_voxels]] = 0.05
        probabilities[1] = 1 - probabilities[0]
        segmentation = type(seg)(**{**seg.__dict__, "labels": labels, "probabilities": probabilities})
        return check_domain(case, card, network=network, device="cpu", reference=reference, segmentation=segmentation)

    sure = check(26)                                    # 41% >= half of 80%
    assert sure.in_distribution, sure.describe()
    assert "the model is sure (lesion probability at least 90%) of 41% of the predicted lesion" in sure.measurements
    unsure = check(25)                                  # 39%
    assert not unsure.in_distribution
    assert ("the model is sure (lesion probability at least 90%) of only 39% of the predicted lesion, and of at least "
            "80% on each case it was calibrated on: a finding it is this unsure of may be of a kind it was not "
            "trained on") in unsure.verdict
    older = DomainReference(**{**reference.__dict__, "confidence": np.zeros(0)})
    assert check(0, older).in_distribution   # a reference made before confidence was kept: not checked


def _reference(rows, **fields) -> DomainReference:
    """A reference from :func:`case_summary` rows."""
    lesions = np.array([r[3] for r in rows], dtype=float)
    return DomainReference(features=np.stack([r[0] for r in rows]), percentiles=np.stack([r[1] for r in rows]),
                           volumes=np.array([r[2] for r in rows]), lesions=lesions[:, 0], largest=lesions[:, 1],
                           focality=lesions[:, 2], **fields)


@pytest.mark.slow
def test_bundled_model_flags_the_ms_case_and_passes_a_generated_tumour(realdata):
    from napari_segxai.core.io.nifti import load_case
    from napari_segxai.core.model.card import default_model_card
    from napari_segxai.core.model.inference import segment
    from napari_segxai.core.training.evaluate import HELD_OUT_SEED_START
    from napari_segxai.core.training.synth import generate_case

    card = default_model_card()
    network = build_network(card, "cpu")

    def check(case):
        return check_domain(case, card, network=network, device="cpu",
                            segmentation=segment(case, card, network=network, device="cpu"))

    # a held-out generated tumour the model segments as one mass (benchmarks/domain.py counts those it does not)
    tumour = check(generate_case(HELD_OUT_SEED_START + 12).case)
    assert tumour.in_distribution, tumour.describe()
    ms = check(load_case(realdata / "open_ms_patient19"))  # it finds a plaque or two and is unsure of them
    assert not ms.in_distribution and "may be of a kind it was not trained on" in ms.verdict, ms.describe()


def test_the_reference_keeps_the_models_confidence_on_held_out_generated_cases(tmp_path, monkeypatch):
    from _influence import toy_model
    from napari_segxai.core.model.domain_reference import CALIBRATION_CASES, build_reference
    from napari_segxai.core.model.inference import segment
    from napari_segxai.core.training.evaluate import HELD_OUT_SEED_START
    from napari_segxai.core.training.synth import generate_case

    monkeypatch.setenv("SEGXAI_TRAINING_CASES", str(tmp_path / "cases"))
    card = load_model_card(toy_model(tmp_path / "toy"))
    network = build_network(card, "cpu")
    reference = build_reference(card, network=network, device="cpu")
    assert reference.confidence.shape == (CALIBRATION_CASES,) and np.isfinite(reference.confidence).all()
    for i in (0, CALIBRATION_CASES - 1):   # the segmentation of held-out seed i, as check_domain measures a case's
        seg = segment(generate_case(HELD_OUT_SEED_START + i, size="toy").case, card, network=network, device="cpu")
        expected = lesion_confidence(seg.probabilities, seg.labels, card.activation)
        np.testing.assert_allclose(reference.confidence[i], expected)
