"""recursive_opt: optimisers whose hyperparameters are optimised by optimisers."""

import importlib.metadata

from ._hyper import (
    Hyper as Hyper,
    HyperSpec as HyperSpec,
    fixed as fixed,
    hyper as hyper,
)
from ._optax import apply_updates as apply_updates
from ._optimiser import AbstractOptimiser as AbstractOptimiser
from ._optimisers.adagrad import AdaGrad as AdaGrad, AdaGradState as AdaGradState
from ._optimisers.adam import Adam as Adam, AdamState as AdamState
from ._optimisers.rmsprop import RMSProp as RMSProp, RMSPropState as RMSPropState
from ._optimisers.sgd import SGD as SGD, SGDState as SGDState
from ._stack import Stack as Stack, TowerState as TowerState, hyperparams as hyperparams

try:
    __version__ = importlib.metadata.version("recursive_opt")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"
