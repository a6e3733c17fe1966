"""MultiTaskModel: a shared encoder, named task heads and a balancing method.

Training is plain Keras: `model.compile(optimizer=..., loss={task: ...},
metrics={task: [...]})`, `model.fit(...)`, `model.evaluate(...)`,
`model.predict(...)` (a dict of per-task outputs), `model.save("m.keras")`,
`model.export(path)`. Data yields `(x, {task: target})` or
`(x, {task: target}, sample_weight)` where `x` is any structure the encoder
accepts and the sample weight is one tensor for every task or a dict keyed by
task. Callbacks with `mode="auto"` know the direction of the per-task logs
(`MultiTaskModel.monitor_mode`).

Differences from a Keras multi-output model. Everything else is Keras' own
behaviour: loss and metric identifiers resolve as Keras' `compile` resolves
them (`mtl_tf.compile_utils`: rank handling, names, `"accuracy"` by shapes);
`tests/test_keras_parity.py` checks it and ignores exactly these:

  =============  ==============================================================
  extra logs     `{task}_weight`, `{task}_weight_mean`, `skipped_update`,
                 `labelled_tasks`, `loss_scale`, `skip_*` and the method's own
                 logs (every log: mtl_tf.step_logs); `fit`'s only, never in
                 `evaluate` or `val_`
  loss           the unweighted sum of the task losses for every method
                 (Keras: the sum weighted by `loss_weights`; equal under
                 `balancer="static"` with weights 1)
  {task}_loss    the data set's mean (batches weighted by their size), so the
                 task losses sum to `loss`; Keras 3.15's traced step averages
                 its per-output losses over batches unweighted when the last
                 batch is partial (its eager step and its `loss` do not)
  metrics        weighted by the sample weight, as Keras' `weighted_metrics`
                 are (a task's unlabelled examples carry weight 0)
  compile        refuses `loss_weights` (the balancer decides the task weights)
                 and `weighted_metrics` (every metric already is one)
  backend        TensorFlow only: construction under another Keras backend is
                 refused, naming it (`mtl_tf.engines`)
  =============  ==============================================================

`train_step` has one code path for every method: the balancer turns the batch
into gradients (see `mtl_tf.balancers.base`), the step applies them, updates
the trackers and returns the logs, all of which `mtl_tf.step_logs` lists.

A batch whose task losses or gradients are not all finite, or whose update
would leave any variable non-finite (weights, optimizer slots, balancer
state), is not applied (every variable stays as it was; `skipped_update` is
logged as 1) and `fit` stops with a `NonFiniteLossError` at the end of that
batch, naming the task, the variable, the epoch and the batch. So is a batch
in which a labelled task's loss is outside what the balancer can take (a
negative `CosineSimilarity` loss with `famo`; `mtl_tf.balancers.loss_range`):
`fit` then stops with a `LossRangeError` naming the task, the method, the
value and the fix. Two skips are not errors: a batch in which no task has a labelled example, and, under a
loss-scaling optimizer, a batch whose scaled gradients overflow (the optimizer
lowers the scale, as Keras does). A task without labels in a batch takes no part in that step's
weighting (see `mtl_tf.balancers.base`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mtl_tf import balancers, engines, monitor_modes, step_guard, step_logs
from mtl_tf.balancers import loss_range
from mtl_tf.balancers.representations import check_encoder_tasks, head_input
from mtl_tf.balancers.epochs import EpochSignal
from mtl_tf.compile_args import arguments_from_config, check_keys, per_task, refuse_task_weighting, set_losses, set_metrics
from mtl_tf.engines.tensorflow import TensorFlowProblem
# FunctionLoss is re-exported: code and `.keras` files written before it moved name it here.
from mtl_tf.compile_utils import FunctionLoss, as_loss, task_metrics  # noqa: F401
from mtl_tf.input_specs import default_save_signature, input_specs, serving_signature, symbolic_inputs
from mtl_tf.step_guard import NonFiniteLossError, NonFiniteLossGuard  # noqa: F401 (re-exported)


@keras.saving.register_keras_serializable(package="mtl_tf")
class MultiTaskModel(keras.Model):
    """A shared encoder g(x; theta_sh) with named heads f^t(z; theta^t).

    Args:
      encoder: a Keras layer or model mapping inputs to the shared representation z.
        An encoder that returns a dict keyed by exactly the task names gives
        every task its own representation ({task: z_t}: `mtl_tf.nets`'
        cross-stitch, MMoE, CGC, PLE); head t then reads z_t only.
        Its inputs may have any structure a Keras model accepts (one tensor, a
        dict of named inputs, a list).
      heads: dict task name -> Keras layer or model mapping z to that task's output.
        The dict order is the task order everywhere (weights, logs, solvers).
      losses: dict task name -> Keras loss (object, name or function; resolved
        as Keras' compile does, `mtl_tf.compile_utils.as_loss`), with the
        default `sum_over_batch_size` reduction. Tasks left out here get their
        loss from `compile(loss=...)`; every task needs one before the model is
        built (ValueError naming the tasks otherwise).
      metrics: optional dict task name -> list of Keras metrics (objects, names
        or functions), logged as Keras names them (`"mae"`: `{task}_mae`).
        `compile(metrics=...)` replaces a task's list.
      balancer: a method name from `mtl_tf.balancers.available()`, a
        `{"name": ..., **options}` dict, or a `Balancer` instance.
      balancer_options: options for a balancer given by name.

    `mtl_tf.nets.split.split_model` turns an existing functional Keras model
    into an encoder and heads.
    """

    def __init__(
        self,
        encoder: keras.layers.Layer,
        heads: Mapping[str, keras.layers.Layer],
        losses: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Sequence[Any]] | None = None,
        balancer: str | Mapping[str, Any] | balancers.Balancer = "uniform",
        balancer_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        engines.require_supported_backend(type(self).__name__)
        super().__init__(**kwargs)
        if not heads:
            raise ValueError("MultiTaskModel needs at least one head")
        self.task_names = tuple(heads)
        if losses is None:
            losses = {}
        else:
            check_keys("losses", losses, self.task_names, allow_missing=True)
        metrics = dict(metrics or {})
        unknown = sorted(set(metrics) - set(self.task_names))
        if unknown:
            raise ValueError(f"metrics are given for tasks {unknown} that have no head; heads: {list(self.task_names)}")
        self.encoder = encoder
        self.heads = dict(heads)
        # A task without a loss here must get one from `compile(loss=...)` before the model is built.
        self.task_losses = {t: as_loss(losses[t]) for t in self.task_names if t in losses}
        self._metric_identifiers = {t: list(metrics.get(t, [])) for t in self.task_names}
        self.task_metrics = task_metrics(self._metric_identifiers, self.task_names)
        self.balancer = balancers.get(balancer, **(balancer_options or {}))
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.task_loss_trackers = {t: keras.metrics.Mean(name=f"{t}_loss") for t in self.task_names}
        # Method logs that are epoch means like the losses (single_step's `{task}_inner_loss`);
        # the other method logs are the values of the step, like the task weights.
        self.method_log_trackers = {
            name: keras.metrics.Mean(name=name) for name in self.balancer.epoch_mean_logs(self.task_names)
        }
        # `{task}_weight_mean`, a log of `fit` only: not in `metrics` (evaluate has no weights), reset with them.
        self.task_weight_trackers = {t: keras.metrics.Mean(name=f"{t}_weight_mean") for t in self.task_names}

    # -- Keras plumbing ---------------------------------------------------------------

    def build(self, input_shape: Any) -> None:
        """Builds encoder, heads and balancer for inputs of `input_shape`.

        `input_shape` is one batched shape (`(None, 28, 28, 1)`) or, for an
        encoder with several inputs, the same structure of shapes as the
        inputs (`{"image": (None, 28, 28, 1), "meta": (None, 3)}`, a list).
        """
        missing = [t for t in self.task_names if t not in self.task_losses]
        if missing:
            raise ValueError(
                f"no loss for tasks {missing} of heads {list(self.task_names)}; give every task a loss, in "
                "MultiTaskModel(losses={task: loss}) or model.compile(loss={task: loss}), before the model "
                "is built (by fit, evaluate, predict or build)"
            )
        inputs = symbolic_inputs(input_shape, getattr(self, "_data_dtypes", None))
        if not self.encoder.built:
            self.encoder.build(input_shape)
        check_encoder_tasks(self.encoder, self.task_names)
        representation = self.encoder.compute_output_spec(inputs)
        for t, head in self.heads.items():
            if not head.built:
                # An encoder with per-task representations ({task: z_t}) feeds head t its z_t only.
                task_input = head_input(representation, t, self.task_names, self.encoder)
                head.build(keras.tree.map_structure(lambda s: s.shape, task_input))
        if not self.balancer.built:
            self.balancer.build_for_tasks(self.task_names, self.task_losses)
        # State shaped like the shared parameters (moco's and db_mtl's tracked
        # gradients) exists before the first trace, so a skipped step restores it too.
        if hasattr(self.balancer, "build_for_shared_variables"):
            self.balancer.build_for_shared_variables(self.encoder.trainable_variables)
        self.built = True
        self._build_optimizers()

    def call(self, inputs: Any, training: bool | None = None) -> dict[str, Any]:
        """{task: head output} for `inputs` (any structure the encoder accepts)."""
        z = self.encoder(inputs, training=training)
        return {t: self.heads[t](head_input(z, t, self.task_names), training=training) for t in self.task_names}

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [
            self.loss_tracker,
            *self.task_loss_trackers.values(),
            *(m for ms in self.task_metrics.values() for m in ms),
            *self.method_log_trackers.values(),
        ]

    def reset_metrics(self) -> None:
        """Keras' `reset_metrics` (fit calls it at each epoch's start), and the `{task}_weight_mean` trackers."""
        super().reset_metrics()
        for tracker in self.task_weight_trackers.values():
            tracker.reset_state()

    # -- steps ----------------------------------------------------------------------------

    def compile(
        self,
        optimizer: str | keras.optimizers.Optimizer = "rmsprop",
        loss: Any = None,
        loss_weights: Any = None,
        metrics: Any = None,
        weighted_metrics: Any = None,
        run_eagerly: bool = False,
        steps_per_execution: int = 1,
        jit_compile: bool | str = "auto",
        auto_scale_loss: bool = True,
    ) -> None:
        """Keras' `compile`, with `loss` and `metrics` per task as for a Keras multi-output model.

        Args:
          loss: None (keep the constructor's `losses`), a dict task -> loss
            (those tasks' losses replace the constructor's; the other tasks
            keep theirs), one loss for every task (`"mse"`), or a list of one
            loss per task in head order.
          metrics: None (keep the constructor's `metrics`), a dict task -> list
            of metrics (those tasks' lists replace the constructor's), or a list
            of one list per task in head order. A flat list such as
            `["accuracy"]` is refused when there are several heads, as Keras
            refuses it for a model with several outputs (a one-head model
            takes it).
          optimizer: as in `keras.Model.compile`; so are `run_eagerly`,
            `steps_per_execution`, `jit_compile` and `auto_scale_loss`.

        Rule: compile's per-task entries override the constructor's, task by
        task; the result is what `get_config` saves, so a `.keras` file
        restores it. Every metric is weighted by the sample weight (a task's
        unlabelled examples carry weight 0 and must not count), so `metrics`
        are what Keras calls weighted metrics.

        Raises:
          ValueError: `loss_weights` is given (the balancer decides the task
            weights: fixed weights are `balancer="static"` with
            `balancer_options={"weights": ...}`); `weighted_metrics` is given
            (give them as `metrics`); a task name that has no head; a list of
            the wrong length; a loss change after the model is built.
        """
        refuse_task_weighting(self.task_names, loss_weights, weighted_metrics)
        if loss is not None:
            set_losses(self, per_task(self.task_names, "loss", loss, allow_single=True))
        if metrics is not None:
            set_metrics(self, per_task(self.task_names, "metrics", metrics, allow_single=False))
        # Keras' own loss and metric containers stay empty: train_step and
        # test_step compute the task losses and metrics themselves.
        super().compile(
            optimizer=optimizer,
            run_eagerly=run_eagerly,
            steps_per_execution=steps_per_execution,
            jit_compile=jit_compile,
            auto_scale_loss=auto_scale_loss,
        )
        # A second optimizer for methods that step the heads on their own
        # (Lee & Son's eq. 4); an attribute of the model, so every weights file
        # and `.keras` file carries its moments.
        self.head_optimizer = None
        if getattr(self.balancer, "uses_head_optimizer", False) and self.optimizer is not None:
            self.head_optimizer = balancers.head_optimizer_like(self.optimizer)
        self._build_optimizers()

    def compile_from_config(self, config: dict) -> None:
        # Keras' own skips a model whose `compile` is overridden; ours only adds
        # the head optimizer, so a `.keras` file compiles as Keras would. The
        # losses and metrics that compile set are in `get_config` already.
        self.compile(**arguments_from_config(self.name, config))

    def _build_optimizers(self):
        """Builds the optimizer(s) on the model's variables once the model is built (before any cond)."""
        if not self.built or getattr(self, "optimizer", None) is None:
            return
        if not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)
        head_optimizer = getattr(self, "head_optimizer", None)
        if head_optimizer is not None and not head_optimizer.built:
            head_optimizer.build([v for t in self.task_names for v in self.heads[t].trainable_variables])

    def train_step(self, data: Any) -> dict[str, Any]:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        self._ensure_built(x)
        self._build_optimizers()
        # Every variable the step may write is kept first (the forward pass
        # moves batch norm, the balancer assigns its state), so that a batch
        # that is not applied leaves the whole model as it was.
        guard = step_guard.StepGuard(self)
        loss_scaled = isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)
        problem = TensorFlowProblem(
            encoder=self.encoder,
            heads=self.heads,
            loss_fns=self.task_losses,
            x=x,
            y=self._targets(y),
            sample_weight=self._sample_weights(sample_weight),
            optimizer=self.optimizer,
            loss_scale=self.optimizer.scale_loss(tf.constant(1.0)) if loss_scaled else None,
            method=self.balancer,
        )
        update = self.balancer.compute_update(problem)
        two_phase = update.head_phase is not None or update.head_learning_rate is not None
        gradients, variables = self._gradients_and_variables(update, problem, with_heads=not two_phase)
        global_losses = problem.global_losses(problem.losses)
        labelled = tf.reduce_any(problem.task_mask)
        losses_finite = tf.reduce_all(tf.math.is_finite(global_losses))
        # A labelled task's loss outside what the method can take is refused before any update (cause 3).
        in_range, range_task, range_value = loss_range.check(self.balancer, global_losses, problem.task_mask)
        # A NaN input can give finite losses and NaN gradients (relu(NaN) = 0
        # on some kernels), so both are checked, and agreed on across replicas.
        gradients_finite, gradient_probes = step_guard.finite_probes(problem, gradients)
        go = tf.logical_and(tf.logical_and(losses_finite, labelled), in_range)
        if not loss_scaled:
            go = tf.logical_and(go, gradients_finite)
        # Under loss scaling, non-finite scaled gradients are an overflow: the
        # optimizer skips the step and lowers the scale itself.
        step_guard.apply_if(go, gradients, variables, self.optimizer)
        applied = tf.logical_and(go, gradients_finite)
        if two_phase:
            applied = self._apply_heads(update, problem, applied)
        state_finite, state_probes = guard.finite_state(problem)
        kept = tf.logical_and(applied, state_finite)
        # A loss-scale overflow (go, yet non-finite gradients): the optimizer's own skip and lower scale stand.
        overflow = tf.logical_and(go, tf.logical_not(gradients_finite))
        # Read before the rollback: which row of per-task state went non-finite.
        skip_logs = guard.skip_logs(problem, global_losses, go, gradients, variables, gradients_finite,
                                    gradient_probes, state_finite, state_probes, applied, loss_scaled,
                                    (in_range, range_task, range_value))
        guard.restore_if(tf.logical_not(kept), restore_optimizers=tf.logical_not(tf.logical_or(kept, overflow)))
        logs = step_logs.record(self, problem.y, problem.sample_weight, problem.predictions, global_losses)
        logs.update(skip_logs)
        logs["labelled_tasks"] = tf.reduce_sum(tf.cast(problem.task_mask, tf.float32))
        if loss_scaled:
            logs["loss_scale"] = tf.identity(problem.loss_scale)
        logs.update(step_logs.task_weight_logs(self, update.task_weights, kept))
        logs.update(step_logs.method_logs(self, update.logs, problem.predictions))
        return logs

    def _apply_heads(self, update, problem, applied):
        """The heads' own step after the shared one (see `Update.head_phase`); returns the new `applied`."""
        head_grads = update.head_phase() if update.head_phase is not None else update.heads
        pairs = [(g, v) for t in self.task_names for g, v in zip(head_grads[t], problem.head_variables[t])]
        gradients = [tf.zeros_like(v) if g is None else tf.cast(g, v.dtype) for g, v in pairs]
        gradients = problem.unscale(gradients)
        variables = [v for _, v in pairs]
        heads_finite, _ = step_guard.finite_probes(problem, gradients)
        go = tf.logical_and(applied, heads_finite)
        if update.head_learning_rate is None:
            rate = problem.learning_rate
        else:
            rate = update.head_learning_rate
        self.head_optimizer.learning_rate.assign(tf.cast(rate, self.head_optimizer.learning_rate.dtype))
        step_guard.apply_if(go, gradients, variables, self.head_optimizer)
        return go

    def test_step(self, data: Any) -> dict[str, Any]:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y, sample_weight = self._targets(y), self._sample_weights(sample_weight)
        self._ensure_built(x)
        predictions = self(x, training=False)
        losses = tf.stack([
            tf.cast(self.task_losses[t](y[t], predictions[t], sample_weight=sample_weight[t]), tf.float32)
            for t in self.task_names
        ])
        num_replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if num_replicas > 1:
            losses = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, losses)
        return step_logs.record(self, y, sample_weight, predictions, losses)

    def predict_step(self, data: Any) -> dict[str, Any]:
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self(x, training=False)

    def fit(self, x: Any = None, *args: Any, callbacks: Sequence[keras.callbacks.Callback] | None = None,
            **kwargs: Any) -> keras.callbacks.History:
        """Keras' `fit`; adds a `NonFiniteLossGuard` and an `EpochSignal`, and resolves `mode="auto"` of monitoring callbacks.

        `EarlyStopping`, `ModelCheckpoint` and `ReduceLROnPlateau` with
        `mode="auto"` and a monitor such as `"val_left_accuracy"` or
        `"left_loss"` get the direction of that task metric (see
        `monitor_mode`); Keras 3 alone cannot find it for per-task metrics.
        """
        callbacks = list(callbacks or [])
        if not any(isinstance(c, NonFiniteLossGuard) for c in callbacks):
            callbacks.append(NonFiniteLossGuard())
        # Methods stated per epoch (dwa, stch) learn of epoch boundaries only from it.
        if not any(isinstance(c, EpochSignal) for c in callbacks):
            callbacks.append(EpochSignal())
        for callback in callbacks:
            monitor_modes.resolve_auto_mode(self, callback)
        self._build_from_inputs(x)
        return super().fit(x, *args, callbacks=callbacks, **kwargs)

    def evaluate(self, x: Any = None, *args: Any, **kwargs: Any) -> Any:
        """Keras' `evaluate`; the logs are `loss`, `{task}_loss` and `{task}_{metric}`."""
        self._build_from_inputs(x)
        return super().evaluate(x, *args, **kwargs)

    def monitor_mode(self, monitor: str) -> str | None:
        """`"max"` or `"min"` for a logged quantity (`"val_left_accuracy"`, `"left_loss"`), None if unknown.

        Task losses are minimised; a task metric's direction is Keras' own
        (`metric._direction`: "up" for accuracies and IoUs, "down" for errors)
        or `higher_is_better` (the metrics of `mtl_tf.metrics`). Task weights
        and method logs have no direction (None).
        """
        return monitor_modes.monitor_mode(self.task_names, self.task_metrics, monitor)

    def export(self, filepath: str, format: str = "tf_saved_model", verbose: bool | None = None,
               input_signature: Any = None, **kwargs: Any) -> None:
        """Keras' `export` (a SavedModel whose `serve` endpoint returns {task: output}).

        Works once the model is built (after `fit`, `build` or loading); the
        input signature defaults to the encoder's inputs (a functional
        encoder's named inputs and dtypes, whatever their structure), else to
        the shapes the model was built with. `mtl_tf.export.export_saved_model`
        writes the serving format of `launch/predict.py` instead.
        """
        if input_signature is None and format == "tf_saved_model":
            input_signature = serving_signature(self)
        return super().export(filepath, format=format, verbose=verbose, input_signature=input_signature, **kwargs)

    @property
    def _default_save_signature(self):
        # TensorFlow's SavedModel writer asks for this (`mtl_tf.input_specs`).
        return default_save_signature(self)

    def summary(self, *args: Any, **kwargs: Any) -> None:
        """Keras' summary of encoder and heads, then one line naming the balancer and its state."""
        super().summary(*args, **kwargs)
        print_fn = kwargs.get("print_fn") or print
        count = sum(int(np.prod(v.shape)) for v in self.balancer.variables) if self.balancer.built else 0
        state = f"{count:,} state values (counted in the totals above)" if count else "no state"
        line = (
            f"Balancer: {self.balancer.name} ({type(self.balancer).__name__}), chooses the task weights of "
            f"{list(self.task_names)} every step; {state}"
        )
        try:
            print_fn(line, line_break=True)
        except TypeError:
            print_fn(line)

    @property
    def layers(self) -> list[keras.layers.Layer]:
        """The layers of the forward pass: the encoder, then the heads in task order.

        The balancer is not among them (it is no layer of `call`, and has no
        output shape); it is `model.balancer`, and `summary` names it.
        """
        return [self.encoder, *(self.heads[t] for t in self.task_names)]

    # -- helpers ----------------------------------------------------------------------------

    def _build_from_inputs(self, x):
        """Builds the model and its optimizer from the data's input structure, before tracing.

        Otherwise the first trace of the step creates the optimizer's
        variables, and `tf.function` then traces the whole step a second time,
        which doubles the start-up cost on large nets. Inputs whose shape is
        not known up front (generators, PyDatasets) are built in the step.
        """
        specs = input_specs(x)
        if specs is None:
            return
        with self.distribute_strategy.scope():
            if not self.built:
                self._build_for(specs)
            self._build_optimizers()

    def _ensure_built(self, x):
        # Without a distribution strategy Keras defers building to the first
        # trace of the step; the balancer's state must exist before it runs.
        if not self.built:
            self._build_for(tf.nest.map_structure(lambda t: keras.KerasTensor((None, *t.shape[1:]), t.dtype.name), x))

    def _build_for(self, specs):
        """`build` from a structure of KerasTensors, keeping their dtypes (integer ids, strings)."""
        self._data_dtypes = keras.tree.map_structure(lambda t: t.dtype, specs)
        self.build(keras.tree.map_structure(lambda t: tuple(t.shape), specs))

    def _targets(self, y):
        if not isinstance(y, dict):
            raise ValueError(
                f"targets must be a dict keyed by task name {list(self.task_names)}; got {type(y).__name__}"
            )
        check_keys("targets", y, self.task_names)
        return {t: y[t] for t in self.task_names}

    def _sample_weights(self, sample_weight):
        if isinstance(sample_weight, dict):
            check_keys("sample weights", sample_weight, self.task_names, allow_missing=True)
            return {t: sample_weight.get(t) for t in self.task_names}
        return {t: sample_weight for t in self.task_names}

    def _gradients_and_variables(self, update, problem, with_heads=True):
        pairs = list(zip(update.shared, problem.shared_variables))
        if with_heads:
            for t in self.task_names:
                pairs += list(zip(update.heads[t], problem.head_variables[t]))
        pairs += list(zip(update.own, self.balancer.trainable_variables))
        gradients = [tf.zeros_like(v) if g is None else tf.cast(g, v.dtype) for g, v in pairs]
        return gradients, [v for _, v in pairs]

    # -- serialisation -------------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        serialize = keras.saving.serialize_keras_object
        return {
            **super().get_config(),
            "encoder": serialize(self.encoder),
            "heads": {t: serialize(h) for t, h in self.heads.items()},
            "losses": {t: serialize(l) for t, l in self.task_losses.items()},
            "metrics": {t: [serialize(m) for m in ms] for t, ms in self._metric_identifiers.items()},
            "balancer": serialize(self.balancer),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None) -> MultiTaskModel:
        config = dict(config)
        deserialize = keras.saving.deserialize_keras_object

        def load(obj):
            return deserialize(obj, custom_objects=custom_objects)

        config["encoder"] = load(config["encoder"])
        config["heads"] = {t: load(h) for t, h in config["heads"].items()}
        config["losses"] = {t: load(l) for t, l in config["losses"].items()}
        config["metrics"] = {t: [m if isinstance(m, str) else load(m) for m in ms] for t, ms in config["metrics"].items()}
        config["balancer"] = load(config["balancer"])
        return cls(**config)

