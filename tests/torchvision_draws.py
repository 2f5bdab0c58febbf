"""The exact distributions of the official augmentations' random draws, and the tests that compare
samples with them.

Each distribution is derived from the code the official pipelines call: torchvision's
RandomResizedCrop.get_params (LA-Net's augment.py draws the same with Python's `random`),
RandomErasing (its p coin, then get_params), ColorJitter.get_params, RandomCrop.get_params, and
FixMatch's RandAugmentMC and CutoutAbs. A sample passes when its test's p-value is at least
P_MIN, about 5 sigma: a correct sampler fails once in a million seeds, and a range, bound or
probability a few percent off fails at the sample sizes of tests/test_device_ops.py.
"""

import math

import numpy as np
from scipy import stats

P_MIN = 1e-6


def box_try(h, w, scale, ratio, points_per_pixel=1000):
  """One try of torchvision's box draw on an h x w image: area A ~ U(scale) h w and log-aspect
  log r ~ U(log ratio), sides round(sqrt(A r)) and round(sqrt(A / r)).

  Returns P[a, b] = P(round(sqrt(A r)) = a, round(sqrt(A / r)) = b). With p = sqrt(A r) and
  q = sqrt(A / r), (A, log r) has the Jacobian 2 in (p, q), so (p, q) is uniform with density
  2 / (h w (scale[1] - scale[0]) log(ratio[1] / ratio[0])) over {scale h w <= p q, ratio <= p / q};
  each cell's area of that region is integrated over p (midpoint rule) with the exact q range.
  """
  a_lo, a_hi = scale[0] * h * w, scale[1] * h * w
  density = 2.0 / ((a_hi - a_lo) * math.log(ratio[1] / ratio[0]))
  top = math.ceil(math.sqrt(a_hi * ratio[1]) + 0.5)
  n = top * points_per_pixel
  p = (np.arange(n) + 0.5) / points_per_pixel
  q_lo = np.maximum(a_lo / p, p / ratio[1])
  q_hi = np.minimum(a_hi / p, p / ratio[0])
  side = max(math.ceil(math.sqrt(a_hi / ratio[0]) + 0.5), h, w) + 1
  b = np.arange(side)
  overlap = np.clip(np.minimum(q_hi[:, None], b + 0.5) - np.maximum(q_lo[:, None], b - 0.5), 0,
                    None)
  cell = np.floor(p + 0.5).astype(int)  # round(p); ties have measure zero
  starts = np.flatnonzero(np.diff(cell, prepend=-1))
  out = np.zeros((max(top, h, w) + 1, side))
  out[cell[starts]] = np.add.reduceat(overlap, starts, axis=0)
  return out * density / points_per_pixel


def crop_sizes(h, w, scale, ratio):
  """RandomResizedCrop.get_params: P[height, width] of the crop. The first of 10 tries whose box
  fits (0 < width <= w, 0 < height <= h); if none does, the centre crop of the nearest allowed
  aspect."""
  t = box_try(h, w, scale, ratio)  # t[width, height]
  out = np.zeros((h + 1, w + 1))
  fit = t[1 : w + 1, 1 : h + 1].T
  f = fit.sum()
  out[1:, 1:] = fit * (1 - (1 - f) ** 10) / f
  out[centre_crop(h, w, ratio)] += (1 - f) ** 10
  return out


def centre_crop(h, w, ratio):
  """get_params' fallback: (height, width) of the centre crop of the nearest allowed aspect."""
  if w / h < ratio[0]:
    return round(w / ratio[0]), w
  if w / h > ratio[1]:
    return h, round(h * ratio[1])
  return h, w


def erasing_sizes(h, w, scale, ratio, p):
  """RandomErasing: P[height, width] of the erased box, [0, 0] for none. With probability p, the
  first of 10 tries with height < h and width < w (height = round(sqrt(A r))); none fits: the
  image is returned unchanged."""
  t = box_try(h, w, scale, ratio)  # t[height, width]
  out = np.zeros((h, w))
  fit = t[:h, :w]
  f = fit.sum()
  out += p * fit * (1 - (1 - f) ** 10) / f
  out[0, 0] += 1 - p + p * (1 - f) ** 10
  return out


def cutout_corner(n, size):
  """CutoutAbs: P[c] of the corner c = int(max(0, U(0, n) - size / 2)) along an axis of n."""
  c = np.arange(n)
  lo = np.maximum(c + size / 2, 0.0)
  hi = np.minimum(c + 1 + size / 2, n)
  lo[0] = 0.0
  return np.clip(hi - lo, 0, None) / n


def chi_square(counts, probs):
  """The p-value of counts against probs (same shape), cells expecting under 5 pooled; counts
  where the probability is 0 fail outright (a value outside the support)."""
  counts, probs = np.ravel(counts).astype(float), np.ravel(probs)
  outside = counts[probs <= 0].sum()
  if outside:
    return 0.0
  expected = probs * counts.sum() / probs.sum()
  small = expected < 5
  e = np.append(expected[~small], expected[small].sum())
  c = np.append(counts[~small], counts[small].sum())
  if e[-1] < 5:  # merge the pooled remainder into the smallest kept cell
    i = np.argmin(e[:-1])
    e[i], c[i] = e[i] + e[-1], c[i] + c[-1]
    e, c = e[:-1], c[:-1]
  stat = ((c - e) ** 2 / e).sum()
  return float(stats.chi2.sf(stat, len(e) - 1))


def categorical(values, probs):
  """The chi-square p-value of integer samples (any shape: cells index probs' axes, on the last
  axis of `values`) against probs; 0 if a sample lies outside probs' shape."""
  values = np.asarray(values).reshape(-1, np.ndim(probs))
  if ((values < 0) | (values >= np.shape(probs))).any():
    return 0.0
  counts = np.zeros(np.shape(probs))
  np.add.at(counts, tuple(values.T), 1)
  return chi_square(counts, probs)


def box_sizes(sizes, probs, cell):
  """p-values of (height, width) samples against probs[height, width]: the joint chi-square,
  each side's marginal, and the binomial test of `cell` (the fallback box, or no box), whose
  rate one probability or the number of tries sets."""
  sizes = np.asarray(sizes)
  hits = (sizes == np.asarray(cell)).all(axis=1).sum()
  return [categorical(sizes, probs), categorical(sizes[:, 0], probs.sum(1)),
          categorical(sizes[:, 1], probs.sum(0)), binomial(hits, len(sizes), probs[cell])]


def uniform_offsets(offsets, counts, seed=0):
  """The KS p-value of offsets, each uniform on 0..counts - 1 (counts may differ per sample): the
  randomised (offset + U) / count is U(0, 1) exactly then."""
  offsets, counts = np.asarray(offsets), np.asarray(counts)
  if ((offsets < 0) | (offsets >= counts)).any():
    return 0.0
  u = (offsets + np.random.default_rng(seed).random(offsets.shape)) / counts
  return float(stats.kstest(u, "uniform").pvalue)


def binomial(successes, n, p):
  return float(stats.binomtest(int(successes), int(n), p).pvalue)


def ks(samples, cdf, *args):
  return float(stats.kstest(np.ravel(samples), cdf, args=args).pvalue)
