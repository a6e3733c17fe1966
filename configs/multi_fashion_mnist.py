"""Multi-(fashion+MNIST): an MNIST digit (`left`, task 1) and a Fashion-MNIST item (`right`, task 2).

Variants (`--config=configs/multi_fashion_mnist.py:VARIANT`, comma-separated):
  pareto (default)  Lin et al.'s Pareto-MTL composites (36x36, 120k/10k/10k) on the
                    Pareto-MTL LeNet: SGD lr 1e-3, momentum 0.9, halved after epochs
                    15, 30, ..., 90; batch 256; 100 epochs (Lee & Son, Table 1).
                    Official recipe (Lin et al.'s PyTorch code): raw pixels, 0..255 as floats
                    (data.pixel_scale=raw; unit divides by 255) and PyTorch's default
                    initialisation, kernels and biases U(+-1/sqrt(fan_in))
                    (model.initializer=torch; keras gives glorot-uniform and zero biases).
  sener             Sener & Koltun's protocol (28x28) on MultiLeNet: SGD lr 0.05,
                    momentum 0.9, lr x0.85 every 10 epochs; batch 256; 100 epochs.
                    Sener's official loader normalisation, (x/255 - 0.1307) / 0.3081
                    (data.pixel_scale=unit, the only scale this protocol accepts) and
                    PyTorch's default initialisation (model.initializer=torch); Keras'
                    dropout (model.dropout=official selects the official code's unscaled
                    masks, one channel mask per batch).
  (any variant)     --config.model.name=cross_stitch|mmoe|cgc|ple trains that multi-task
                    architecture on the protocol's LeNet (mtl_tf.benchmarks.digits); they
                    refuse mgda_ub (per-task representations): use mgda.
  smoke             a few thousand composites, one epoch, /255 inputs and Keras'
                    initialisation (a pipeline check, not a result).

Run:

  python launch/train.py --config=configs/multi_fashion_mnist.py --config.method=single_step \
      --data_dir=/path/with/mnist_and_fashion_mnist --workdir=runs/fm_single_step

--data_dir is the parent of `mnist/` and `fashion_mnist/` (each with the four IDX files);
or give --config.data.mnist_dir / --config.data.fashion_dir. Fashion-MNIST is also found in
the Debian package dataset-fashion-mnist.
"""

import ml_collections
from ml_collections.config_dict import placeholder

from configs import common
from mtl_tf.training.config import base_config

VARIANTS = ("pareto", "sener", "smoke")


def get_config(arg=None):
    variants = common.parse_variants(arg, VARIANTS, one_of={"protocol": ("sener", "pareto")})
    protocol = "sener" if "sener" in variants else "pareto"
    config = base_config()
    config.benchmark = "multi_fashion_mnist"
    config.seed = 0
    config.epochs = 100
    config.batch_size = 256
    config.method = "uniform"
    # Kendall et al.'s softmax-likelihood form for the two classification tasks.
    config.method_options = ml_collections.ConfigDict({"uncertainty": {"task_types": "classification"}})
    config.data = ml_collections.ConfigDict(
        {
            "protocol": protocol,
            "data_dir": placeholder(str),
            "mnist_dir": placeholder(str),
            "fashion_dir": placeholder(str),
            "cache_dir": placeholder(str),
            "tfds_data_dir": placeholder(str),
            "tfds_download": False,
            "seed": 0,  # the composition: every training seed sees the same composites
            "val_fraction": 0.1,  # sener: the training items held out for validation
            "pareto_sizes": (120_000, 10_000, 10_000),  # pareto: train / val / test composites
            "eval_batch_size": 1024,
            "max_train_examples": placeholder(int),
            "max_eval_examples": placeholder(int),
            "pixel_scale": "unit",
            "drop_remainder": False,  # True drops the last, smaller training batch of every epoch
        }
    )
    # Both official codes are PyTorch and keep its default initialisation.
    config.model = ml_collections.ConfigDict({"name": "multi_lenet", "initializer": "torch", "dropout": "keras"})
    # Options of the multi-task architectures on the protocol's LeNet (model.name=cross_stitch, mmoe,
    # cgc or ple; see mtl_tf.benchmarks.digits); the LeNets read none of them.
    config.model.update({"num_experts": 3, "num_shared_experts": 1, "num_task_experts": 1, "num_levels": 2,
                         "alpha_learning_rate_scale": 1.0})
    if protocol == "pareto":
        # Lin et al.'s official code: raw pixels, SGD, the rate halved every 15 epochs.
        config.data.pixel_scale = "raw"
        config.model.name = "pareto_lenet"
        config.optimizer = ml_collections.ConfigDict({"name": "sgd", "learning_rate": 1e-3, "momentum": 0.9})
        config.schedule = ml_collections.ConfigDict(
            {"name": "multistep", "milestones": (15, 30, 45, 60, 75, 90), "factor": 0.5}
        )
    else:
        # Sener's: its loader's normalisation ("unit"), SGD with momentum 0.9 (every optimizer of
        # its training script has it), the rate times 0.85 every 10 epochs.
        config.optimizer = ml_collections.ConfigDict({"name": "sgd", "learning_rate": 0.05, "momentum": 0.9})
        config.schedule = ml_collections.ConfigDict(
            {"name": "multistep", "milestones": (9, 19, 29, 39, 49, 59, 69, 79, 89, 99), "factor": 0.85}
        )
    config.train.tensorboard_update_freq = 100

    if "smoke" in variants:
        # A pipeline check, not a paper setting: 8,000 training composites, one
        # epoch, and Adam, which leaves chance far behind within that epoch
        # (about 55 % per task on real multi-fashion). It keeps /255 inputs and
        # Keras' initialisation: Adam at this rate on raw pixels with PyTorch's
        # initialisation reached only 45 / 40 % in that epoch, too close to the
        # check's threshold.
        config.data.pixel_scale = "unit"
        config.model.initializer = "keras"
        config.epochs = 1
        config.batch_size = 32
        config.data.pareto_sizes = (8000, 1000, 1000)
        config.data.max_train_examples = 8000
        config.data.max_eval_examples = 1000
        config.optimizer = ml_collections.ConfigDict({"name": "adam", "learning_rate": 3e-3})
        config.schedule = ml_collections.ConfigDict({"name": "constant", "milestones": (), "factor": 0.5})
        config.grid.divisions = 2
        config.train.tensorboard_update_freq = 10
    return config
