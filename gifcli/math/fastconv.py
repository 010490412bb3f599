"""A cheaper second derivative for 2-D convolutions (exact; used by the HVP hot loop).

PyTorch differentiates a convolution's backward with a generic composite
(``_convolution_double_backward``): on the CPU it computes the transposed convolution
``conv_transpose(grad_out, v_W)`` through a slow non-mkldnn path and the weight gradient
``corr(v_x, grad_out)`` as a convolution over transposed, copied tensors. Profiling one HVP of
the MNIST cnn put ~25 % of its time there (benchmarks/hvp_ratio.py, README).

Inside :func:`fast_conv_double_backward` every ``conv2d`` call goes through :class:`_Conv2d`,
whose backward is itself a function (:class:`_Conv2dBackward`) with a hand-written backward
built from ``aten.convolution_backward`` (the optimised first-order kernels) and plain
convolutions. The algebra, for ``y = conv(x, W) + b`` with upstream gradient ``G``:

* first order: ``gx = conv_T(G, W)``, ``gW = corr(x, G)``, ``gb = sum G``;
* second order, with tangents ``(u_x, u_W, u_b)`` on ``(gx, gW, gb)``:
  ``d/dG = conv(u_x, W) + conv(x, u_W) + u_b``, ``d/dx = conv_T(G, u_W)``,
  ``d/dW = corr(u_x, G)``.

Two exact savings use the structure of GIF's products (eq. 13), both for ``groups == 1``:

* *row-sparse tangents*: in ``H [v; 0]`` the tangent ``u_W`` is zero outside the selected output
  channels, so ``conv(x, u_W)`` and ``conv_T(G, u_W)`` are computed on those channels only
  (detected from the values: any weight tangent with under half its rows non-zero);
* *needed rows*: in ``(H u)_J`` only the selected rows of each weight's product are read, so
  inside :func:`only_rows` the weight parts ``corr(u_x, G)`` and ``corr(x, G)`` are computed for
  those rows only and the other rows are left zero (not the true product there).

The values are the same products (tested against explicit float64 Hessians); only the kernels
differ. The second-order backward is written in differentiable ops, so higher derivatives
(``create_graph=True`` through a product) stay exact too. :func:`only_rows` is for plain
products (``HessianSample.hvp(v, only=J)``); a backward that records a graph ignores it.
Calls with string padding (``"same"``) fall through to PyTorch's own convolution.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

_aten_conv_backward = torch.ops.aten.convolution_backward.default

# weight key (data_ptr) -> output rows whose weight products are needed; None = all rows
_NEEDED_ROWS: contextvars.ContextVar[dict[int, torch.Tensor] | None] = contextvars.ContextVar(
    "gif_needed_rows", default=None
)


@contextlib.contextmanager
def only_rows(rows: dict[int, torch.Tensor]) -> Iterator[None]:
    """Inside the block, weight products are computed only on ``rows[weight.data_ptr()]``."""
    token = _NEEDED_ROWS.set(rows)
    try:
        yield
    finally:
        _NEEDED_ROWS.reset(token)


def _needed_rows(key: int, groups: int) -> torch.Tensor | None:
    table = _NEEDED_ROWS.get()
    if table is None or groups != 1 or torch.is_grad_enabled():
        return None
    return table.get(key)


def _weight_grad_rows(grad_out, x, weight, rows, stride, padding, dilation) -> torch.Tensor:
    """corr(x, grad_out) on output rows ``rows`` only, zero elsewhere."""
    out = torch.zeros_like(weight)
    if rows.numel():
        out[rows] = _aten_conv_backward(
            grad_out[:, rows].contiguous(), x, weight[rows], None, stride, padding, dilation, False,
            [0, 0], 1, [False, True, False],
        )[1]
    return out


def _pair(v) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(e) for e in v]


class _Conv2dBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad_out, x, weight, has_bias, stride, padding, dilation, groups, mask, key):  # noqa: D401
        ctx.save_for_backward(grad_out, x, weight)
        ctx.conf = (has_bias, stride, padding, dilation, groups, key)
        bias_sizes = [weight.shape[0]] if has_bias else None
        rows = _needed_rows(key, groups) if mask[1] else None
        gx, gw, gb = _aten_conv_backward(
            grad_out, x, weight, bias_sizes, stride, padding, dilation, False, [0, 0], groups,
            [mask[0], mask[1] and rows is None, mask[2] and has_bias],
        )
        if rows is not None:
            gw = _weight_grad_rows(grad_out, x, weight, rows, stride, padding, dilation)
        return gx, gw, gb

    @staticmethod
    def backward(ctx, u_x, u_w, u_b):
        grad_out, x, weight = ctx.saved_tensors
        has_bias, stride, padding, dilation, groups, key = ctx.conf
        d_grad_out = d_x = d_w = None
        # rows of u_W that are non-zero (GIF's first product: only J's output channels)
        w_rows = None
        if u_w is not None and groups == 1:
            nonzero = u_w.reshape(u_w.shape[0], -1).ne(0).any(1)
            if int(nonzero.sum()) * 2 < u_w.shape[0]:
                w_rows = torch.nonzero(nonzero).reshape(-1)
                if w_rows.numel() == 0:
                    u_w = None
        terms = []
        if u_x is not None:
            terms.append(F.conv2d(u_x, weight, None, stride, padding, dilation, groups))
        if u_b is not None and has_bias:
            terms.append(u_b.reshape(1, -1, *([1] * (grad_out.dim() - 2))).expand_as(grad_out))
        if u_w is not None and w_rows is None:
            terms.append(F.conv2d(x, u_w, None, stride, padding, dilation, groups))
        if ctx.needs_input_grad[0] and (terms or u_w is not None):
            d_grad_out = sum(terms[1:], terms[0]) if terms else torch.zeros_like(grad_out)
            if u_w is not None and w_rows is not None:
                part = F.conv2d(x, u_w[w_rows], None, stride, padding, dilation, 1)
                d_grad_out = d_grad_out.index_add(1, w_rows, part)
        if ctx.needs_input_grad[1] and u_w is not None:
            if w_rows is None:
                d_x = _aten_conv_backward(
                    grad_out, x, u_w, None, stride, padding, dilation, False, [0, 0], groups, [True, False, False]
                )[0]
            else:
                d_x = _aten_conv_backward(
                    grad_out[:, w_rows].contiguous(), x, u_w[w_rows], None, stride, padding, dilation, False,
                    [0, 0], 1, [True, False, False],
                )[0]
        if ctx.needs_input_grad[2] and u_x is not None:
            rows = _needed_rows(key, groups)
            if rows is None:
                d_w = _aten_conv_backward(
                    grad_out, u_x, weight, None, stride, padding, dilation, False, [0, 0], groups, [False, True, False]
                )[1]
            else:
                d_w = _weight_grad_rows(grad_out, u_x, weight, rows, stride, padding, dilation)
        return d_grad_out, d_x, d_w, None, None, None, None, None, None, None


class _Conv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        ctx.save_for_backward(x, weight)
        ctx.conf = (bias is not None, stride, padding, dilation, groups, weight.data_ptr())
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        has_bias, stride, padding, dilation, groups, key = ctx.conf
        mask = tuple(ctx.needs_input_grad[:3])
        gx, gw, gb = _Conv2dBackward.apply(
            grad_out, x, weight, has_bias, stride, padding, dilation, groups, mask, key
        )
        return (gx if mask[0] else None), (gw if mask[1] else None), (gb if mask[2] else None), None, None, None, None


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """``F.conv2d`` with the cheaper double backward (numeric padding only)."""
    return _Conv2d.apply(x, weight, bias, _pair(stride), _pair(padding), _pair(dilation), int(groups))


class _Mode(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d or func is torch.conv2d:
            names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
            call = dict(zip(names, args))
            call.update(kwargs)
            if not isinstance(call.get("padding", 0), str) and call["input"].dim() == 4:
                return conv2d(
                    call["input"], call["weight"], call.get("bias"), call.get("stride", 1),
                    call.get("padding", 0), call.get("dilation", 1), call.get("groups", 1),
                )
        return func(*args, **kwargs)


@contextlib.contextmanager
def fast_conv_double_backward() -> Iterator[None]:
    """Route every ``conv2d`` called inside the block through :class:`_Conv2d`."""
    with _Mode():
        yield
