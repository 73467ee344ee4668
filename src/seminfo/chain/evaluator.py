"""Network evaluations for a list of (trajectory, condition) pairs, in padded chunks: the sampler's only costly step.

``PairEvaluator`` applies the precision (``network_precision``: fp32, TF32 or bf16 autocast, around the network
only), channels-last memory layout and torch.compile, and times the network calls when asked (CUDA events on a GPU,
read once at the end, so timing adds no host sync).

Precisions. 'fp32' is IEEE float32 everywhere, on a GPU too: PyTorch lets cuDNN convolutions use TF32 by default
(``torch.backends.cudnn.allow_tf32``), which rounds their inputs to a 10-bit mantissa, so the evaluator switches TF32
off for 'fp32'. 'tf32' (CUDA only) lets matmuls and convolutions use it; 'bf16' autocasts to bfloat16 (a 7-bit
mantissa). The rounding noise each adds to the difference of two conditions' outputs biases the Bayes increments;
``seminfo.chain.precision`` derives the bias and measures it at a network's real size.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager

import torch

log = logging.getLogger(__name__)

__all__ = ["PRECISIONS", "PairEvaluator", "network_precision"]

PRECISIONS = ("fp32", "tf32", "bf16")
# Chunks are padded up to one of a few sizes, so that pruning (a different pair count at every step) gives a
# handful of input shapes, each prepared once by the conv backend (eager) or compiled once (compile):
# eager, multiples of eval_batch / 8; compiled, eval_batch / 8, / 4, / 2 and eval_batch itself.
_EAGER_BUCKETS = 8
_COMPILED_BUCKETS = 4
_CHANNELS_LAST = True


@contextmanager
def network_precision(precision: str, device):
    """Run the enclosed network calls in ``precision`` on ``device`` (a ``torch.device``); restores the TF32 flags."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "tf32" and device.type != "cuda":
        raise ValueError(f"precision tf32 needs a CUDA device, not {device.type}")
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32
    matmul.allow_tf32 = cudnn.allow_tf32 = precision == "tf32"
    try:
        if precision == "bf16":
            with torch.autocast(device.type, dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


class PairEvaluator:
    """adapter(x[rows], t, conditions) for a list of (trajectory, condition) pairs, in padded chunks."""

    def __init__(self, adapter, eval_batch: int, max_pairs: int, precision: str, compile: bool, device,
                 timed: bool):
        with network_precision(precision, torch.device(device)):  # refuses an unknown precision or tf32 off CUDA
            pass
        self.model, self.shape, self.device = adapter, tuple(adapter.state_shape), device
        self.out_channels = adapter.output_channels
        # Convolutions run faster on channels-last (NHWC) tensors with cuDNN and with oneDNN (1.09x eager on
        # the 2-core CPU of BENCHMARKS.md); the conversion changes the weights' strides in place, not their
        # values.
        self.channels_last = (_CHANNELS_LAST and len(self.shape) == 3
                              and any(p.dim() == 4 for p in adapter.parameters()))
        if self.channels_last:
            adapter.to(memory_format=torch.channels_last)
        self.batch = max(1, min(int(eval_batch), max_pairs))  # no chunk larger than the whole step
        self.net = torch.compile(adapter, dynamic=False) if compile else adapter
        self.compiled = compile
        if compile:
            sizes = {max(1, -(-self.batch // 2**k)) for k in range(_COMPILED_BUCKETS)}
        else:
            granule = max(1, -(-self.batch // _EAGER_BUCKETS))
            sizes = {min(self.batch, granule * k) for k in range(1, _EAGER_BUCKETS + 1)}
        self.sizes, self.used = sorted(sizes), set()
        self.precision = precision
        self.timed, self.model_seconds, self._events = timed, 0.0, []
        self.evaluations = self.padded = 0

    def __call__(self, x32: torch.Tensor, t_net, rows: torch.Tensor, conditions: torch.Tensor,
                 once: bool = False) -> torch.Tensor:
        """x32 (N, D) float32 states; t_net the network time; rows, conditions (M,) pairs -> output (M, D_out) float32.

        D_out = D, or 2D for a learned-range network (the variance channels after the prediction's). ``once``: a
        shape needed for this call only (the last step) reuses a compiled size rather than compiling a new one.
        """
        M, D = rows.numel(), x32.shape[1]
        D_out = D * self.out_channels // self.shape[0]
        out = torch.empty((M, D_out), dtype=torch.float32, device=self.device)
        for lo in range(0, M, self.batch):
            hi = min(lo + self.batch, M)
            n = hi - lo
            size = next(b for b in self.sizes if b >= n)
            if once and self.compiled and size not in self.used:
                size = min((b for b in self.used if b >= n), default=size)
            self.used.add(size)
            xin = x32.new_zeros((size, D))
            xin[:n] = x32.index_select(0, rows[lo:hi])
            labels = conditions.new_zeros(size)
            labels[:n] = conditions[lo:hi]
            xin = xin.view(size, *self.shape)
            if self.channels_last:
                xin = xin.contiguous(memory_format=torch.channels_last)
            ts = torch.full((size,), t_net, dtype=self.model.time_dtype, device=self.device)
            out[lo:hi] = self._forward(xin, ts, labels)[:n].reshape(n, D_out).float()
            self.evaluations += n
            self.padded += size - n
        return out

    def _forward(self, x, ts, labels):
        cast = network_precision(self.precision, self.device)
        if not self.timed:
            with cast:
                return self._net(x, ts, labels)
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            with cast:
                y = self._net(x, ts, labels)
            end.record()
            self._events.append((start, end))
            return y
        began = time.perf_counter()
        with cast:
            y = self._net(x, ts, labels)
        self.model_seconds += time.perf_counter() - began
        return y

    def _net(self, x, ts, labels):
        if self.compiled and self.net is not self.model:
            try:
                return self.net(x, ts, labels)
            except Exception as err:  # noqa: BLE001 - a compiler that fails here must not stop the run
                log.warning("torch.compile failed (%s: %s); continuing eager", type(err).__name__, err)
                self.net = self.model
        return self.net(x, ts, labels)

    def total_model_seconds(self) -> float:
        if self._events:
            torch.cuda.synchronize(self.device)
            self.model_seconds += sum(s.elapsed_time(e) for s, e in self._events) / 1e3
            self._events.clear()
        return self.model_seconds
