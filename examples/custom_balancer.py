"""A balancing method of your own, registered in a few lines and used by name.

Run: python examples/custom_balancer.py   (a few seconds on a CPU)

The method here weights each task by its share of the summed loss, computed
without gradient (a "loss-proportional" rule, for illustration): w_t = L_t /
sum_j L_j over the tasks labelled in the batch. A method whose update is the
gradient of one weighted sum of the losses subclasses
`mtl_tf.balancers.base.LossWeightingBalancer` and writes `objective` only; the
base class takes the gradients, and `MultiTaskModel` applies them and logs
`{task}_weight`. Methods that need per-task gradients implement
`compute_update` instead (see `mtl_tf/balancers/base.py` for the contract and
`mtl_tf/balancers/mgda.py` for an example).

`@register("loss_share")` makes the name known to `mtl_tf.balancers.get`,
`MultiTaskModel(balancer="loss_share")` and `.keras` loading; options are the
constructor's keyword arguments (`mtl_tf.balancers.option_names` lists them).
"""

import keras
import numpy as np
from keras import ops

import mtl_tf
from mtl_tf.balancers.base import LossWeightingBalancer, mask_weights


@mtl_tf.balancers.register("loss_share")
class LossShare(LossWeightingBalancer):
    """Weights w_t = L_t^power / sum_j L_j^power over the labelled tasks (constants for autodiff).

    Args:
      power: exponent on the losses; 0 gives uniform weights, 1 (default) the losses' shares.

    Loss range: non-negative. The weights are shares of the losses: a negative loss would get a
    negative weight, so its task would climb. A loss of exactly 0 gets weight 0.
    """

    simplex_weights = True  # the logged weights sum to one
    loss_range = "non_negative"  # shares of the losses mean nothing for a negative loss

    def __init__(self, power=1.0, **kwargs):
        super().__init__(**kwargs)
        self.power = float(power)

    def objective(self, problem, losses):
        # `losses` are the T unscaled task losses of this replica's batch; the
        # weights come from the global batch, so every replica applies the same
        # update, and the tasks without labels in the batch get weight 0.
        shares = ops.stop_gradient(problem.global_losses(ops.unstack(losses))) ** self.power
        shares = mask_weights(shares, problem.task_mask)
        weights = shares / ops.maximum(ops.sum(shares), 1e-12)
        return ops.sum(weights * losses), weights

    def get_config(self):  # what a `.keras` file stores to rebuild the balancer
        return {**super().get_config(), "power": self.power}


def main():
    print("registered methods:", mtl_tf.balancers.available())
    print("options of loss_share:", mtl_tf.balancers.option_names("loss_share"))

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    # Two regression tasks on different scales: the larger loss gets the larger weight.
    y = {"small": x[:, :1] * 0.1, "large": x[:, 1:2] * 3.0}

    model = mtl_tf.MultiTaskModel(
        encoder=keras.Sequential([keras.layers.Dense(16, activation="relu")]),
        heads={"small": keras.layers.Dense(1), "large": keras.layers.Dense(1)},
        losses={"small": "mse", "large": "mse"},
        balancer="loss_share",
        balancer_options={"power": 1.0},
    )
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    history = model.fit(x, y, batch_size=64, epochs=2, verbose=0)
    weights = {t: history.history[f"{t}_weight"][-1] for t in model.task_names}
    losses = {t: history.history[f"{t}_loss"][-1] for t in model.task_names}
    print("last-step weights:", {t: round(w, 3) for t, w in weights.items()})
    print("epoch losses:     ", {t: round(v, 3) for t, v in losses.items()})
    assert weights["large"] > weights["small"], "the task with the larger loss should weigh more"


if __name__ == "__main__":
    main()
