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
  smoke             a few thousand composites, one epoch, /255 inputs and Keras'
                    initialisation (a pipeline check, not a result).

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
