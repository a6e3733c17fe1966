"""Balancer state shaped like the shared parameters: one tracked gradient per task.

Some methods keep, across steps, a copy of every task's gradient of the
shared parameters (MoCo's tracked gradients y_t, DB-MTL's gradient EMA): T
times the shared parameter count of float32 state. `TrackedGradientBalancer`
holds it as balancer variables `tracked_{k}` of shape [T, *shape of shared
variable k] (trainable=False, aggregation="only_first_replica"), so it is in
checkpoints, `.keras` files and backups, and identical on every replica (it
is assigned from all-reduced, global-batch gradients).

When the state is created. `Balancer.build_for_tasks` sees the task names
only, not the encoder, so the shapes are unknown there. The variables are
created by `build_for_shared_variables(variables)` when the model calls it,
else at the first step from `problem.shared_variables`: under
`tf.init_scope()` (outside the traced step) and inside a `merge_call`, so
that under a `MirroredStrategy` they are created once, as mirrored
variables, from the cross-replica context. A model loaded from a file
creates them from the stored shapes (`load_own_variables`).

Because the step that creates them is traced before they exist, the model's
restore-on-skip (the state it reads before `compute_update`) does not cover
them in that trace; the methods here therefore move their state only on a
step the model applies: some task labelled and every global gradient finite
(`state_may_move`), the model's own conditions. The count of such steps,
`steps`, is created with the tasks: at 0 the tracked gradients read as zeros
(`tracked_values`), so resetting the build-time variables resets the state.
"""

from keras import ops

from mtl_tf.backend.ops import add_n
from mtl_tf.backend.variables import create_outside_step
from mtl_tf.balancers.base import Balancer, stack_first_axis


class TrackedGradientBalancer(Balancer):
    """Base class of the methods with per-task gradient state `tracked` ([V] variables of shape [T, ...])."""

    def build_for_tasks(self, task_names, losses=None):
        self.tracked = None
        # The number of steps the state has moved; created here (not lazily),
        # so it is the authority on the state: at 0 the tracked gradients
        # read as their initial zeros whatever the variables hold, and
        # resetting the balancer's build-time variables resets it all.
        self.steps = self.add_weight(name="steps", shape=(), initializer="zeros", trainable=False,
                                     aggregation="only_first_replica")
        super().build_for_tasks(task_names, losses)

    def build_for_shared_variables(self, variables):
        """Creates the tracked state for the shared `variables` (once; a no-op after)."""
        if self.tracked is None:
            self._create_tracked([tuple(v.shape) for v in variables])

    def _create_tracked(self, shapes):
        self.tracked = [
            self.add_weight(
                name=f"tracked_{k}", shape=(self.num_tasks, *shape), initializer="zeros", trainable=False,
                aggregation="only_first_replica",
            )
            for k, shape in enumerate(shapes)
        ]

    def ensure_tracked(self, problem):
        """The tracked state for `problem.shared_variables`, created at the first step if needed."""
        shapes = [tuple(v.shape) for v in problem.shared_variables]
        if self.tracked is None:
            create_outside_step(lambda: self._create_tracked(shapes))
        found = [tuple(v.shape[1:]) for v in self.tracked]
        if found != shapes:
            raise ValueError(
                f"balancer {self.method_name!r} tracks gradients of shared variables of shapes {found}, but the "
                f"encoder's trainable variables now have shapes {shapes}; a balancer's state belongs to one model."
            )
        return self.tracked

    def tracked_values(self):
        """The tracked gradients as they stand: [V] float32 [T, ...], zeros before the first applied step."""
        started = self.steps > 0.0
        return [ops.where(started, ops.copy(y.value), ops.zeros_like(y.value)) for y in self.tracked]

    def load_own_variables(self, store):
        # A file written after the first step holds the tracked state; a model
        # just built for loading has not created it yet.
        if self.tracked is None:
            existing = len(self.variables)
            extra = len(store.keys()) - existing
            if extra > 0:
                self._create_tracked([tuple(store[str(existing + k)].shape[1:]) for k in range(extra)])
        super().load_own_variables(store)


def global_task_gradients(problem, per_task):
    """[V] float32 tensors [T, ...]: the true (unscaled) global-batch task gradients."""
    stacked = [ops.cast(s, "float32") for s in stack_first_axis(per_task)]
    return problem.unscale(problem.all_reduce_sum(stacked))


def state_may_move(problem, global_gradients):
    """True on a step the model will apply: some task labelled and every global gradient finite."""
    finite = ops.all(ops.stack([ops.all(ops.isfinite(g)) for g in global_gradients]))
    return ops.logical_and(ops.any(problem.task_mask), finite)


def as_replica_share(problem, direction, variables):
    """A global true direction d as this replica's gradient: S d / num_replicas, in each variable's dtype.

    The model's optimizer sums the replicas' gradients and divides by the
    loss scale S, so it then applies d itself.
    """
    share = problem.loss_scale / float(problem.num_replicas)
    return [ops.cast(d * share, v.dtype) for d, v in zip(direction, variables)]


def task_norms(tracked):
    """[T] Euclidean norms of the per-task vectors held in [V] tensors of shape [T, ...]."""
    squares = add_n([ops.sum(ops.reshape(ops.square(y), [ops.shape(y)[0], -1]), axis=1) for y in tracked])
    return ops.sqrt(squares)
