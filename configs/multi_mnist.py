"""MultiMNIST: two MNIST digits per image, tasks `left` (task-L) and `right` (task-R).

Variants (`--config=configs/multi_mnist.py:VARIANT`, comma-separated):
  sener (default)  Sener & Koltun's MultiMNIST (Table 3): 28x28 composites on MultiLeNet,
                   SGD lr 0.05, momentum 0.9, lr x0.85 every 10 epochs; batch 256; 100 epochs.
                   Sener's official loader normalisation, (x/255 - 0.1307) / 0.3081
                   (data.pixel_scale=unit, the only scale this protocol accepts) and
                   PyTorch's default initialisation (model.initializer=torch); Keras'
                   dropout (model.dropout=official selects the official code's unscaled
                   masks, one channel mask per batch).
  pareto           Lin et al.'s Pareto-MTL composites (36x36, 120k/10k/10k) on the
                   Pareto-MTL LeNet, SGD lr 1e-3, momentum 0.9, halved after epochs
                   15, 30, ..., 90; batch 256; 100 epochs (Lee & Son, Table 1).
                   Official recipe (Lin et al.'s PyTorch code): raw pixels, 0..255 as floats
                   (data.pixel_scale=raw; unit divides by 255) and PyTorch's default
                   initialisation, kernels and biases U(+-1/sqrt(fan_in))
                   (model.initializer=torch; keras gives glorot-uniform and zero biases).
  smoke            a few thousand composites, one epoch, /255 inputs and Keras'
                   initialisation (a pipeline check, not a result).

Run:

  python launch/train.py --config=configs/multi_mnist.py --config.method=mgda_ub \
      --data_dir=/path/to/mnist --workdir=runs/multi_mnist_mgda_ub

MNIST is read from --data_dir (the four IDX files: train-images-idx3-ubyte[.gz], ...), else
from a prepared TFDS `mnist` (see README, "Data sets").
"""

from mtl_tf.benchmarks import digits


def get_config(arg=None):
    return digits.make_config("multi_mnist", arg, default_protocol="sener")
