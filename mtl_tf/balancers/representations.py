"""Which part of the encoder's output z each head reads: per-task representations or one shared z.

The rule, for an encoder output z and task names T:

* z a dict keyed by exactly T (in any order), {task: z_t}: per-task
  representations (cross-stitch, MMoE, CGC, PLE in `mtl_tf.nets`); head t
  reads z[t] only.
* z a dict none of whose keys is a task name (a dict of features, e.g.
  {"dense": ..., "embedding": ...}), or not a dict: one shared representation;
  every head reads the whole z.
* z a dict that has some of the task names as keys but not exactly T (a
  missing or an extra key): refused with a ValueError naming the missing and
  the extra keys and the heads. Read either way it would be wrong (a head
  reading another task's z_t, or z[t] of a task without an entry), and it is
  what a body built for other tasks gives (`MMoE(["a", "c"])` with heads
  `a`, `b`); without this check it fails inside the first Dense layer with a
  bare `KeyError`.

An encoder that says which tasks it serves (a `tasks` attribute, as the
architectures of `mtl_tf.nets` have) must serve exactly the heads' tasks,
whatever its output looks like.
"""

from __future__ import annotations


def _describe(encoder):
    return "the encoder" if encoder is None else f"encoder {getattr(encoder, 'name', type(encoder).__name__)!r}"


def check_encoder_tasks(encoder, task_names):
    """ValueError if `encoder` declares `tasks` (the `mtl_tf.nets` bodies) other than the heads' task names."""
    tasks = getattr(encoder, "tasks", None)
    if not isinstance(tasks, (list, tuple)) or not all(isinstance(t, str) for t in tasks):
        return
    if set(tasks) != set(task_names):
        missing = [t for t in task_names if t not in tasks]
        extra = [t for t in tasks if t not in task_names]
        raise ValueError(
            f"{_describe(encoder)} was built for tasks {list(tasks)} but the heads are {list(task_names)}: "
            f"no representation for {missing}, and {extra} have no head. Build it with the heads' task names, "
            f"e.g. {type(encoder).__name__}({list(task_names)}, ...)"
        )


def is_per_task(z, task_names, encoder=None):
    """True when z is a dict keyed by exactly the task names ({task: z_t}); see the module doc.

    Raises:
      ValueError: z is a dict with some task names as keys but not exactly
        them; the message names the missing and the extra keys and the heads.
    """
    if not isinstance(z, dict):
        return False
    keys = set(z)
    if keys == set(task_names) and len(z) == len(task_names):
        return True
    if keys.isdisjoint(task_names):
        return False
    missing = [t for t in task_names if t not in z]
    extra = sorted((k for k in z if k not in task_names), key=str)
    raise ValueError(
        f"{_describe(encoder)} returns a dict with keys {sorted(z, key=str)}, some of them task names: a per-task "
        f"representation must be keyed by exactly the heads' task names {list(task_names)}; missing {missing}, "
        f"extra {extra}. (A dict that shares no key with the task names is one representation every head reads.)"
    )


def head_input(z, task, task_names, encoder=None):
    """What head `task` reads: z[task] for a per-task representation, else z itself (see the module doc)."""
    return z[task] if is_per_task(z, task_names, encoder) else z
