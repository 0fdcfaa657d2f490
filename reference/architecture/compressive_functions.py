"""Compression functions f_c of the Compressive Transformer, each a forward/backward pair.

Rae, Potapenko, Jayakumar, Hillier, Lillicrap, "Compressive Transformers for Long-Range
Sequence Modelling", ICLR 2020, arXiv:1911.05507v1, §3.2 (spec architecture.md §1.5).

Axes: B batch, N = n_s rows of old memories, C = N / c compressed rows, D width,
K kernel taps of the dilated convolution.

f_c maps the evicted memories M (B, N, D) to C = N / c compressed rows (c | N is required):

    mean pool     C_j = (1/c) sum_{r<c} M_{jc+r}
    max pool      C_{j,k} = max_{r<c} M_{jc+r,k}             argmax r*_{j,k} saved (first on ties)
    conv          C_j = b_c + sum_{r<c} M_{jc+r} W_r         kernel = stride = c; W_c (c, D, D)
    dilated conv  C_j = b_c + sum_{r<K} M_{jc+r delta} W_r   stride c, rows past the end are zeros
    most used     C = M[keep]                                keep: (B, C) row indices, increasing

Backward (given dC):

    mean          dM_{jc+r} = dC_j / c
    max           dM_{jc+r,k} = dC_{j,k} [r = r*_{j,k}]
    conv          dMt = dC Wt^T, dWt = Mt^T dC, db = sum_j dC_j     Mt = M reshaped (B, C, c D)
    dilated       the conv backward on the gathered rows, then the gather's transpose
    most used     dM = scatter of dC rows back to the kept rows, zero elsewhere

Gathers (dilated conv, most used) are matmuls with a 0/1 selection matrix S:
gathered = S M and dM = S^T dgathered, so zero padding is a zero row of S.

Paper symbol → name: c → ``rate``; n_s → N; W_c, b_c → ``w_c``, ``b_c``.
**Deviations**: the paper gives no kernel size or dilation for the dilated convolution [U];
they are the explicit ``kernel`` (default c) and ``dilation`` (default 2) here.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import array_namespace, one_hot
from ..validate import require_float, require_index_range, require_shape

COMPRESSIONS = ("conv", "mean", "max", "dilated", "most_used")
#: Parameters each compression function owns.
COMPRESSION_PARAMS = {"conv": ("w_c", "b_c"), "dilated": ("w_c", "b_c"), "mean": (), "max": (), "most_used": ()}


class CompressionCache(NamedTuple):
    kind: str
    rate: int
    n_rows: int  # N
    rows: Any | None  # (B, C, K D) the rows each output combines (conv kinds), else None
    w_c: Any | None  # (K, D, D) conv weight, else None
    select: Any | None  # (C K, N) or (B, C, N) 0/1 selection matrix (dilated, most used), else None
    argmax: Any | None  # (B, C, D) int, max pool only


def dilated_selection(n_rows: int, rate: int, kernel: int, dilation: int, *, xp, dtype) -> Any:
    """(C K, N) 0/1 matrix: row j K + r picks memory row j c + r dilation (zero past the end)."""
    n_out = n_rows // rate
    j = xp.arange(n_out)[:, None]
    r = xp.arange(kernel)[None, :]
    picked = xp.reshape(j * rate + r * dilation, (-1,))  # (C K,)
    columns = xp.arange(n_rows)[None, :]
    return xp.astype(picked[:, None] == columns, dtype)  # (C K, N)


def compress_forward(old_mem: Any, params: dict[str, Any], *, kind: str, rate: int, kernel: int | None = None,
                     dilation: int = 2, keep: Any | None = None) -> tuple[Any, CompressionCache]:
    """f_c(old_mem): (B, N, D) → (B, N / rate, D).

    params: ``w_c`` (K, D, D) and ``b_c`` (D,) for "conv" (K = rate) and "dilated" (K = kernel).
    keep: (B, N / rate) increasing row indices for "most_used" (see :func:`most_used_rows`).
    """
    xp = array_namespace(old_mem)
    require_float("old_mem", old_mem)
    require_shape("old_mem", old_mem, ["batch", "n_s", "d_model"], [None, None, None])
    if kind not in COMPRESSIONS:
        raise ValueError(f"kind must be one of {COMPRESSIONS}, got {kind!r}")
    b, n, d = old_mem.shape
    if not isinstance(rate, int) or rate < 1 or n % rate:
        raise ValueError(f"rate must be a positive integer dividing n_s={n}, got {rate!r}")
    n_out = n // rate
    if kind == "mean":  # C_j = (1/c) sum_r M_{jc+r}
        windows = xp.reshape(old_mem, (b, n_out, rate, d))  # (B, C, c, D)
        return xp.mean(windows, axis=2), CompressionCache(kind, rate, n, None, None, None, None)
    if kind == "max":  # C_{j,k} = max_r M_{jc+r,k}
        windows = xp.reshape(old_mem, (b, n_out, rate, d))  # (B, C, c, D)
        argmax = xp.argmax(windows, axis=2)  # (B, C, D)
        return xp.max(windows, axis=2), CompressionCache(kind, rate, n, None, None, None, argmax)
    if kind == "most_used":
        if keep is None:
            raise ValueError("keep must be given for kind='most_used': (batch, n_s / rate) row indices")
        require_shape("keep", keep, ["batch", "n_s / rate"], [b, n_out])
        require_index_range("keep", keep, n)
        select = one_hot(keep, n, dtype=old_mem.dtype)  # (B, C, N)
        return xp.matmul(select, old_mem), CompressionCache(kind, rate, n, None, None, select, None)  # (B, C, D)
    # Convolutions: Mt (B, C, K D) times Wt (K D, D).
    w_c, b_c = params.get("w_c"), params.get("b_c")
    if w_c is None or b_c is None:
        raise ValueError(f"params must hold w_c (kernel, d_model, d_model) and b_c (d_model,) for kind={kind!r}")
    taps = rate if kind == "conv" else (rate if kernel is None else kernel)
    require_shape("w_c", w_c, ["kernel", "d_model", "d_model"], [taps, d, d])
    require_shape("b_c", b_c, ["d_model"], [d])
    if kind == "conv":
        select = None
        rows = xp.reshape(old_mem, (b, n_out, rate * d))  # (B, C, c D)
    else:
        if dilation < 1:
            raise ValueError(f"dilation must be a positive integer, got {dilation!r}")
        select = dilated_selection(n, rate, taps, dilation, xp=xp, dtype=old_mem.dtype)  # (C K, N)
        rows = xp.reshape(xp.matmul(select, old_mem), (b, n_out, taps * d))  # (B, C, K D)
    out = xp.matmul(rows, xp.reshape(w_c, (taps * d, d))) + b_c  # (B, C, D)
    return out, CompressionCache(kind, rate, n, rows, w_c, select, None)


def compress_backward(dout: Any, cache: CompressionCache) -> tuple[Any, dict[str, Any]]:
    """Returns d old_mem (B, N, D) and the gradients of the compression's own parameters."""
    xp = array_namespace(dout)
    kind, rate, n, rows, w_c, select, argmax = cache
    b, n_out, d = dout.shape
    if kind == "mean":  # dM_{jc+r} = dC_j / c
        dwin = xp.broadcast_to(dout[:, :, None, :] / rate, (b, n_out, rate, d))  # (B, C, c, D)
        return xp.reshape(dwin, (b, n, d)), {}
    if kind == "max":  # route dC to the saved argmax
        hit = xp.astype(argmax[:, :, None, :] == xp.arange(rate)[None, None, :, None], dout.dtype)  # (B, C, c, D)
        return xp.reshape(hit * dout[:, :, None, :], (b, n, d)), {}
    if kind == "most_used":  # dM = S^T dC
        return xp.matmul(xp.matrix_transpose(select), dout), {}  # (B, N, D)
    taps = w_c.shape[0]
    wt = xp.reshape(w_c, (taps * d, d))  # (K D, D)
    drows = xp.matmul(dout, xp.matrix_transpose(wt))  # (B, C, K D)
    dwt = xp.matmul(xp.matrix_transpose(xp.reshape(rows, (-1, taps * d))), xp.reshape(dout, (-1, d)))  # (K D, D)
    grads = {"w_c": xp.reshape(dwt, (taps, d, d)), "b_c": xp.sum(dout, axis=(0, 1))}
    if kind == "conv":
        return xp.reshape(drows, (b, n, d)), grads
    dgathered = xp.reshape(drows, (b, n_out * taps, d))  # (B, C K, D)
    return xp.matmul(xp.matrix_transpose(select), dgathered), grads  # (B, N, D)


def most_used_rows(usage: Any, n_keep: int) -> Any:
    """The ``n_keep`` rows of largest usage per batch row, in temporal (increasing) order: (B, n_keep) int.

    usage: (B, N) how much attention each old memory received while in memory.
    Ties go to the earlier row (a stable descending sort).
    """
    xp = array_namespace(usage)
    require_float("usage", usage)
    order = xp.argsort(-usage, axis=1, stable=True)  # (B, N) most used first
    return xp.sort(order[:, :n_keep], axis=1)  # (B, n_keep)
