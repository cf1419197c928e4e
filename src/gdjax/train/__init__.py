"""Jitted update steps and the training loop: full-batch GD, SGD and minibatches.

One step of gradient descent with an optax optimizer is

    g = ∂C/∂θ (by hand: gdjax.backprop; or by jax.value_and_grad),
    u, s ← optimizer.update(g, s, θ),    θ ← θ + u          (u = −η g for plain SGD)

:func:`make_step` returns that step as one jitted function whose params and
optimizer-state buffers are donated. :func:`fit` runs whole epochs: each epoch
draws a permutation (:func:`gdjax.data.permutation`) of the n training examples with the key
``fold_in(key, epoch)``, cuts it into ⌊n/B⌋ batches of B examples that run
inside one ``lax.scan``, then one last step on the r = n mod B remaining
examples (a *ragged last batch*: its cost is the mean over those r examples, so
every example is used exactly once per epoch). ``batch_size=None`` is
full-batch gradient descent (one step per epoch), ``1`` is SGD.

Divergence: a step whose batch loss or new params are not finite is not
applied; the epoch finishes without further updates, ``fit`` stops there with
a :class:`DivergedWarning` naming the epoch, the step, the last finite loss and
the learning rate, and returns the last finite params. (The steps themselves
check nothing: ``fit`` checks each block of epochs once at its end and reruns a
block that is not finite with a check on every step, from a copy of its
inputs, which gives the same results at no per-step cost.)

Data parallelism (``mesh=``): with a :class:`jax.sharding.Mesh` that has an
axis ``"data"`` (or ``mesh="local"`` for all local devices), params and
optimizer state are replicated on every device and every step's batch is split
into equal row blocks over ``"data"``. Each device runs the forward pass and the
hand-written backward pass on its rows; the sums over examples in
``∂C/∂w^l = Σ_x δ^l_x (a^{l-1}_x)ᵀ`` and in C become partial sums that XLA
all-reduces, so every device applies the same update. The result equals the
one-device step up to the order of those sums (float rounding). A batch whose
rows do not divide over the devices is refused (see :func:`fit` for the rule).

Checkpoints (``fit(..., run_dir=d, checkpoint_every=k)``): every k epochs,
and at the end, params, optimizer state, history and the position (epoch,
shuffle key, divergence flag) are written atomically with
:func:`gdjax.runs.save_checkpoint`, with a fingerprint of the config. Running
the same ``fit`` again resumes after the last checkpoint and gives the params of
an uninterrupted run bit for bit; a checkpoint of another config is refused.

The package, bottom to top: ``gdjax.train.step`` (one step, the
optimizers, meshes, evaluation), ``gdjax.train.epochs`` (the jitted blocks of
epochs), ``gdjax.train.history`` (the host's record of a run),
``gdjax.train.checkpoints`` (writing and resuming), then ``gdjax.train.loop``
(:func:`fit`) and ``gdjax.train.population`` (:func:`fit_population`, many
members in one jitted run) on top.
"""

from gdjax.metrics import accuracy as accuracy
from gdjax.train.epochs import MAX_EPOCHS_PER_CALL as MAX_EPOCHS_PER_CALL
from gdjax.train.epochs import steps_per_epoch as steps_per_epoch
from gdjax.train.history import DivergedWarning as DivergedWarning
from gdjax.train.history import LongRunWarning as LongRunWarning
from gdjax.train.loop import FitResult as FitResult
from gdjax.train.loop import fit as fit
from gdjax.train.population import PopulationResult as PopulationResult
from gdjax.train.population import fit_population as fit_population
from gdjax.train.step import DATA_AXIS as DATA_AXIS
from gdjax.train.step import MEMBER_AXIS as MEMBER_AXIS
from gdjax.train.step import OPTIMIZERS as OPTIMIZERS
from gdjax.train.step import data_mesh as data_mesh
from gdjax.train.step import evaluate as evaluate
from gdjax.train.step import make_optimizer as make_optimizer
from gdjax.train.step import make_step as make_step
from gdjax.train.step import member_mesh as member_mesh

__all__ = [
    "OPTIMIZERS",
    "make_optimizer",
    "make_step",
    "fit",
    "MAX_EPOCHS_PER_CALL",
    "fit_population",
    "PopulationResult",
    "evaluate",
    "FitResult",
    "DivergedWarning",
    "LongRunWarning",
    "data_mesh",
    "member_mesh",
]
