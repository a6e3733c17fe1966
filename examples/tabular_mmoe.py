"""Two binary tasks on tabular data with an MMoE body: click and purchase predicted from one feature table.

Run: python examples/tabular_mmoe.py   (a few seconds on a CPU)

A recommender-style synthetic table: every row is one impression, described by
12 numeric features (think user and item statistics, already standardised).
Two binary tasks with labels of shape (N,): "click" and "purchase", each drawn
from a logistic model of the features; the two tasks share part of their
signal, as clicks and purchases do. Written with the habits of a Keras user:
a `Dense(1, activation="sigmoid")` tower per task, `loss="binary_crossentropy"`
given as a string, `metrics=["auc"]` (logged as `click_auc`, `purchase_auc`).

The shared body is `mtl_tf.nets.MMoE` (Ma et al., KDD 2018): 4 MLP experts
and one softmax gate per task, giving every task its own mixture of the
experts, `{task: z_task}`. The task weights come from `mgda` (the min-norm
weighting of the tasks' gradients with respect to the shared parameters);
`mgda_ub` is refused for such per-task representations (see the guide page
"Tabular and recommender models"). The script checks that both tasks learn:
validation AUC well above chance (0.5), and close to the AUC of the true
probabilities the labels were drawn from.
"""

import keras
import numpy as np

import mtl_tf
from mtl_tf.nets import MMoE

TASKS = ("click", "purchase")
NUM_FEATURES = 12


def true_probabilities(features):
    """{task: [n] probability of a positive label} -- the data's logistic models, with a shared part."""
    rng = np.random.default_rng(1234)  # fixed coefficients: train and validation follow the same model
    shared, own_click, own_purchase = rng.normal(size=(3, NUM_FEATURES)) / np.sqrt(NUM_FEATURES)
    interaction = features[:, 0] * features[:, 1]  # something a linear model would miss
    click = 2.0 * features @ (shared + own_click) + interaction
    purchase = 2.0 * features @ (shared + own_purchase) + interaction - 1.0  # fewer purchases than clicks
    return {"click": 1 / (1 + np.exp(-click)), "purchase": 1 / (1 + np.exp(-purchase))}


def make_data(n, seed):
    """Features [n, 12] float32, labels {task: [n] in {0, 1}} and the true probabilities."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, NUM_FEATURES)).astype("float32")
    probabilities = true_probabilities(features)
    labels = {t: (rng.random(n) < p).astype("float32") for t, p in probabilities.items()}
    return features, labels, probabilities


def auc(labels, scores):
    """The area under the ROC curve of `scores` for binary `labels`, as `metrics=["auc"]` computes it."""
    metric = keras.metrics.AUC()
    metric.update_state(labels, scores)
    return float(metric.result())


def main(seed=0):
    keras.utils.set_random_seed(seed)
    x_train, y_train, _ = make_data(4000, seed=2 * seed)
    x_val, y_val, p_val = make_data(2000, seed=2 * seed + 1)
    for t in TASKS:
        print(f"{t}: {y_train[t].mean():.0%} positive in training")

    model = mtl_tf.MultiTaskModel(
        encoder=MMoE(TASKS, num_experts=4, expert_units=(32,), seed=seed),
        heads={t: keras.layers.Dense(1, activation="sigmoid", name=t) for t in TASKS},
        balancer="mgda",
    )
    # One loss string for every task, as Keras takes it; the metrics per task (logged as click_auc, ...).
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy",
                  metrics={t: ["auc"] for t in TASKS})
    model.fit(x_train, y_train, validation_data=(x_val, y_val), batch_size=128, epochs=3, verbose=2)

    scores = model.evaluate(x_val, y_val, return_dict=True, verbose=0)
    for t in TASKS:
        best = auc(y_val[t], p_val[t])  # the AUC of the probabilities the labels were drawn from
        print(f"validation AUC: {t} {scores[f'{t}_auc']:.2f} (chance 0.50, the true probabilities give {best:.2f})")
        assert scores[f"{t}_auc"] > 0.75, f"{t} did not learn"
    probabilities = model.predict(x_val[:3], verbose=0)  # {"click": [3, 1], "purchase": [3, 1]}
    print("predicted purchase probabilities:", probabilities["purchase"][:, 0].round(2))


if __name__ == "__main__":
    main()
