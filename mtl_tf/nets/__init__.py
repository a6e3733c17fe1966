"""The nets and multi-task architectures, by name: `from mtl_tf.nets import MMoE, PLE, CrossStitch`.

Like `keras.layers`, this package exports every public class and builder of
its modules (each module's `__all__`), so user code does not depend on which
file a layer lives in. Exceptions, each still reachable through its module:

* `mmoe`, `ple`, `cross_stitch` name both a module and its builder function;
  the package attribute stays the module (`from mtl_tf.nets import mmoe` then
  `mmoe.MMoE(...)`, as before). The builders only set a default `name`: use
  the classes `MMoE`, `PLE`, `CrossStitch` (or `cgc` for the one-level PLE).
* `INITIALIZERS` is a different tuple in `segnet` (the choices of the SegNet
  and MTAN nets) and in `initializers` (those of every other net); use
  `mtl_tf.nets.segnet.INITIALIZERS` or `mtl_tf.nets.initializers.INITIALIZERS`.

Importing this package imports every net module: they are written in
`keras.ops` / `keras.layers` / `keras.random` and import no TensorFlow (the few
backend-specific operations are in `mtl_tf.backend.ops`), so they run on every
Keras backend (the modules add about 30 ms). Nothing here imports from the rest
of `mtl_tf` but `mtl_tf.backend.ops` (and `mtl_tf.nets.split`, which imports
`mtl_tf.model` only when called).
"""

from mtl_tf.nets import cross_stitch, experts, initializers, lenet, mmoe, mtan, ple, pspnet, resnet, segnet, split
from mtl_tf.nets.cross_stitch import CrossStitch, CrossStitchUnit
from mtl_tf.nets.experts import MLPExpert, SoftmaxGate, clone_expert, mix
from mtl_tf.nets.initializers import (
    TorchDense,
    TorchUniform,
    check_initializer,
    derive_seed,
    kernel_fan_in,
    layer_fan_in,
    set_layer_initializers,
    torch_initializers,
)
from mtl_tf.nets.lenet import (
    DROPOUTS,
    MultiLeNetEncoder,
    MultiLeNetHead,
    ParetoLeNetEncoder,
    ParetoLeNetHead,
    UnscaledDropout,
    multi_lenet_encoder,
    multi_lenet_head,
    pareto_lenet_encoder,
    pareto_lenet_head,
)
from mtl_tf.nets.mmoe import MMoE
from mtl_tf.nets.mtan import MTANBackbone, MTANHead, mtan_backbone, mtan_head
from mtl_tf.nets.ple import PLE, cgc
from mtl_tf.nets.pspnet import (
    AdaptiveAveragePooling2D,
    DilatedResNet50,
    PyramidPoolingDecoder,
    adaptive_pooling_matrix,
    build_resnet50_trunk,
    dilated_resnet50_encoder,
    pyramid_pooling_decoder,
)
from mtl_tf.nets.resnet import BasicBlock, ResNetEncoder, attribute_head, resnet18_encoder, torch_default_initializer
from mtl_tf.nets.segnet import (
    ConvBatchNormReLU,
    MaxPoolingWithSwitches,
    MaxUnpoolingWithSwitches,
    SegNetDecoder,
    SegNetEncoder,
    segnet_decoder,
    segnet_encoder,
)
from mtl_tf.nets.split import split_model

__all__ = [
    "AdaptiveAveragePooling2D",
    "BasicBlock",
    "ConvBatchNormReLU",
    "CrossStitch",
    "CrossStitchUnit",
    "DROPOUTS",
    "DilatedResNet50",
    "MLPExpert",
    "MMoE",
    "MTANBackbone",
    "MTANHead",
    "MaxPoolingWithSwitches",
    "MaxUnpoolingWithSwitches",
    "MultiLeNetEncoder",
    "MultiLeNetHead",
    "PLE",
    "ParetoLeNetEncoder",
    "ParetoLeNetHead",
    "PyramidPoolingDecoder",
    "ResNetEncoder",
    "SegNetDecoder",
    "SegNetEncoder",
    "SoftmaxGate",
    "TorchDense",
    "TorchUniform",
    "UnscaledDropout",
    "adaptive_pooling_matrix",
    "attribute_head",
    "build_resnet50_trunk",
    "cgc",
    "check_initializer",
    "clone_expert",
    "derive_seed",
    "dilated_resnet50_encoder",
    "kernel_fan_in",
    "layer_fan_in",
    "mix",
    "mtan_backbone",
    "mtan_head",
    "multi_lenet_encoder",
    "multi_lenet_head",
    "pareto_lenet_encoder",
    "pareto_lenet_head",
    "pyramid_pooling_decoder",
    "resnet18_encoder",
    "segnet_decoder",
    "segnet_encoder",
    "set_layer_initializers",
    "split_model",
    "torch_default_initializer",
    "torch_initializers",
]
