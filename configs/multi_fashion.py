"""Multi-fashion: two Fashion-MNIST items per image, tasks `left` and `right`.

Variants (`--config=configs/multi_fashion.py:VARIANT`, comma-separated):
  pareto (default)  Lin et al.'s Pareto-MTL composites (36x36, 120k/10k/10k, Lee & Son's
                    split) on the Pareto-MTL LeNet: SGD lr 1e-3, momentum 0.9, halved after
                    epochs 15, 30, ..., 90; batch 256; 100 epochs (Lee & Son, Table 1).
  sener             Sener & Koltun's MultiMNIST protocol (28x28) on MultiLeNet: SGD lr 0.05,
                    momentum 0.9, lr x0.85 every 10 epochs; batch 256; 100 epochs.
  smoke             a few thousand composites, one epoch (a pipeline check, not a result).

Run (any method of `mtl_tf.balancers.available()`, `single_task` or `grid`):

  python launch/train.py --config=configs/multi_fashion.py --config.method=mgda_ub \
      --workdir=runs/multi_fashion_mgda_ub
  python launch/train.py --config=configs/multi_fashion.py:smoke --workdir=/tmp/smoke
  python launch/train.py --config=configs/multi_fashion.py --config.method=mgda_ub \
      --config.balancer.normalization=loss+ --workdir=runs/x
  python launch/train.py --config=configs/multi_fashion.py --config.method=single_task \
      --config.single_task.task=left --workdir=runs/single_left

Fashion-MNIST is read from --data_dir (the four IDX files), else from the Debian package
dataset-fashion-mnist (/usr/share/datasets/fashion-mnist), else from a prepared TFDS copy.
"""

from mtl_tf.benchmarks import digits


def get_config(arg=None):
    return digits.make_config("multi_fashion", arg, default_protocol="pareto")
