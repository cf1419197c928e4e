"""gdjax: gradient descent and hand-written backpropagation for MLPs in JAX.

a^0 = x,  z^l = w^l a^{l-1} + b^l,  a^l = σ(z^l)                 (forward: gdjax.MLP)
δ^L = ∇_a C ⊙ σ'(z^L),  δ^l = ((w^{l+1})ᵀ δ^{l+1}) ⊙ σ'(z^l)     (backward: gdjax.backprop)
∂C/∂w^l = δ^l (a^{l-1})ᵀ,  ∂C/∂b^l = δ^l                         (checked against jax.grad)
"""

from gdjax import activations as activations
from gdjax import boundaries as boundaries
from gdjax import convert as convert
from gdjax import critical as critical
from gdjax import curvature as curvature
from gdjax import data as data
from gdjax import diagnostics as diagnostics
from gdjax import distributed as distributed
from gdjax import gradcheck as gradcheck
from gdjax import jacobians as jacobians
from gdjax import landscape as landscape
from gdjax import losses as losses
from gdjax import metrics as metrics
from gdjax import models as models
from gdjax import nets as nets
from gdjax import optim as optim
from gdjax import per_example as per_example
from gdjax import plots as plots
from gdjax import runs as runs
from gdjax import scalar as scalar
from gdjax import train as train
from gdjax.activations import Activation as Activation
from gdjax.backprop import backprop as backprop
from gdjax.backprop import backprop_with_deltas as backprop_with_deltas
from gdjax.backprop import check_batch as check_batch
from gdjax.backprop import deltas as deltas
from gdjax.losses import Loss as Loss
from gdjax.mlp import MLP as MLP
from gdjax.mlp import Params as Params
from gdjax.models import objective as objective
from gdjax.per_example import gradient_noise as gradient_noise
from gdjax.per_example import per_example_grad_norms as per_example_grad_norms
from gdjax.per_example import per_example_grads as per_example_grads

__version__ = "0.1.0"
