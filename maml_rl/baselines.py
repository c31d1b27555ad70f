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

    weights: Tensor  # [M, F]; zeros for a task that never gave a finite solution
    reg: Tensor  # [M] regularisation coefficient of the accepted (or last tried) solve
    converged: Tensor  # [M] bool, False where every try failed


def _solve_dtype(device: torch.device) -> torch.dtype:
    # The ridge term 1e-5 is far below float32 resolution of X^T X (entries of order 1e4-1e7
    # for a few thousand steps), so in float32 it would regularise nothing and the nearly
    # collinear time features (t, t^2, t^3, 1) make the system ill-conditioned. rllab solved in
    # float64 with numpy; so do we, except where the device has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def ridge_solve(xtx: Tensor, xty: Tensor, reg_coeff: float, max_tries: int = 5) -> RidgeSolution:
    """Solve ``(X^T X + reg I) w = X^T y`` for each task, raising ``reg`` x10 per task on failure.

    A solve fails when the matrix is numerically singular or the solution is not finite; that
    task is retried with ten times its regularisation, up to ``max_tries`` solves in all (the
    rllab rule). Tasks are independent: one task's failure never changes another's ``reg`` or
    weights. A task that fails every try gets zero weights (a baseline of 0, i.e. plain
    REINFORCE for that task) and a warning, rather than NaNs.

    Args:
        xtx: ``[M, F, F]`` Gram matrices ``X^T X``.
        xty: ``[M, F]`` right-hand sides ``X^T y``.
        reg_coeff: initial ridge coefficient, > 0.
        max_tries: total number of solves per task.

    Returns:
        :class:`RidgeSolution` with weights ``[M, F]``, the ``reg`` used ``[M]``, and
        ``converged`` ``[M]``.
    """
    if xtx.dim() != 3 or xtx.shape[-1] != xtx.shape[-2] or xty.shape != xtx.shape[:-1]:
        raise ValueError(
            f"expected xtx [M, F, F] and xty [M, F], got {tuple(xtx.shape)} and {tuple(xty.shape)}"
        )
    if not reg_coeff > 0:
        raise ValueError(f"reg_coeff must be > 0, got {reg_coeff}")
    num_tasks, num_features = xty.shape
    eye = torch.eye(num_features, dtype=xtx.dtype, device=xtx.device)
    reg = torch.full((num_tasks,), float(reg_coeff), dtype=xtx.dtype, device=xtx.device)
    weights = torch.zeros_like(xty)
    done = torch.zeros(num_tasks, dtype=torch.bool, device=xtx.device)
    for _ in range(max_tries):
        lhs = xtx + reg[:, None, None] * eye
        # solve_ex reports singularity per task in `info` instead of raising for the whole
        # batch, which is what lets each task escalate on its own.
        sol, info = torch.linalg.solve_ex(lhs, xty.unsqueeze(-1), check_errors=False)
        sol = sol.squeeze(-1)
        ok = (info == 0) & torch.isfinite(sol).all(dim=-1) & ~done
        weights = torch.where(ok.unsqueeze(-1), sol, weights)
        done = done | ok
        if bool(done.all()):
            break
        reg = torch.where(done, reg, reg * 10.0)
    return RidgeSolution(weights=weights, reg=reg, converged=done)


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
        reg_coeff: initial ridge coefficient (rllab: 1e-5), raised x10 per task on failure.
        max_tries: total solves per task before giving up on it (rllab: 5).
    """

    def __init__(self, reg_coeff: float = 1e-5, max_tries: int = 5) -> None:
        if not reg_coeff > 0:
            raise ValueError(f"reg_coeff must be > 0, got {reg_coeff}")
        if max_tries < 1:
            raise ValueError(f"max_tries must be >= 1, got {max_tries}")
        self.reg_coeff = float(reg_coeff)
        self.max_tries = int(max_tries)

    def __repr__(self) -> str:
        return f"LinearFeatureBaseline(reg_coeff={self.reg_coeff}, max_tries={self.max_tries})"

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
        solution = ridge_solve(xtx, xty, self.reg_coeff, self.max_tries)
        if not bool(solution.converged.all()):
            failed = torch.nonzero(~solution.converged).flatten().tolist()
            warnings.warn(
                f"LinearFeatureBaseline: no finite fit for task(s) {failed} even with reg up to "
                f"{solution.reg.max().item():.3g}; using a zero baseline there (check the "
                "observations and returns for NaN/inf)",
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
