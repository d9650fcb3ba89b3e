"""Hypergradient schemes: how a tower obtains level 1's hypergradient."""

from ._base import AbstractHypergradient as AbstractHypergradient
from .one_step import OneStep as OneStep
from .real_time import RealTime as RealTime
from .unrolled import Unrolled as Unrolled
