"""How the model is laid out over the processes of a run: each layout is an object.

- `Replicated` (`train.fsdp: false`, the default): every process holds the whole model;
  several processes are DDP through accelerate (`accelerate launch`, `torchrun`,
  `tunelab train --nproc N`). One process is the same object with nothing to wrap.
- `FullyShard` (`train.fsdp: true` with several processes): torch's FSDP2 `fully_shard`, one
  unit per transformer block (the model's `_no_split_modules`) and one for the rest, so every
  process keeps 1/N of the weights, gradients and optimizer state and all-gathers a block's
  weights only while it runs. accelerate sets FSDP up only for accelerators (on a CPU it gives
  DDP), so tunelab shards itself, the same code on CPUs (gloo) and GPUs (nccl).

The loop asks the layout, never which one it is: how to wrap the model, which model validation
runs (every process in lockstep when the weights are sharded), the trainable weights and the
optimizer state as whole tensors for a checkpoint (a collective every process calls; rank 0
writes), how to load them back, the gradient norm, and the plain model after training, which
evaluation and saving use as they would one process's model.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, TypedDict

import torch
from accelerate import Accelerator
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from tunelab.core.errors import TunelabError

if TYPE_CHECKING:
    from torch.distributed.fsdp._fully_shard._fsdp_state import FSDPState
    from torch.optim.optimizer import StateDict


class Placement(TypedDict):
    """summary.json's record of how the model lies over the processes."""

    layout: str
    processes: int
    parameters_per_process: int
    device: str
    """What each process trains on: cpu, or the GPU's index and name (cuda:0, NVIDIA H100 ...)."""
    backend: str | None
    """The process group's backend (gloo on CPUs, nccl on GPUs), None without one."""


class Replicated:
    """The whole model in every process (DDP through accelerate when there are several)."""

    name = "replicated"
    lockstep = False
    """Whether every process must run the same forward passes (sharded weights)."""

    def placement(self, model: torch.nn.Module, accelerator: Accelerator) -> Placement:
        """summary.json's record of it: the layout, the processes, the parameters each holds,
        the device and the process group's backend."""
        held = sum((p.to_local() if isinstance(p, DTensor) else p).numel()
                   for p in model.parameters())
        device = accelerator.device
        named = f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" \
            else device.type  # accelerate says cpu:0 in a process group, cpu without one
        backend = torch.distributed.get_backend() if torch.distributed.is_available() and \
            torch.distributed.is_initialized() else None
        return {"layout": self.name, "processes": accelerator.num_processes,
                "parameters_per_process": held, "device": named, "backend": backend}

    def shard(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def prepare(self, accelerator: Accelerator, model: torch.nn.Module,
                optimizer: torch.optim.Optimizer) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        return accelerator.prepare(model, optimizer)

    def local(self, accelerator: Accelerator, model: torch.nn.Module) -> torch.nn.Module:
        """The model a process runs alone (validation, eval hooks): DDP's wrapper off, since its
        forward broadcasts buffers, a collective a process with fewer batches would hang in."""
        return accelerator.unwrap_model(model)

    def checkpoint(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                   writer: bool) -> tuple[dict[str, torch.Tensor], StateDict | None] | None:
        """(trainable weights, optimizer state) as whole tensors on the process that writes
        them, None on the others. Called by every process: sharded tensors are gathered, a
        collective every process takes part in."""
        if not (writer or self.lockstep):
            return None
        weights = self.trainable_state(model)
        state = self.optimizer_state(optimizer) if optimizer is not None else None
        return (weights, state) if writer else None

    def trainable_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {n: _whole(p).clone().contiguous() for n, p in model.named_parameters()
                if p.requires_grad}

    def load_trainable_state(self, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, tensor in state.items():
                params[name].copy_(_like(tensor, params[name]))

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> StateDict:
        """The optimizer's state_dict with whole tensors: the same file whatever the layout and
        the number of processes, so a run can resume on another number of them."""
        full = optimizer.state_dict()
        full["state"] = {i: {k: _whole(v) for k, v in s.items()} for i, s in full["state"].items()}
        return full

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: StateDict) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        state = dict(state)
        state["state"] = {i: {k: _like(v, params[int(i)]) if v.ndim else v for k, v in s.items()}
                          for i, s in state["state"].items()}
        optimizer.load_state_dict(state)

    def clip_grad_norm(self, accelerator: Accelerator, params: Iterable[torch.nn.Parameter],
                       limit: float) -> float:
        return float(accelerator.clip_grad_norm_(params, limit))

    def plain(self, accelerator: Accelerator, model: torch.nn.Module) -> torch.nn.Module:
        """The trained model as one process's model (saving, evaluation)."""
        return accelerator.unwrap_model(model)


class FullyShard(Replicated):
    """FSDP2: weights, gradients and optimizer state sharded over the processes."""

    name = "fsdp"
    lockstep = True

    def shard(self, model: torch.nn.Module) -> torch.nn.Module:
        get_base_model = getattr(model, "get_base_model", None)  # peft's wrapper has one
        base: torch.nn.Module = get_base_model() if callable(get_base_model) else model
        inside = {id(p) for p in base.parameters()}
        outside = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in inside]
        if outside:
            raise TunelabError(f"train.fsdp: the method trains weights outside the base model "
                               f"({outside[0]}), which tunelab's FSDP does not shard; turn "
                               "train.fsdp off for this method (DDP)")
        blocks = set(getattr(base, "_no_split_modules", None) or [])
        for module in base.modules():
            if type(module).__name__ in blocks:
                fully_shard(module)
        # the base model is the root unit (embeddings, final norm, output projection, a head):
        # generation calls it directly, past a peft wrapper
        fully_shard(base)
        return model

    def prepare(self, accelerator: Accelerator, model: torch.nn.Module,
                optimizer: torch.optim.Optimizer) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        return model, optimizer  # sharded already; gradients are reduce-scattered by FSDP

    def local(self, accelerator: Accelerator, model: torch.nn.Module) -> torch.nn.Module:
        return model  # the sharded model: every process runs it (lockstep)

    def clip_grad_norm(self, accelerator: Accelerator, params: Iterable[torch.nn.Parameter],
                       limit: float) -> float:
        return float(_whole(torch.nn.utils.clip_grad_norm_(list(params), limit)))

    def plain(self, accelerator: Accelerator, model: torch.nn.Module) -> torch.nn.Module:
        """Every process gathers the whole weights and the model becomes an ordinary module
        again (in place), so saving and evaluation run it as one process's model; a collective."""
        whole: dict[int, torch.nn.Parameter] = {}  # by identity: tied weights stay tied
        for module in list(model.modules()):
            for name, param in list(module._parameters.items()):
                if param is None:
                    continue
                if id(param) not in whole:
                    whole[id(param)] = torch.nn.Parameter(_whole(param).clone(),
                                                          requires_grad=param.requires_grad)
                module._parameters[name] = whole[id(param)]
        for module in list(model.modules()):
            if isinstance(module, FSDPModule):
                _remove_hooks(module._get_fsdp_state())
                _restore_class(module)
            for flag in ("_is_fsdp_managed_module", "_fsdp_use_orig_params"):
                module.__dict__.pop(flag, None)  # transformers' generate reads the first
        return model


def _restore_class(module: torch.nn.Module) -> None:
    """The module's own class again, in place of the one fully_shard derived from it."""
    module.__class__ = next(c for c in type(module).__bases__
                            if issubclass(c, torch.nn.Module) and not issubclass(c, FSDPModule))


def _remove_hooks(state: FSDPState) -> None:
    """Every hook FSDP put on the modules of one unit: forward (all-gather, reshard), state
    dict save and load (swap the sharded parameters back in), each parameter's load hook."""
    handles = [state._pre_forward_hook_handle, state._post_forward_hook_handle]
    for group in state._fsdp_param_groups:
        handles += [*group._module_to_pre_save_state_dict_hook_handle.values(),
                    *group._module_to_pre_load_state_dict_hook_handle.values()]
        handles += [param._post_load_hook_handle for param in group.fsdp_params]
    for handle in handles:
        handle.remove()


def _whole(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor gathered whole (a collective), a plain tensor as it is (not copied)."""
    tensor = tensor.detach()
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def _like(tensor: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """A whole tensor laid out as `param` is: this process's shard when param is sharded
    (sliced locally, no communication)."""
    if not isinstance(param, DTensor):
        return tensor
    return distribute_tensor(tensor.to(param.dtype), param.device_mesh, param.placements,
                             src_data_rank=None)


def layout(fsdp: bool, world: int) -> Replicated:
    """The layout of a run of `world` processes (FSDP has nothing to shard over one)."""
    return FullyShard() if fsdp and world > 1 else Replicated()
