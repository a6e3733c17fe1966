"""Multi-(fashion+MNIST): an MNIST digit (`left`, task 1) and a Fashion-MNIST item (`right`, task 2).

Variants (`--config=configs/multi_fashion_mnist.py:VARIANT`, comma-separated):
  pareto (default)  Lin et al.'s Pareto-MTL composites (36x36, 120k/10k/10k) on the
                    Pareto-MTL LeNet: SGD lr 1e-3, momentum 0.9, halved after epochs
                    15, 30, ..., 90; batch 256; 100 epochs (Lee & Son, Table 1).
  sener             Sener & Koltun's protocol (28x28) on MultiLeNet: SGD lr 0.05,
                    momentum 0.9, lr x0.85 every 10 epochs; batch 256; 100 epochs.
  smoke             a few thousand composites, one epoch (a pipeline check, not a result).

Run:

  python launch/train.py --config=configs/multi_fashion_mnist.py --config.method=single_step \
      --data_dir=/path/with/mnist_and_fashion_mnist --workdir=runs/fm_single_step

--data_dir is the parent of `mnist/` and `fashion_mnist/` (each with the four IDX files);
or give --config.data.mnist_dir / --config.data.fashion_dir. Fashion-MNIST is also found in
the Debian package dataset-fashion-mnist.
"""

from mtl_tf.benchmarks import digits


def get_config(arg=None):
    return digits.make_config("multi_fashion_mnist", arg, default_protocol="pareto")
