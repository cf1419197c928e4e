"""Curvature of the cost: Hessian-vector products, eigenvalues, trace, Taylor error, Newton.

Gradient descent ``θ ← θ − η ∇C`` follows the tangent of C. How wrong that
linear model of C is depends on the Hessian ``H = ∇²C(θ)``: to second order

    C(θ + η d) = C(θ) + η ∇Cᵀd + ½ η² dᵀH d + O(η³),

so the first-order prediction of a step is off by about ½η²dᵀHd, gradient
descent on a quadratic is stable only for ``η < 2/λ_max(H)``, and a Newton step
``θ − H⁻¹∇C`` lands on the minimum of a quadratic in one step. This package
measures those quantities without ever forming H: everything is built on the
Hessian-vector product ``Hv`` (Pearlmutter 1994), which costs about two
gradients.

Every function takes the cost as ``f(params, *args)``, a scalar function of a
params pytree, e.g. ``f = gdjax.objective(model, "mse")`` with ``args = (x, y)``.
Each idea lives in its own module (a module imports only those above it here), and
every public name is re-exported here, so ``gdjax.curvature.hvp`` works:

- ``products``: :func:`hvp` — ``Hv`` by forward-over-reverse differentiation;
  :func:`hvp_operator` — ``v ↦ Hv`` at a fixed θ, linearised once: each
  product then costs about 1.6 gradients instead of 2.1 (every iterative
  method below uses it); :func:`gnvp` — the Gauss–Newton product
  ``Gv = JᵀH_out J v`` (the positive semi-definite part of H for mse and the
  cross-entropies).
- ``eigen``: :func:`top_eigenvalues` — the k largest (or largest-magnitude)
  eigenvalues of H and their eigenvectors, by Lanczos or by power iteration.
- ``hutchinson``: :func:`trace` — Hutchinson's estimate of ``tr H`` with its standard error
  (the module is not named ``trace``, which would clash with the function here).
- ``density``: :func:`spectral_density` — the density of the eigenvalues of H by
  stochastic Lanczos quadrature: quadrature nodes and weights, and a smoothed density.
- ``layers``: :func:`layer_curvature` — λ_max and trace of each layer's
  diagonal block H_ll.
- ``taylor``: :func:`taylor_step` — actual ΔC of a step vs its first- and
  second-order predictions, for many step sizes η at once.
- ``sharpness``: :func:`track_sharpness` — a :func:`~gdjax.train.fit` callback
  recording λ_max(H) during training (warm-started Lanczos), to watch it reach 2/η.
- ``newton``: :func:`newton_step` — a damped Newton step, dense or by conjugate
  gradient on Hessian-vector products (Hessian-free).
- ``population``: the same analyses for every member of a population (params
  with a leading member axis, as :func:`~gdjax.train.fit_population` returns
  them) in one batched call: :func:`population_top_eigenvalues`,
  :func:`population_trace`, :func:`population_taylor_step` and the
  ``fit_population`` callback :func:`track_population_sharpness`.

Any model: params may be any pytree of floating arrays (``MLP.init``'s list of
layer dicts, a dict of conv kernels, a split Equinox or Flax NNX module), and
:func:`gnvp` and :func:`track_sharpness` take any ``apply(params, x)``. Where a
*layer* is meant (:func:`layer_curvature`, ``taylor_step(layer=...)``) it is a
top-level entry of params that holds arrays, in ``jax.tree_util`` order.

Data that does not fit one call: every function that evaluates ``f`` over the
batch takes ``data_chunk=k``, which splits the data along axis 0 into chunks of
k examples and accumulates the mean over examples inside jit, so peak memory
follows k (``f`` must be a mean over the examples).

Speed as called: every function here compiles itself once per static
configuration (``f``, model, loss, sizes) and input shapes, and a later eager
call runs the compiled program (:mod:`gdjax._jit`); inside a user's own
``jit``/``vmap``/``grad`` the functions are traced as part of it, as before.
``f`` is a static argument, hashed **by identity**: pass the *same* ``f``
object on every call (build it once with ``objective``) and nothing
recompiles; a ``lambda`` or closure written inside a loop is a new ``f`` on
every call and compiles every time. Inputs are checked before anything
compiles: ``f`` must be callable as ``f(params, *args)`` and return a floating
scalar (read from its abstract output, ``jax.eval_shape``).
"""

from gdjax.curvature.density import SpectralDensity as SpectralDensity
from gdjax.curvature.density import spectral_density as spectral_density
from gdjax.curvature.eigen import Eigen as Eigen
from gdjax.curvature.eigen import top_eigenvalues as top_eigenvalues
from gdjax.curvature.hutchinson import TraceEstimate as TraceEstimate
from gdjax.curvature.hutchinson import trace as trace
from gdjax.curvature.layers import LayerCurvature as LayerCurvature
from gdjax.curvature.layers import layer_curvature as layer_curvature
from gdjax.curvature.newton import DENSE_WARN_PARAMS as DENSE_WARN_PARAMS
from gdjax.curvature.newton import MAX_DENSE_PARAMS as MAX_DENSE_PARAMS
from gdjax.curvature.newton import CostWarning as CostWarning
from gdjax.curvature.newton import NewtonResult as NewtonResult
from gdjax.curvature.newton import newton_step as newton_step
from gdjax.curvature.population import PopulationEigen as PopulationEigen
from gdjax.curvature.population import PopulationSharpnessTracker as PopulationSharpnessTracker
from gdjax.curvature.population import PopulationTaylor as PopulationTaylor
from gdjax.curvature.population import PopulationTrace as PopulationTrace
from gdjax.curvature.population import population_taylor_step as population_taylor_step
from gdjax.curvature.population import population_top_eigenvalues as population_top_eigenvalues
from gdjax.curvature.population import population_trace as population_trace
from gdjax.curvature.population import track_population_sharpness as track_population_sharpness
from gdjax.curvature.products import gnvp as gnvp
from gdjax.curvature.products import hvp as hvp
from gdjax.curvature.products import hvp_operator as hvp_operator
from gdjax.curvature.sharpness import SharpnessTracker as SharpnessTracker
from gdjax.curvature.sharpness import track_sharpness as track_sharpness
from gdjax.curvature.taylor import TaylorResult as TaylorResult
from gdjax.curvature.taylor import taylor_step as taylor_step

__all__ = [
    "hvp",
    "hvp_operator",
    "gnvp",
    "top_eigenvalues",
    "Eigen",
    "trace",
    "TraceEstimate",
    "spectral_density",
    "SpectralDensity",
    "layer_curvature",
    "LayerCurvature",
    "track_sharpness",
    "SharpnessTracker",
    "taylor_step",
    "TaylorResult",
    "newton_step",
    "NewtonResult",
    "MAX_DENSE_PARAMS",
    "DENSE_WARN_PARAMS",
    "CostWarning",
    "population_top_eigenvalues",
    "PopulationEigen",
    "population_trace",
    "PopulationTrace",
    "population_taylor_step",
    "PopulationTaylor",
    "track_population_sharpness",
    "PopulationSharpnessTracker",
]
