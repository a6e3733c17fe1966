"""The bound on learnt log loss-scales (uncertainty's log-variances, IMTL-L's log-scales).

Both objectives learn a per-task scale s_t in log space: Kendall et al.'s
c_t exp(-s_t) L_t + s_t / 2, IMTL-L's exp(s_t) L_t - s_t. Their gradient in
s_t is 1/2 - c_t exp(-s_t) L_t (uncertainty) and exp(s_t) L_t - 1 (IMTL-L):
with a loss that stays at exactly 0 (a fitted auxiliary task, a hinge at its
margin) it is a constant, so s_t moves by the learning rate every step
without bound until exp overflows float32 at |s_t| = 88.7 (89 steps of IMTL-L
and 178 of uncertainty at SGD(1.0), about 88,700 under Adam(1e-3)) and
training stops on a non-finite loss.

Rule (a deviation from both papers, whose s_t are unbounded): the weight
exp(+-s_t) stays at most exp(LOG_SCALE_BOUND) = exp(10) = 22,026, i.e.
uncertainty's s_t >= -10 and IMTL's s_t <= 10, kept by a Keras constraint
(the optimizer projects s_t back onto the bound after each step: projected
gradient descent on the bounded set). Why 10: the weight is representable
in float16 (largest 65,504) with a margin of about 3 for the product with a
loss of order 1 under `mixed_float16`, and the bound only binds where the
paper's own fixed point is beyond it. At the fixed point of the unbounded
objectives the weight is 1/(2 L_t) (uncertainty, c_t exp(-s_t) = 1/(2 L_t))
and 1/L_t (IMTL-L), so the bound changes nothing for a task whose loss stays
above 1/(2 c_t e^10) = 2.3e-5 (classification) or 4.5e-5 (regression) for
uncertainty and e^-10 = 4.5e-5 for IMTL-L; below that the task keeps the
bounded weight e^10 (c_t e^10 for uncertainty) instead of diverging.
"""

import keras

#: The largest |s_t| on the side that runs away: the loss weight stays <= e^10 = 22,026.
LOG_SCALE_BOUND = 10.0


@keras.saving.register_keras_serializable(package="mtl_tf")
class LogScaleBound(keras.constraints.Constraint):
    """Clips a log-scale variable to [lower, upper] (None: unbounded on that side)."""

    def __init__(self, lower=None, upper=None):
        self.lower = lower
        self.upper = upper

    def __call__(self, w):
        if self.lower is not None:
            w = keras.ops.maximum(w, keras.ops.cast(self.lower, w.dtype))
        if self.upper is not None:
            w = keras.ops.minimum(w, keras.ops.cast(self.upper, w.dtype))
        return w

    def get_config(self):
        return {"lower": self.lower, "upper": self.upper}
