"""MMoE: Multi-gate Mixture-of-Experts (Ma et al., KDD 2018).

Ma, Zhao, Yi, Chen, Hong & Chi, "Modeling Task Relationships in Multi-task
Learning with Multi-gate Mixture-of-Experts", KDD 2018, section 4.3, eqs. 5-7:

  y_k = h^k(f^k(x)),   f^k(x) = sum_{i=1..n} g^k(x)_i f_i(x),   g^k(x) = softmax(W_gk x)

n experts f_i shared by every task, one gate g^k per task k (W_gk in
R^{n x d}), one tower h^k per task.

What :class:`MMoE` is. The shared body: the n experts and the T gates. It maps
x to `{task: f^k(x)}`, one representation per task; the towers h^k are the
`MultiTaskModel`'s heads (any Keras layer: `MultiTaskModel` hands head k the
entry f^k(x) of an encoder output keyed by the task names).

What the balancing methods see (see `mtl_tf.balancers.base`, "Per-task
representations"):

  * shared parameters = every variable of the body: the experts and the
    gates. A gate receives gradients from its own task only, so in a
    gradient method it moves by c_k times its task's gradient (LibMTL counts
    only the experts as shared and lets the gates descend their plain task
    gradient; with `uniform` both are the same).
  * representation = the dict {task: f^k(x)}. The tasks' representations
    are disjoint tensors, so dL_k/dZ is zero outside f^k(x) and a Gramian
    of representation gradients is diagonal: `mgda_ub` and
    `gradient_at="representation"` are refused with a ValueError naming the
    method; use `mgda` / `gradient_at="shared_parameters"`. (LibMTL's
    `rep_grad` on MMoE takes inner products of gradients with respect to
    different tasks' f^k(x), as if they were one tensor; we do not.)

Deviations. From the paper: none in the equations; the gate input is the
flattened input (the paper's x is a feature vector, LibMTL flattens images the
same way), and `gate_use_bias=True` gives LibMTL's gate with a bias. The
experts are any Keras layer (`expert`, cloned n times; the paper's are ReLU
MLPs, LibMTL's are the benchmark's encoder, e.g. a ResNet), default
:class:`mtl_tf.nets.experts.MLPExpert`. No official code exists (the paper's
is Google-internal); LibMTL's `MMoE` was read for the points above.
"""

from __future__ import annotations

import keras

from mtl_tf.nets import _checks
from mtl_tf.nets import experts as experts_lib

__all__ = ["MMoE", "mmoe"]


@keras.saving.register_keras_serializable(package="mtl_tf")
class MMoE(keras.layers.Layer):
    """MMoE's shared body: `x [B, ...] -> {task: f^k(x)}`, each of the experts' output shape.

    Args:
      tasks: the task names, in head order (the `MultiTaskModel`'s heads).
      num_experts: n, the number of shared experts (default 4).
      expert: a Keras layer, the template every expert is cloned from (its
        config; each clone has its own weights); None (default) an
        `MLPExpert(expert_units)`. Every expert must give the same shape.
      expert_units: widths of the default MLP expert (default `(16,)`).
      gate_use_bias: False (default, eq. 7's softmax(W_gk x)) or True
        (LibMTL's gates).
      seed: seed of the gates' initialisers (gate k gets seed + k); None unseeded.

    Parameters: n times an expert's, plus T gates of `d * n` (`+ n` with
    bias), d the flattened input size.

    Raises:
      ValueError: no or repeated task names, `num_experts` not an integer
        >= 1, `expert_units` not positive integers, `gate_use_bias` not
        True/False, a seed not an integer, an expert that is not a Keras layer.
    """

    def __init__(self, tasks, num_experts=4, expert=None, expert_units=(16,), gate_use_bias=False, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.tasks = experts_lib.check_tasks(tasks, "MMoE")
        self.num_experts = _checks.count("MMoE", "num_experts", num_experts)
        # Only the template's config is kept: a tracked template layer would add
        # its (unused) weights to the model's.
        self._expert_config = experts_lib.serialize_expert(experts_lib.deserialize_expert(expert))
        self.expert_units = _checks.counts("MMoE", "expert_units", expert_units)
        self.gate_use_bias = _checks.flag("MMoE", "gate_use_bias", gate_use_bias)
        self.seed = _checks.seed("MMoE", "seed", seed)
        template = experts_lib.deserialize_expert(self._expert_config) or experts_lib.MLPExpert(
            self.expert_units, dtype=self.dtype_policy
        )
        self.experts = [experts_lib.clone_expert(template, f"expert_{i}") for i in range(self.num_experts)]
        self.gates = {
            t: experts_lib.SoftmaxGate(
                self.num_experts, use_bias=self.gate_use_bias, seed=None if seed is None else int(seed) + k,
                name=f"gate_{t}", dtype=self.dtype_policy,
            )
            for k, t in enumerate(self.tasks)
        }

    def build(self, input_shape):
        for expert in self.experts:
            if not expert.built:
                expert.build(input_shape)
        for gate in self.gates.values():
            gate.build(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        outputs = [_call(expert, inputs, training) for expert in self.experts]
        return {t: experts_lib.mix(outputs, self.gates[t](inputs)) for t in self.tasks}

    def compute_output_shape(self, input_shape):
        shape = tuple(self.experts[0].compute_output_shape(input_shape))
        return {t: shape for t in self.tasks}

    def get_config(self):
        return {
            **super().get_config(),
            "tasks": list(self.tasks),
            "num_experts": self.num_experts,
            "expert": self._expert_config,
            "expert_units": list(self.expert_units),
            "gate_use_bias": self.gate_use_bias,
            "seed": self.seed,
        }


def _call(layer, inputs, training):
    # Keras drops `training` for a layer whose call has no such argument.
    return layer(inputs, training=training)


def mmoe(tasks, *, name="mmoe", **kwargs) -> MMoE:
    """MMoE's shared body; see :class:`MMoE`."""
    return MMoE(tasks, name=name, **kwargs)
