"""Several augmented views of a batch through the network as one batched pass.

The official EAC and NCCTFER steps run their two views as two successive train-mode forward
passes: each view is normalised with its own batch statistics and the BatchNorm running
statistics are updated twice. `apply_views` interleaves the views (row = sample * views +
view, which keeps each sample's views on the device that holds the sample) and runs them
once with `views=len(images)`, which resnet.BatchNorm normalises and updates per view, so the
outputs, gradients and running statistics equal those of the successive passes while the
accelerator sees one batch of twice the size.
"""

import jax
import jax.numpy as jnp


def apply_views(model, variables, images, **kwargs):
  """Runs `model.apply(variables, x, train=True, views=V)` over the V `images` at once.

  Returns:
    ([(logits, features) of each view, in the order of `images`], mutated collections).
  """
  views = len(images)
  batch = images[0].shape[0]
  x = jnp.stack(images, 1).reshape(batch * views, *images[0].shape[1:])
  (logits, feats), mutated = model.apply(variables, x, train=True, views=views,
                                         mutable=["batch_stats"], **kwargs)
  outputs = jax.tree.map(lambda y: y.reshape(batch, views, *y.shape[1:]), (logits, feats))
  return [jax.tree.map(lambda y, v=v: y[:, v], outputs) for v in range(views)], mutated
