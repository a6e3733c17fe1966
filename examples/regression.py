"""A regression task beside a classification task: mean squared error, `metrics=["mae"]`, uncertainty weighting.

Run: python examples/regression.py   (a few seconds on a CPU)

Synthetic sensor readings: every row holds 8 numeric features. Task "depth"
is a regression: a real-valued target in metres (a smooth, nonlinear function
of the features plus noise), labels of shape (N,), a `Dense(1)` head without
activation, `loss="mse"` and `metrics=["mae"]` (logged as `depth_mae`). Task
"material" is a 3-class classification of the same rows. The losses are of
different kinds and scales, so the task weights come from `uncertainty`
(Kendall et al., CVPR 2018), which learns one log-variance per task and
treats the MSE task as a regression (weight 1/(2 sigma^2)) and the
cross-entropy as a classification (1/sigma^2) by itself.

The script checks that both tasks learn: the depth MAE is far below that of
always predicting the training mean, the material accuracy far above chance
(1/3).
"""

import keras
import numpy as np

import mtl_tf

NUM_FEATURES = 8


def make_data(n, seed):
    """Features [n, 8] float32 and {"depth": [n] float32 in metres, "material": [n] in 0..2}."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, NUM_FEATURES)).astype("float32")
    depth = 2.0 + 0.8 * np.sin(x[:, 0]) + 0.5 * x[:, 1] * x[:, 2] + 0.3 * x[:, 3] + 0.1 * rng.normal(size=n)
    material = np.argmax(x[:, 4:7] + 0.5 * x[:, 7:8], axis=1)
    return x, {"depth": depth.astype("float32"), "material": material.astype("int32")}


def main(seed=0):
    keras.utils.set_random_seed(seed)
    x_train, y_train = make_data(4000, seed=2 * seed)
    x_val, y_val = make_data(1000, seed=2 * seed + 1)

    encoder = keras.Sequential([
        keras.Input(shape=(NUM_FEATURES,)),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(32, activation="relu"),
    ])
    model = mtl_tf.MultiTaskModel(
        encoder=encoder,
        heads={"depth": keras.layers.Dense(1), "material": keras.layers.Dense(3)},
        losses={"depth": "mse", "material": keras.losses.SparseCategoricalCrossentropy(from_logits=True)},
        metrics={"depth": ["mae"], "material": ["accuracy"]},
        balancer="uncertainty",
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(x_train, y_train, validation_data=(x_val, y_val), batch_size=128, epochs=10, verbose=0)
    print("task weights of the last step:", {t: round(history.history[f"{t}_weight"][-1], 2) for t in model.task_names})

    scores = model.evaluate(x_val, y_val, return_dict=True, verbose=0)
    mean_mae = float(np.abs(y_val["depth"] - y_train["depth"].mean()).mean())  # always predicting the mean
    print(f"validation depth MAE {scores['depth_mae']:.2f} m vs {mean_mae:.2f} m for predicting the mean")
    print(f"validation material accuracy {scores['material_accuracy']:.2f} (chance 0.33)")
    assert scores["depth_mae"] < 0.5 * mean_mae, "depth did not learn"
    assert scores["material_accuracy"] > 0.7, "material did not learn"

    predictions = model.predict(x_val[:3], verbose=0)  # {"depth": [3, 1] metres, "material": [3, 3] logits}
    print("predicted depths:", predictions["depth"][:, 0].round(2), "true:", y_val["depth"][:3].round(2))


if __name__ == "__main__":
    main()
