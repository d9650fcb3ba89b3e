"""recursive_opt: optimisers whose hyperparameters are optimised by optimisers."""

import importlib.metadata as _metadata

from ._checkpoint import CheckpointError as CheckpointError
from ._data import (
    Dataset as Dataset,
    load_digits as load_digits,
    load_mnist as load_mnist,
    make_gaussian_mixture as make_gaussian_mixture,
    make_quadratic as make_quadratic,
    read_idx as read_idx,
)
from ._fit import FitResult as FitResult, fit as fit
from ._floor import (
    DistanceFloor as DistanceFloor,
    DistanceFloorState as DistanceFloorState,
)
from ._guard import DivergenceError as DivergenceError
from ._hold import HoldCuts as HoldCuts, HoldState as HoldState
from ._hyper import (
    Hyper as Hyper,
    HyperSpec as HyperSpec,
    fixed as fixed,
    hyper as hyper,
)
from ._hypergradients import (
    AbstractHypergradient as AbstractHypergradient,
    OneStep as OneStep,
    RealTime as RealTime,
    Unrolled as Unrolled,
)
from ._optax import apply_updates as apply_updates
from ._optimiser import (
    AbstractElementwiseOptimiser as AbstractElementwiseOptimiser,
    AbstractOptimiser as AbstractOptimiser,
)
from ._optimisers.adagrad import AdaGrad as AdaGrad, AdaGradState as AdaGradState
from ._optimisers.adam import Adam as Adam, AdamState as AdamState
from ._optimisers.rmsprop import RMSProp as RMSProp, RMSPropState as RMSPropState
from ._optimisers.sgd import SGD as SGD, SGDState as SGDState
from ._stack import Stack as Stack
from ._state import (
    TowerState as TowerState,
    at_level as at_level,
    hyperparams as hyperparams,
)
from ._sweep import SweepResult as SweepResult, sweep as sweep

try:
    __version__ = _metadata.version("recursive_opt")
except _metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"
