"""Each attack's two halves by hand, and the harness that applies them."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest

import fedloom as fl
from fedloom.attacks import (
    AttackedExecutor,
    Backdoor,
    GaussianNoise,
    InnerProduct,
    LabelFlip,
    LittleIsEnough,
    RoundView,
    Scaling,
    SignFlip,
    malicious_clients,
    poisoned,
)
from fedloom.core.messages import Broadcast, ClientResult
from fedloom.data import ClientData
from fedloom.engine.rounds import client_seed
from fedloom.engine.tasks import EvaluateTask, TrainTask
from fedloom.executors import make_executor

OWN = np.array([1.0, -2.0, 0.5], dtype=np.float32)
BENIGN = np.array([[1.0, 0.0, 2.0], [3.0, 2.0, 2.0], [2.0, 4.0, 2.0]], dtype=np.float32)
VIEW = RoundView(OWN, BENIGN, cohort=5, attackers=2)
RNG = np.random.default_rng(0)


def test_update_attacks_by_hand() -> None:
    np.testing.assert_array_equal(SignFlip(scale=1.0).forge(VIEW, RNG), [-1.0, 2.0, -0.5])
    np.testing.assert_array_equal(SignFlip().forge(VIEW, RNG), [-4.0, 8.0, -2.0])
    np.testing.assert_array_equal(Scaling(factor=3.0).forge(VIEW, RNG), [3.0, -6.0, 1.5])
    # IPM: −ε · mean(benign) = −0.5 · (2, 2, 2)
    np.testing.assert_array_equal(InnerProduct(epsilon=0.5).forge(VIEW, RNG), [-1.0, -1.0, -1.0])


def test_little_is_enough_follows_the_paper() -> None:
    # n = 5, f = 2: s = ⌊5/2 + 1⌋ − 2 = 1, z = Φ⁻¹((5 − 1)/5) = Φ⁻¹(0.8) ≈ 0.8416
    attack = LittleIsEnough()
    z = NormalDist().inv_cdf(0.8)
    assert attack.z_for(5, 2) == pytest.approx(z)
    # mean (2, 2, 2); population std (√(2/3), √(8/3), 0)
    expected = np.array([2 - z * np.sqrt(2 / 3), 2 - z * np.sqrt(8 / 3), 2.0])
    np.testing.assert_allclose(attack.forge(VIEW, RNG), expected, rtol=1e-6)
    np.testing.assert_allclose(LittleIsEnough(z=1.0).forge(VIEW, RNG)[2], 2.0)


def test_gaussian_noise_has_the_asked_spread() -> None:
    view = RoundView(np.zeros(20000, np.float32), BENIGN[:, :1], 5, 1)
    noise = GaussianNoise(sigma=3.0).forge(view, np.random.default_rng(1))
    assert abs(float(noise.std()) - 3.0) < 0.1
    assert abs(float(noise.mean())) < 0.1


def client(n: int = 10) -> ClientData:
    x = np.arange(n * 4, dtype=np.float32).reshape(n, 4)
    y = np.arange(n) % 3
    return ClientData(7, x, y, x[:2], y[:2])


def test_label_flip_reverses_the_classes_of_the_training_split_only() -> None:
    c = client()
    flipped = LabelFlip().poison(c, 3, seed=0)
    np.testing.assert_array_equal(flipped.y_train, 2 - c.y_train)
    np.testing.assert_array_equal(flipped.y_test, c.y_test)
    with pytest.raises(ValueError, match="classification"):
        LabelFlip().poison(c, None, seed=0)


def test_backdoor_adds_stamped_copies_labelled_with_the_target() -> None:
    c = client(10)
    attack = Backdoor(target=1, trigger=(0, 3), value=99.0, poisoned=0.3)
    out = attack.poison(c, 3, seed=0)
    assert out.num_train == 13
    np.testing.assert_array_equal(out.x_train[:10], c.x_train)
    extra = out.x_train[10:]
    np.testing.assert_array_equal(extra[:, [0, 3]], np.full((3, 2), 99.0))
    assert set(out.y_train[10:].tolist()) == {1}
    # each stamped copy is an original row with only the trigger changed
    for row in extra:
        matches = [o for o in c.x_train if np.array_equal(o[[1, 2]], row[[1, 2]])]
        assert len(matches) == 1
    assert np.array_equal(attack.forge(RoundView(OWN, BENIGN, 5, 1), RNG), 5 * OWN)
    with pytest.raises(ValueError, match="target=5 must be a class"):
        Backdoor(target=5).poison(c, 3, seed=0)


def test_backdoor_accuracy_counts_non_target_inputs_sent_to_the_target() -> None:
    # A softmax model whose only weight is on feature 0: class 1 iff feature 0 is large.
    model = fl.SoftmaxRegression(features=2, classes=2)
    weight = np.array([[0.0, 1.0], [0.0, 0.0]], dtype=np.float32)  # (features, classes)
    params = model.layout.flatten({"weight": weight, "bias": np.zeros(2, np.float32)})
    x = np.array([[0.0, 0.0], [0.0, 1.0], [5.0, 0.0]], dtype=np.float32)
    y = np.array([0, 0, 1])
    # Inputs of class 0 stamped with feature 0 = 10 are classified 1; the class-1 row is skipped.
    assert Backdoor(target=1, trigger=(0,), value=10.0).accuracy(model, params, x, y) == 1.0
    assert Backdoor(target=1, trigger=(1,), value=10.0).accuracy(model, params, x, y) == 0.0


def test_malicious_clients_are_a_seeded_share_of_the_population() -> None:
    chosen = malicious_clients(20, 0.2, seed=3)
    assert len(chosen) == 4
    assert chosen <= set(range(20))
    assert malicious_clients(20, 0.2, seed=3) == chosen
    assert malicious_clients(20, 0.0, seed=3) == frozenset()
    with pytest.raises(ValueError, match="fraction must be in"):
        malicious_clients(20, 1.5, seed=0)


def test_the_harness_forges_only_the_malicious_clients_replies() -> None:
    data = fl.data.digits().split(fl.data.iid(), clients=6, seed=0)
    work = fl.local_sgd(fl.SoftmaxRegression(features=64, classes=10), lr=0.1, epochs=1)
    program = fl.fedavg(work).client
    params = work.model.init(0)
    tasks = [TrainTask(c, Broadcast(0, params, client_seed(0, 0, c))) for c in range(6)]
    honest = make_executor("inprocess", program, data.clients).run(tasks)
    bad = frozenset({1, 4})
    clients = poisoned(data, SignFlip(), bad, seed=0)
    attacked = AttackedExecutor(
        make_executor("inprocess", program, clients), SignFlip(), bad, seed=0
    )
    replies = attacked.run(tasks)
    for c, (h, a) in enumerate(zip(honest, replies, strict=True)):
        assert isinstance(h, ClientResult)
        assert isinstance(a, ClientResult)
        expected = -4 * h.update if c in bad else h.update
        np.testing.assert_allclose(a.update, expected, rtol=1e-6)
    evaluation = attacked.run([EvaluateTask(1, params)])
    assert len(evaluation) == 1
    assert not isinstance(evaluation[0], ClientResult)
