"""The README's "Quickstart" example, as a script (tests keep the two identical).

Run: python examples/readme_quickstart.py   (a few seconds on a CPU)

A Sequential encoder and two Dense heads trained with MGDA-UB on random images;
`examples/own_keras_model.py` does the same with functional models, evaluation
and a `.keras` round trip.
"""

import keras
import numpy as np

import mtl_tf

# Any Keras layer or model maps x to the shared representation z; one head per task reads z.
encoder = keras.Sequential([keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.Flatten(),
                            keras.layers.Dense(64, activation="relu")])
heads = {"left": keras.layers.Dense(10), "right": keras.layers.Dense(10)}

model = mtl_tf.MultiTaskModel(
    encoder=encoder,
    heads=heads,
    losses={"left": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "right": keras.losses.SparseCategoricalCrossentropy(from_logits=True)},
    metrics={"left": ["accuracy"], "right": ["accuracy"]},
    balancer="mgda_ub", balancer_options={"normalization": "loss+"},
)
model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))

images = np.random.rand(512, 28, 28, 1).astype("float32")
labels = {"left": np.random.randint(0, 10, 512), "right": np.random.randint(0, 10, 512)}
history = model.fit(images, labels, batch_size=64, epochs=2)   # or a tf.data.Dataset of (x, {task: y})
print(history.history["left_weight"][-1])                     # alpha of the last step
outputs = model.predict(images[:8])                             # {"left": logits, "right": logits}
