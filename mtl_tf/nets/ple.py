"""PLE and CGC: Progressive Layered Extraction and Customized Gate Control (Tang et al., RecSys 2020).

Tang, Liu, Zhao & Gong, "Progressive Layered Extraction (PLE): A Novel
Multi-Task Learning (MTL) Model for Personalized Recommendations", RecSys 2020.

CGC (section 4.2, eqs. 1-4): every task k has m_k experts of its own, m_s
experts are shared; task k's gate weighs its own and the shared experts,

  g^k(x) = w^k(x) S^k(x),   w^k(x) = softmax(W_g^k x),
  S^k(x) = [E_(k,1), ..., E_(k,m_k), E_(s,1), ..., E_(s,m_s)],   y^k = t^k(g^k(x)).

PLE (section 4.3, eqs. 5-6) stacks N such extraction levels. At level j, task
k's experts read task k's output of level j-1 and its gate weighs them with
the shared experts, g^{k,j}(x) = w^{k,j}(g^{k,j-1}(x)) S^{k,j}(x); the shared
experts read the shared module's output of level j-1, and a shared gate
(every level but the last) weighs *all* experts of the level, every task's and
the shared ones, into the shared module's output. Level 1 reads x everywhere.
y^k = t^k(g^{k,N}(x)). CGC is PLE with N = 1 (`cgc()` builds it).

What :class:`PLE` is: the shared body, x -> `{task: g^{k,N}(x)}`. The towers
t^k are the `MultiTaskModel`'s heads (each reads its own entry).

What the balancing methods see (`mtl_tf.balancers.base`, "Per-task
representations"): shared parameters = every variable of the body (task
experts, shared experts, gates). Only the last level's task experts and gates
serve one task alone; below it, every task's experts feed the shared gate and
so every task. In a gradient method the last level's task-k parts move by c_k
times task k's gradient; LibMTL counts only the shared experts as shared and
lets all others descend their plain task gradients (the same under `uniform`).
The representation is the dict of disjoint per-task outputs, so dL_k/dZ is
zero outside g^{k,N}: `mgda_ub` and `gradient_at="representation"` are
refused (a ValueError naming the method); use `mgda` /
`gradient_at="shared_parameters"`.

Deviations. From the paper: the gate input is the flattened level input (the
paper's x is a feature vector); `gate_use_bias=True` gives LibMTL's gate with
a bias; one number of task experts for every task. From LibMTL's `PLE` (no
official code exists): LibMTL has no shared gate and no shared path -- at every
level it runs the shared experts again on each task's input -- whereas this
follows the paper's shared module (shared experts run once per level on the
shared path, which the shared gate feeds). LibMTL's levels are the stages of a
ResNet; here every level clones an expert template (`expert`: one Keras layer
for every level, or one per level; default :class:`mtl_tf.nets.experts.MLPExpert`).
"""

from __future__ import annotations

import keras

from mtl_tf.nets import _checks
from mtl_tf.nets import experts as experts_lib

__all__ = ["PLE", "cgc", "ple"]


@keras.saving.register_keras_serializable(package="mtl_tf")
class PLE(keras.layers.Layer):
    """PLE's shared body: `x [B, ...] -> {task: g^{k,N}(x)}` (the last level's experts' output shape).

    Args:
      tasks: the task names, in head order (the `MultiTaskModel`'s heads).
      num_levels: N, the extraction levels (default 2; 1 is CGC).
      num_shared_experts: m_s, shared experts per level (default 1).
      num_task_experts: m_k, experts of every task per level (default 1).
      expert: the expert template(s): a Keras layer cloned for every expert
        of every level, a list of N templates (level j's experts are clones of
        entry j; None entries take the default), or None (default): an
        `MLPExpert(expert_units)` at every level. Within a level every expert
        must give the same shape.
      expert_units: widths of the default MLP expert (default `(16,)`).
      gate_use_bias: False (default, the paper's softmax(W x)) or True (LibMTL).
      seed: seed of the gates' initialisers (None: unseeded).

    Parameters, level by level with input size d_j (flattened; d_1 = the
    input's): T * m_k + m_s experts, T task gates of `d_j * (m_k + m_s)` and,
    below the last level, one shared gate of `d_j * (T * m_k + m_s)` (each
    `+ outputs` with a bias).

    Raises:
      ValueError: no or repeated task names, a count that is not an integer
        or is below 1 (m_k or m_s may be 0 when the other is not),
        `expert_units` not positive integers, `gate_use_bias` not True/False,
        a seed not an integer, a list of templates not of length N.
    """

    def __init__(
        self,
        tasks,
        num_levels=2,
        num_shared_experts=1,
        num_task_experts=1,
        expert=None,
        expert_units=(16,),
        gate_use_bias=False,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.tasks = experts_lib.check_tasks(tasks, type(self).__name__)
        owner = type(self).__name__
        self.num_levels = _checks.count(owner, "num_levels", num_levels)
        self.num_shared_experts = _checks.count(owner, "num_shared_experts", num_shared_experts, low=0)
        self.num_task_experts = _checks.count(owner, "num_task_experts", num_task_experts, low=0)
        if self.num_shared_experts < 0 or self.num_task_experts < 0 or self.num_shared_experts + self.num_task_experts < 1:
            raise ValueError(
                f"{type(self).__name__}: every gate needs at least one expert; got num_shared_experts="
                f"{num_shared_experts!r}, num_task_experts={num_task_experts!r}"
            )
        self.expert_units = _checks.counts(owner, "expert_units", expert_units)
        self.gate_use_bias = _checks.flag(owner, "gate_use_bias", gate_use_bias)
        self.seed = _checks.seed(owner, "seed", seed)
        # Only the templates' configs are kept (a tracked template would add unused weights).
        if isinstance(expert, (list, tuple)):
            if len(expert) != self.num_levels:
                raise ValueError(
                    f"{type(self).__name__}: expert lists {len(expert)} templates for {self.num_levels} levels; "
                    "give one per level, or one layer for every level"
                )
            self._expert_config = [experts_lib.serialize_expert(experts_lib.deserialize_expert(e)) for e in expert]
        else:
            self._expert_config = experts_lib.serialize_expert(experts_lib.deserialize_expert(expert))
        self.task_experts, self.shared_experts, self.task_gates, self.shared_gates = [], [], [], []
        gate_seed = iter(range(10**6))
        for level in range(self.num_levels):
            template = self._template(level)
            self.task_experts.append({
                t: [experts_lib.clone_expert(template, f"level{level + 1}_{t}_expert_{i}")
                    for i in range(self.num_task_experts)]
                for t in self.tasks
            })
            self.shared_experts.append([
                experts_lib.clone_expert(template, f"level{level + 1}_shared_expert_{i}")
                for i in range(self.num_shared_experts)
            ])
            self.task_gates.append({
                t: self._gate(self.num_task_experts + self.num_shared_experts, next(gate_seed), f"level{level + 1}_gate_{t}")
                for t in self.tasks
            })
            if level < self.num_levels - 1:
                self.shared_gates.append(self._gate(
                    len(self.tasks) * self.num_task_experts + self.num_shared_experts, next(gate_seed),
                    f"level{level + 1}_gate_shared",
                ))

    def _template(self, level):
        config = self._expert_config[level] if isinstance(self._expert_config, list) else self._expert_config
        return experts_lib.deserialize_expert(config) or experts_lib.MLPExpert(self.expert_units, dtype=self.dtype_policy)

    def _gate(self, num_experts, offset, name):
        seed = None if self.seed is None else int(self.seed) + offset
        return experts_lib.SoftmaxGate(num_experts, use_bias=self.gate_use_bias, seed=seed, name=name,
                                       dtype=self.dtype_policy)

    def build(self, input_shape):
        shapes = {t: tuple(input_shape) for t in self.tasks}
        shared_shape = tuple(input_shape)
        for level in range(self.num_levels):
            out_shape = None
            for t in self.tasks:
                for expert in self.task_experts[level][t]:
                    expert.build(shapes[t])
                    out_shape = tuple(expert.compute_output_shape(shapes[t]))
                self.task_gates[level][t].build(shapes[t])
            for expert in self.shared_experts[level]:
                expert.build(shared_shape)
                out_shape = tuple(expert.compute_output_shape(shared_shape))
            if level < self.num_levels - 1:
                self.shared_gates[level].build(shared_shape)
            shapes = {t: out_shape for t in self.tasks}
            shared_shape = out_shape
        self.built = True

    def call(self, inputs, training=None):
        task_inputs = {t: inputs for t in self.tasks}
        shared_input = inputs
        for level in range(self.num_levels):
            own = {t: [e(task_inputs[t], training=training) for e in self.task_experts[level][t]] for t in self.tasks}
            shared = [e(shared_input, training=training) for e in self.shared_experts[level]]
            outputs = {
                t: experts_lib.mix(own[t] + shared, self.task_gates[level][t](task_inputs[t])) for t in self.tasks
            }
            if level < self.num_levels - 1:
                every = [o for t in self.tasks for o in own[t]] + shared
                shared_input = experts_lib.mix(every, self.shared_gates[level](shared_input))
            task_inputs = outputs
        return task_inputs

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for level in range(self.num_levels):
            expert = (self.shared_experts[level] or self.task_experts[level][self.tasks[0]])[0]
            shape = tuple(expert.compute_output_shape(shape))
        return {t: shape for t in self.tasks}

    def get_config(self):
        return {
            **super().get_config(),
            "tasks": list(self.tasks),
            "num_levels": self.num_levels,
            "num_shared_experts": self.num_shared_experts,
            "num_task_experts": self.num_task_experts,
            "expert": self._expert_config,
            "expert_units": list(self.expert_units),
            "gate_use_bias": self.gate_use_bias,
            "seed": self.seed,
        }


def ple(tasks, *, name="ple", **kwargs) -> PLE:
    """PLE's shared body (default two levels); see :class:`PLE`."""
    return PLE(tasks, name=name, **kwargs)


def cgc(tasks, *, name="cgc", **kwargs) -> PLE:
    """CGC, the one-level PLE (section 4.2); see :class:`PLE`."""
    if kwargs.get("num_levels", 1) != 1:
        raise ValueError(f"cgc is the one-level PLE; got num_levels={kwargs['num_levels']!r} (use ple)")
    kwargs.pop("num_levels", None)
    return PLE(tasks, num_levels=1, name=name, **kwargs)
