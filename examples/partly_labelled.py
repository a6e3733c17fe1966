"""Partly labelled data: each task has labels for only some examples, marked missing by -1 and a sample weight of 0.

Run: python examples/partly_labelled.py   (a few seconds on a CPU)

Synthetic customer records: 10 numeric features per customer and two tasks,
"churn" (binary: did the customer leave) known for about half of the
customers, and "segment" (3 classes) known only for the 10% who answered a
survey. A missing label is stored as -1, as it often is in a table. The
recipe:

* a per-task sample weight of 1 where the task has a label, 0 where not,
  given as a dict `sample_weight={task: weights}` (to `fit`, and as the third
  element of `validation_data`): the losses, the metrics and the balancer all
  leave the unlabelled examples out;
* the -1 replaced by any valid label (0) before training: a weight of 0 does
  not stop a cross-entropy from reading the label, and -1 is not a class;
* `reduction="mean_with_sample_weight"` (Keras' own option) in the losses, so
  each task's loss is the mean over its labelled examples rather than a sum
  divided by the whole batch size.

A task with no labelled example in a batch takes no part in that step: its
`{task}_weight` is 0 and the other task gets the whole update (`labelled_tasks`
logs how many tasks had labels). The script counts such steps, then checks that
both tasks learn, measured on the labelled validation examples only.
"""

import keras
import numpy as np

import mtl_tf

TASKS = ("churn", "segment")
MISSING = -1


def make_data(n, seed):
    """Features [n, 10] and {task: [n] int labels, -1 where missing}: churn known for ~50%, segment for ~10%."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 10)).astype("float32")
    churn = (x[:, 0] + 0.5 * x[:, 1] - 0.5 * x[:, 2] * x[:, 3] + 0.3 * rng.normal(size=n) > 0).astype("int32")
    segment = np.argmax(x[:, 4:7] + 0.5 * x[:, 0:1], axis=1).astype("int32")
    churn[rng.random(n) > 0.5] = MISSING
    segment[rng.random(n) > 0.1] = MISSING
    return x, {"churn": churn, "segment": segment}


def with_sample_weights(labels):
    """(labels with -1 replaced by 0, {task: 1.0 where labelled, 0.0 where not})."""
    weights = {t: (y != MISSING).astype("float32") for t, y in labels.items()}
    filled = {t: np.where(y == MISSING, 0, y) for t, y in labels.items()}
    return filled, weights


class UnlabelledSteps(keras.callbacks.Callback):
    """Counts the training steps in which a task had no labelled example (its weight was 0)."""

    def __init__(self):
        super().__init__()
        self.steps, self.without = 0, {t: 0 for t in TASKS}

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        for t in TASKS:
            self.without[t] += int(logs[f"{t}_weight"] == 0.0)


def main(seed=0):
    keras.utils.set_random_seed(seed)
    x_train, y_train = make_data(4000, seed=2 * seed)
    x_val, y_val = make_data(2000, seed=2 * seed + 1)
    y_train, w_train = with_sample_weights(y_train)
    y_val, w_val = with_sample_weights(y_val)
    for t in TASKS:
        print(f"{t}: {int(w_train[t].sum())} of {len(x_train)} training examples labelled, "
              f"{int(w_val[t].sum())} of {len(x_val)} validation examples")

    encoder = keras.Sequential([
        keras.Input(shape=(10,)),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(32, activation="relu"),
    ])
    model = mtl_tf.MultiTaskModel(
        encoder=encoder,
        heads={"churn": keras.layers.Dense(1, activation="sigmoid"), "segment": keras.layers.Dense(3)},
        losses={
            "churn": keras.losses.BinaryCrossentropy(reduction="mean_with_sample_weight"),
            "segment": keras.losses.SparseCategoricalCrossentropy(
                from_logits=True, reduction="mean_with_sample_weight"),
        },
        metrics={"churn": ["accuracy"], "segment": ["accuracy"]},
        balancer="uniform",
    )
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    counter = UnlabelledSteps()
    model.fit(x_train, y_train, sample_weight=w_train, validation_data=(x_val, y_val, w_val),
              batch_size=32, epochs=5, verbose=0, callbacks=[counter])
    print(f"of {counter.steps} training steps, {counter.without['segment']} had no segment label "
          f"and {counter.without['churn']} no churn label (that task's weight was 0 there)")

    # The accuracies are over the labelled validation examples only: the sample weights leave the others out.
    scores = model.evaluate(x_val, y_val, sample_weight=w_val, return_dict=True, verbose=0)
    print(f"validation accuracy on the labelled examples: churn {scores['churn_accuracy']:.2f} (chance 0.50), "
          f"segment {scores['segment_accuracy']:.2f} (chance 0.33)")
    assert scores["churn_accuracy"] > 0.75, "churn did not learn"
    assert scores["segment_accuracy"] > 0.6, "segment did not learn"


if __name__ == "__main__":
    main()
