"""The embedded synthetic dataset: deterministic, fixed split, sane landmarks."""

import ml_collections as mlc
import numpy as np

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
