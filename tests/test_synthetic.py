"""The embedded synthetic dataset: deterministic, fixed split, sane landmarks."""

import ml_collections as mlc
import numpy as np
import pytest

from fer_jax.data import sources, synthetic


def test_generation_is_deterministic_and_balanced_like_raf_db():
  a_img, a_lab, a_lm = synthetic.generate(70, seed=3)
  b_img, b_lab, b_lm = synthetic.generate(70, seed=3)
  np.testing.assert_array_equal(a_img, b_img)
  np.testing.assert_array_equal(a_lab, b_lab)
  np.testing.assert_array_equal(a_lm, b_lm)
  assert not np.array_equal(a_img, synthetic.generate(70, seed=4)[0])
  counts = synthetic.class_counts(3000)
  assert counts.sum() == 3000
  # Happiness most frequent, fear least, as in RAF-DB.
  assert counts.argmax() == 3 and counts.argmin() == 1
  np.testing.assert_array_equal(np.bincount(a_lab, minlength=7), synthetic.class_counts(70))


def test_landmarks_lie_inside_the_face_in_aflw_order():
  _, _, lm = synthetic.generate(50, seed=0)
  assert lm.shape == (50, 19, 2)
  # Pose jitter may push the chin just past the border, as in real face crops.
  assert ((lm > 0) & (lm < 64)).mean() > 0.99 and (lm > -8).all() and (lm < 72).all()
  # Left brow/eye points are image-left of the right ones; brows above eyes above mouth above chin.
  assert (lm[:, 0, 0] < lm[:, 5, 0]).all() and (lm[:, 6, 0] < lm[:, 11, 0]).all()
  assert (lm[:, 1, 1] < lm[:, 7, 1]).mean() > 0.95
  assert (lm[:, 16, 1] < lm[:, 18, 1]).all()


def test_load_caches_a_fixed_train_test_split(tmp_path):
  c = mlc.ConfigDict(dict(name="synthetic", num_train=30, num_test=12, image_size=32, seed=0,
                          cache_dir=str(tmp_path)))
  first = sources.load(c)
  assert len(list(tmp_path.iterdir())) == 1
  second = sources.load(c)
  np.testing.assert_array_equal(first.train.store.images, second.train.store.images)
  assert len(first.train) == 30 and len(first.test) == 12
  # Train and test images come from disjoint draws.
  flat_train = first.train.store.images.reshape(30, -1)
  assert not any((flat_train == t.reshape(1, -1)).all(1).any() for t in first.test.store.images)
  record = first.train[5]
  assert record["image"].shape == (32, 32, 3) and record["index"] == 5
  assert record["landmarks"].shape == (19, 2)


def test_identity_task_labels_people_seen_in_both_splits(tmp_path):
  c = mlc.ConfigDict(dict(name="synthetic", num_train=20, num_test=10, image_size=32, seed=1,
                          cache_dir=str(tmp_path), class_order="", task="identity",
                          num_identities=5))
  data = sources.load(c)
  assert data.class_names == tuple(f"person_{j:04d}" for j in range(5))
  np.testing.assert_array_equal(data.train.labels, np.arange(20) % 5)
  np.testing.assert_array_equal(data.test.labels, np.arange(10) % 5)
  # A person keeps their proportions whatever the expression, pose and scale: eye distance
  # over eye-to-chin height (AFLW points 7 and 10 are the eye centres, 18 the chin).
  def proportion(identity, label, seed):
    lm = synthetic.draw_face(label, np.random.default_rng(seed), 64, identity=identity)[1]
    eyes = (lm[7] + lm[10]) / 2
    return np.linalg.norm(lm[7] - lm[10]) / np.linalg.norm(lm[18] - eyes)

  alice, bob = (synthetic.draw_identity(np.random.default_rng(s)) for s in (0, 1))
  assert proportion(alice, 3, 1) == pytest.approx(proportion(alice, 0, 2), rel=1e-4)
  assert proportion(alice, 3, 1) != pytest.approx(proportion(bob, 3, 1), rel=1e-2)
  with pytest.raises(ValueError, match="num_identities=1"):
    sources.load(mlc.ConfigDict({**c.to_dict(), "num_identities": 1}))
  with pytest.raises(ValueError, match="task='identities'"):
    sources.load(mlc.ConfigDict({**c.to_dict(), "task": "identities"}))
