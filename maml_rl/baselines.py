"""Linear feature baseline, fitted per task, batched over tasks.

The MAML paper's RL runs use rllab's ``LinearFeatureBaseline`` (Duan, Chen, Houthooft, Schulman,
Abbeel 2016, "Benchmarking deep reinforcement learning for continuous control", the rllab
paper): a value estimate linear in hand-made features of the observation and the time step,
refitted from scratch on each task's own episodes before the inner policy-gradient step.
Here every task of a meta-batch is fitted at once: the normal equations of all tasks are
stacked into ``[M, F, F]`` and solved with one batched ``torch.linalg`` call.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["LinearFeatureBaseline", "RidgeSolution", "ridge_solve"]

# rllab clips observations before building features so one wild state cannot dominate the fit.
_OBS_CLIP = 10.0
# rllab's time feature is step / 100, keeping t^3 of order 1-10 for horizons of 100-200.
_TIME_SCALE = 100.0


class RidgeSolution(NamedTuple):
    """Result of :func:`ridge_solve`, one entry per task."""

    weights: Tensor  # [M, F]; zeros for a task whose system is not finite
    converged: Tensor  # [M] bool, False where the system held NaN/inf


def _solve_dtype(device: torch.device) -> torch.dtype:
    # The ridge term 1e-5 is far below float32 resolution of X^T X (entries of order 1e4-1e7
    # for a few thousand steps), so in float32 it would regularise nothing and the nearly
    # collinear time features (t, t^2, t^3, 1) make the system ill-conditioned. rllab solved in
    # float64 with numpy; so do we, except where the device has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def ridge_solve(xtx: Tensor, xty: Tensor, reg_coeff: float) -> RidgeSolution:
    """Minimum-norm solution of ``(X^T X + reg I) w = X^T y`` for each task.

    The matrix is symmetric positive semi-definite, so it is diagonalised (``eigh``) and
    inverted on the eigenvalues above ``F * eps * largest``; directions below that cut-off are
    numerically singular and get no weight. Where the system is regular this is the ridge
    solution; where it is singular (e.g. constant observations, whose ``o``, ``o^2`` and bias
    features are collinear, with ``reg`` lost to rounding) it is the least-squares solution of
    smallest norm, which is well defined on every machine. rllab instead retried a failed solve
    with ten times the regularisation, but whether a solve "fails" depends on the LAPACK build,
    so the answer did too. Tasks are independent: each is solved on its own batch entry. A task
    whose system holds NaN/inf gets zero weights (a baseline of 0, i.e. plain REINFORCE there)
    and ``converged=False``.

    Args:
        xtx: ``[M, F, F]`` Gram matrices ``X^T X``.
        xty: ``[M, F]`` right-hand sides ``X^T y``.
        reg_coeff: ridge coefficient, > 0 (rllab: 1e-5).

    Returns:
        :class:`RidgeSolution` with weights ``[M, F]`` and ``converged`` ``[M]``.
    """
    if xtx.dim() != 3 or xtx.shape[-1] != xtx.shape[-2] or xty.shape != xtx.shape[:-1]:
        raise ValueError(
            f"expected xtx [M, F, F] and xty [M, F], got {tuple(xtx.shape)} and {tuple(xty.shape)}"
        )
    if not reg_coeff > 0:
        raise ValueError(f"reg_coeff must be > 0, got {reg_coeff}")
    num_features = xty.shape[-1]
    eye = torch.eye(num_features, dtype=xtx.dtype, device=xtx.device)
    finite = torch.isfinite(xtx).flatten(1).all(dim=1) & torch.isfinite(xty).all(dim=1)
    # A non-finite task would make eigh fail for the whole batch: solve I w = 0 in its place.
    lhs = torch.where(finite[:, None, None], xtx + reg_coeff * eye, eye)
    rhs = torch.where(finite[:, None], xty, torch.zeros_like(xty))
    evals, evecs = torch.linalg.eigh(lhs)
    cutoff = num_features * torch.finfo(lhs.dtype).eps * evals.abs().amax(dim=-1, keepdim=True)
    keep = evals > cutoff
    inverse = torch.where(keep, 1.0 / torch.where(keep, evals, torch.ones_like(evals)), 0.0)
    coords = (evecs.transpose(-1, -2) @ rhs.unsqueeze(-1)).squeeze(-1)
    weights = (evecs @ (inverse * coords).unsqueeze(-1)).squeeze(-1)
    return RidgeSolution(weights=weights, converged=finite)


class LinearFeatureBaseline:
    """rllab's linear feature baseline (Duan et al. 2016), fitted per task and batched.

    Features of step ``t`` with observation ``o`` (clipped to [-10, 10]) and ``s = t / 100``:
    ``[o, o^2, s, s^2, s^3, 1]``, so ``F = 2 * D + 4``. Weights minimise the ridge-regularised
    squared error to the empirical returns over the valid steps of one task's episodes.

    The object holds no fitted state: :meth:`fit` returns the weights and :meth:`predict` takes
    them, so one instance serves every task and every meta-iteration, and nothing is mutated.
    Inputs are detached: the baseline is a constant with respect to the policy, which keeps the
    policy-gradient estimate unbiased and keeps the fit out of the meta-gradient graph.

    Args:
        reg_coeff: ridge coefficient (rllab: 1e-5); singular systems get the minimum-norm
            solution (:func:`ridge_solve`).
    """

    def __init__(self, reg_coeff: float = 1e-5) -> None:
        if not reg_coeff > 0:
            raise ValueError(f"reg_coeff must be > 0, got {reg_coeff}")
        self.reg_coeff = float(reg_coeff)

    def __repr__(self) -> str:
        return f"LinearFeatureBaseline(reg_coeff={self.reg_coeff})"

    @staticmethod
    def num_features(obs_dim: int) -> int:
        """Number of features ``F`` for observations of dimension ``obs_dim``."""
        return 2 * obs_dim + 4

    def features(self, observations: Tensor, mask: Tensor) -> Tensor:
        """Feature tensor ``[M, N, T, F]`` for observations ``[M, N, T, D]``; 0 at padded steps.

        Padded rows are zeroed so that they add nothing to ``X^T X`` and ``X^T y``.
        """
        _check_shapes(observations, mask)
        obs = observations.detach().clamp(-_OBS_CLIP, _OBS_CLIP)
        steps = torch.arange(obs.shape[-2], dtype=obs.dtype, device=obs.device) / _TIME_SCALE
        s = steps.unsqueeze(-1).expand(*obs.shape[:-1], 1)
        feats = torch.cat([obs, obs * obs, s, s**2, s**3, torch.ones_like(s)], dim=-1)
        return feats * mask.detach().to(feats.dtype).unsqueeze(-1)

    def fit(self, observations: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
        """Fit one weight vector per task by ridge least squares.

        Args:
            observations: ``[M, N, T, D]``.
            returns: ``[M, N, T]`` empirical (discounted) returns.
            mask: ``[M, N, T]``, 1.0 at valid steps.

        Returns:
            weights ``[M, F]`` in float64 (float32 on MPS); see :func:`ridge_solve`.
        """
        _check_shapes(observations, mask)
        if returns.shape != mask.shape:
            raise ValueError(
                f"returns must have the mask's shape {tuple(mask.shape)}, "
                f"got {tuple(returns.shape)}"
            )
        dtype = _solve_dtype(observations.device)
        num_tasks = observations.shape[0]
        feats = self.features(observations.to(dtype), mask)
        feats = feats.reshape(num_tasks, -1, feats.shape[-1])
        targets = (returns.detach().to(dtype) * mask.to(dtype)).reshape(num_tasks, -1, 1)
        xtx = feats.transpose(1, 2) @ feats
        xty = (feats.transpose(1, 2) @ targets).squeeze(-1)
        solution = ridge_solve(xtx, xty, self.reg_coeff)
        if not bool(solution.converged.all()):
            failed = torch.nonzero(~solution.converged).flatten().tolist()
            warnings.warn(
                f"LinearFeatureBaseline: no finite fit for task(s) {failed}; using a zero "
                "baseline there (check the observations and returns for NaN/inf)",
                RuntimeWarning,
                stacklevel=2,
            )
        return solution.weights

    def predict(self, observations: Tensor, mask: Tensor, weights: Tensor) -> Tensor:
        """Baseline values ``[M, N, T]`` (0 at padded steps) in the observations' dtype.

        Args:
            observations: ``[M, N, T, D]``.
            mask: ``[M, N, T]``.
            weights: ``[M, F]`` from :meth:`fit`.
        """
        _check_shapes(observations, mask)
        expected = (observations.shape[0], self.num_features(observations.shape[-1]))
        if weights.shape != expected:
            raise ValueError(f"weights must be [M, F] = {expected}, got {tuple(weights.shape)}")
        # Evaluate in the weights' precision: the polynomial time features are nearly collinear,
        # so the weights can be large with opposite signs and cancel.
        feats = self.features(observations.to(weights.dtype), mask)
        values = torch.einsum("mntf,mf->mnt", feats, weights.detach())
        return values.to(observations.dtype)

    def fit_predict(self, observations: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
        """Fit on the given episodes and return the baseline values ``[M, N, T]`` for them."""
        weights = self.fit(observations, returns, mask)
        return self.predict(observations, mask, weights)


def _check_shapes(observations: Tensor, mask: Tensor) -> None:
    if observations.dim() != 4:
        raise ValueError(
            f"observations must be [M, N, T, D], got shape {tuple(observations.shape)}"
        )
    if mask.shape != observations.shape[:-1]:
        raise ValueError(
            f"mask must be [M, N, T] = {tuple(observations.shape[:-1])}, got {tuple(mask.shape)}"
        )
