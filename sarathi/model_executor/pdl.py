"""Programmatic dependent launch (PDL) for our Triton kernels, Hopper and later.

A decode step at batch 1 is a chain of ~350 kernels, each depending on the one before. On
its own a kernel launches only when its predecessor has finished and flushed memory, so
every small kernel costs launch latency plus a dependent load chain during which the
memory system idles. Launched with PDL, a kernel's programs may start while its predecessor
is still running; they wait (``griddepcontrol.wait``) before touching anything the
predecessor may write, and may do independent work first: the GEMV loads its first weight
tile, so HBM streams the next matmul's weights while an RMSNorm or SiLU finishes.

Contract for a kernel launched with ``launch_pdl=True``: every program calls ``wait_prior``,
which waits for the previous kernel's full completion and only then lets the next kernel's
programs launch, or ``release_then_wait``, which lets them launch first. A kernel completes
only after its wait, so after a program's wait every kernel before it is complete (by
induction). Before the wait a program may read only what no kernel still running may write:
weights, the step's inputs, cache entries of earlier positions, and, where the previous
kernel calls ``wait_prior``, what the kernels before that one wrote (the residual in
``all_reduce_norm``). Kernels launched without PDL (cuBLAS, PyTorch, NCCL) serialize as
usual. ``SARATHI_PDL=0`` turns it off so benchmarks can time the plain chain in the same run
(read once, into the model's ``KernelSwitches``).

The short kernels between the GEMVs (norms, SiLU-and-mul, the attention merge, split sums)
release first: the GEMV behind one then starts loading its weights while the GEMV before it
drains, not only once that one has completed (H200, batch 1: Llama-2-7B 3.87 -> 3.79 ms a
step, Llama-3-8B 4.22 -> 4.14). Released this way, a GEMV's programs wait on an SM while the
kernel two back finishes; they hold no SM that kernel still needs, since a kernel releases
its successor only once all its own programs have started.

One pair departs from this on purpose: in a mixed step the prefill attention kernel lets the
decode attention kernel launched behind it start as soon as all prefill programs have
started, and the decode programs do not wait, since they read nothing the prefill writes;
one decode program waits instead, so the decode kernel completes after the prefill kernel
and whatever follows sees both (``triton_decode.decode_attention``, ``behind``).
"""

from __future__ import annotations

import functools

import torch

from sarathi.model_executor.kernel_switches import triton_installed


@functools.cache
def _supported(device_index: int) -> bool:
    if not triton_installed():
        return False
    import triton.language as tl

    cuda = getattr(getattr(tl, "extra", None), "cuda", None)
    return (
        torch.cuda.get_device_capability(device_index)[0] >= 9
        and hasattr(cuda, "gdc_wait")
        and hasattr(cuda, "gdc_launch_dependents")
    )


def supported(device: torch.device) -> bool:
    """True where this device and Triton can launch with PDL (Hopper and later)."""
    if device.type != "cuda":
        return False
    return _supported(device.index if device.index is not None else torch.cuda.current_device())


def launch_args(enabled: bool) -> dict[str, bool]:
    """Keyword arguments for launching a kernel that takes a ``PDL`` constexpr: the
    constexpr and Triton's launch flag together (the flag is left out where PDL is off, so
    a Triton without it still launches). ``enabled`` comes from the model's
    ``KernelSwitches`` (resolved once, when the model is built)."""
    return {"PDL": True, "launch_pdl": True} if enabled else {"PDL": False}


if triton_installed():
    import triton
    import triton.language as tl

    @triton.jit
    def release_then_wait(PDL: tl.constexpr):
        """For a short kernel (one wave of a few programs): let the next kernel's programs
        launch at once, then wait until the previous kernel has completed and its writes are
        visible. A no-op unless the kernel was launched with PDL."""
        if PDL:
            tl.extra.cuda.gdc_launch_dependents()
            tl.extra.cuda.gdc_wait()

    @triton.jit
    def wait_prior(PDL: tl.constexpr):
        """Wait until the previous kernel has completed and its writes are visible, then
        let the next kernel's programs launch (they wait in turn before their own reads).
        A no-op unless the kernel was launched with PDL."""
        if PDL:
            tl.extra.cuda.gdc_wait()
            tl.extra.cuda.gdc_launch_dependents()
