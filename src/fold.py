"""A folded model: K runs' models as one model over one batch of all their rows (src/packed.py).

The batch holds the runs' batches one after another, in K equal chunks (run k's rows: the k-th).
The frozen base is one copy, run over all rows at once (plain kernels, fused attention); each
layer that holds a run's own tensors (its delta) is replaced by its folded form, which holds the
runs' tensors stacked along a leading run dimension and applies run k's to chunk k by batched
operations: a linear layer `baddbmm` over the per-run stacks (a per-run bias: one row of a table per
chunk; adapter matrices: one matrix per chunk), a layer norm its per-run affine, the soft prompt's
embedding table a lookup in run k's table. Every run's tensors live in one buffer [K, P] (`FlatStacks`),
so one optimizer step, one gradient clipping per run and one zeroing cover every run.

The runs' batches are padded to the pack's longest, so on CPU the wide linear layers multiply only the
real tokens (`RealTokens`): a padding token's output never reaches a real one (attention masks it out),
so only the padding's arithmetic goes.
"""
import contextlib
import copy
from typing import Dict, List, Optional

import torch
from torch import nn
from torch.nn import functional

from src.delta import METHODS

# Delta methods whose layers see something other than the batch's rows, so a folded layer cannot
# tell the runs apart (their packs stay vmapped).
NOT_ON_ROWS = {"prefix": "the adapters library computes the prefix once for the whole batch, not per row"}
# Families whose layers see something other than the batch's rows (a per-run bias would be misapplied).
FAMILIES_NOT_ON_ROWS = {"deberta-v2": "DeBERTa's attention runs its projections over the relative position "
                                      "embeddings too, not only over the batch's rows"}
# Layers with a folded form: these exact classes (a subclass may compute more: `foldable`).
FOLDABLE = (nn.Linear, nn.LayerNorm, nn.Embedding)


def foldable(module) -> bool:
    """Whether a layer computes what its folded form does: one of FOLDABLE exactly, or a linear layer that
    the adapters library wrapped for LoRA but that holds none (it computes a plain linear layer); and no
    hooks (a folded form would drop them)."""
    if module._forward_hooks or module._forward_pre_hooks:
        return False
    if type(module) in FOLDABLE:
        return True
    return (isinstance(module, nn.Linear) and hasattr(module, "loras") and not module.loras
            and not getattr(module, "fan_in_fan_out", False))


class NotFoldable(Exception):
    """Why a pack's models cannot fold into one (its message)."""


def chunks(x: torch.Tensor, runs: int) -> torch.Tensor:
    """[K * rows, ...] -> [K, rows, ...]: run k's rows at k. Only the first dimension is split (no -1 over
    merged dimensions: under torch.compile's dynamic shapes, the floor divisions that infers grow into
    expressions that take sympy minutes per layer)."""
    if x.size(0) % runs:
        raise RuntimeError(f"a folded layer of {runs} runs got {x.size(0)} rows")
    return x.unflatten(0, (runs, x.size(0) // runs))


def over_rows(tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-run tensor [K], [K, width] or [K, out, in] viewed to broadcast over `like` [K, rows, ..., width]."""
    return tensor.view(tensor.size(0), *[1] * (like.dim() - tensor.dim()), *tensor.shape[1:])


# The narrowest shared linear layer (min(in, out)) that multiplies only the real tokens: per token it saves
# in x out multiply-adds and moves in + out values: forward and backward of one layer over a batch 28% padding
# (CPU, one thread) took 0.99x the padded time at width 64, 1.04x at 128, 1.13x at 256, 1.25x at 512.
UNPADDED_MIN_WIDTH = 128


class RealTokens:
    """The real tokens (attention mask 1) of the batch a folded model computes, for its shared linear layers:
    on CPU, a layer at least UNPADDED_MIN_WIDTH wide multiplies only those rows and leaves zeros at the
    padding. Not under torch.compile (the number of real tokens varies: a graph break per layer), and not
    on CUDA (finding them synchronises with the device; the pack's arithmetic is not what a GPU waits for)."""

    def __init__(self):
        self.shape, self.index = None, None

    @contextlib.contextmanager
    def of(self, attention_mask):
        if (attention_mask is not None and attention_mask.device.type == "cpu" and attention_mask.dim() == 2
                and not torch.compiler.is_compiling() and not bool(attention_mask.all())):
            self.shape, self.index = attention_mask.shape, attention_mask.reshape(-1).nonzero().squeeze(1)
        try:
            yield
        finally:
            self.shape, self.index = None, None

    def linear(self, x, weight, bias):
        if self.index is None or min(weight.shape) < UNPADDED_MIN_WIDTH or x.shape[:-1] != self.shape:
            return functional.linear(x, weight, bias)
        rows = x.reshape(-1, x.size(-1))
        real = functional.linear(rows.index_select(0, self.index), weight, bias)
        return real.new_zeros(rows.size(0), weight.size(0)).index_copy(0, self.index, real).view(*self.shape, -1)


class FoldedLinear(nn.Module):
    """nn.Linear of K runs: weight [out, in] shared or [K, out, in] per run, bias [out], [K, out] or None."""

    def __init__(self, weight, bias, runs, tokens: RealTokens):
        super().__init__()
        self.weight, self.bias, self.runs, self.tokens = weight, bias, runs, tokens

    def forward(self, x):
        weight, bias = self.weight, self.bias
        shared_bias = bias if bias is not None and bias.dim() == 1 else None
        if weight.dim() == 2:
            y = self.tokens.linear(x, weight, shared_bias)
            if bias is None or shared_bias is not None:
                return y
            y4 = chunks(y, self.runs)
        else:
            x4 = chunks(x, self.runs)
            y4 = torch.matmul(x4, over_rows(weight.transpose(1, 2), x4))
            if shared_bias is not None:
                y4 = y4 + shared_bias
        if bias is not None and bias.dim() == 2:
            y4 = y4 + over_rows(bias, y4)
        return y4.flatten(0, 1)


class FoldedLayerNorm(nn.Module):
    """nn.LayerNorm of K runs: weight and bias each shared ([width]), per run ([K, width]) or None."""

    def __init__(self, weight, bias, runs, normalized_shape, eps):
        super().__init__()
        self.weight, self.bias, self.runs = weight, bias, runs
        self.normalized_shape, self.eps = normalized_shape, eps

    def forward(self, x):
        weight, bias = self.weight, self.bias
        shared = lambda tensor: tensor if tensor is not None and tensor.dim() == 1 else None  # noqa: E731
        y = functional.layer_norm(x, self.normalized_shape, shared(weight), shared(bias), self.eps)
        if shared(weight) is weight and shared(bias) is bias:
            return y
        y4 = chunks(y, self.runs)
        if weight is not None and weight.dim() == 2:
            y4 = y4 * over_rows(weight, y4)
        if bias is not None and bias.dim() == 2:
            y4 = y4 + over_rows(bias, y4)
        return y4.flatten(0, 1)


class FoldedEmbedding(nn.Module):
    """nn.Embedding of K runs (the soft prompt's table): weight [K, rows, width], run k's ids look up its table."""

    def __init__(self, weight, runs):
        super().__init__()
        self.weight, self.runs = weight, runs

    def forward(self, ids):
        ids4 = chunks(ids, self.runs)
        runs = over_rows(torch.arange(self.runs, device=ids.device), ids4)
        return self.weight[runs, ids4].flatten(0, 1)


def folded_form(module, tensors: Dict[str, torch.Tensor], runs: int, tokens: RealTokens) -> nn.Module:
    """The folded form of a layer, from its tensors by leaf name (shared, or per-run stacks)."""
    if isinstance(module, nn.Linear):
        return FoldedLinear(tensors["weight"], tensors.get("bias"), runs, tokens)
    if isinstance(module, nn.LayerNorm):
        return FoldedLayerNorm(tensors.get("weight"), tensors.get("bias"), runs, module.normalized_shape, module.eps)
    if module.padding_idx is not None or module.max_norm is not None:
        raise NotFoldable("an embedding with padding_idx or max_norm holds a run's own tensor")
    return FoldedEmbedding(tensors["weight"], runs)


class FlatStacks:
    """The per-run tensors of K runs (names) in one buffer [K, P], each name a column range viewed as a
    stack [K, *shape] (a parameter whose gradient is a view of one gradient buffer [K, P] too).

    Each run's model holds its row of each stack as its own parameter (its Trainer's evaluations,
    best states, restores and saved delta see ordinary parameters), so an update of the buffer is an
    update of every run's model. With `row_grads`, each row's gradient is a view of the gradient buffer
    too (a model that computes with its rows, not the stacks, then accumulates its gradients there: a
    single run's compiled step). Build it after `set_trainable` (a stack trains where the runs' tensor does)."""

    def __init__(self, models, names: List[str], places, row_grads=False):
        own = [[model.get_parameter(name) for name in names] for model in models]
        self.data = torch.stack([torch.cat([param.detach().reshape(-1) for param in params]) for params in own])
        self.grad = torch.zeros_like(self.data)
        self.stacks, self.trained = {}, torch.zeros(self.data.size(1), dtype=torch.bool, device=self.data.device)
        self.grad_views = []  # (stack or row, the view of the gradient buffer that is its gradient)
        offset = 0
        for index, name in enumerate(names):
            param = own[0][index]
            end = offset + param.numel()
            stack = nn.Parameter(self.data[:, offset:end].view(len(models), *param.shape),
                                 requires_grad=param.requires_grad)
            if param.requires_grad:
                self.grad_views.append((stack, self.grad[:, offset:end].view(stack.shape)))
                self.trained[offset:end] = True
            self.stacks[name] = stack
            for run, model in enumerate(models):
                row = nn.Parameter(stack[run].detach(), requires_grad=param.requires_grad)
                if row_grads and param.requires_grad:
                    self.grad_views.append((row, self.grad_views[-1][1][run]))
                for alias in places[name]:
                    set_parameter(model, alias, row)
            offset = end

        self.link_grads()

    def link_grads(self):
        """Make each stack's (and row's) gradient its view of the gradient buffer again (after a
        `zero_grad(set_to_none=True)` of a model holding them)."""
        for param, grad in self.grad_views:
            param.grad = grad

    def zero_grad(self):
        self.grad.zero_()


def set_parameter(model, name, param):
    """Make `param` the tensor that `model` holds under `name` (a dotted path)."""
    owner, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(owner), leaf, param)


def parameter_places(model):
    """(name, parameter) once per place that holds a parameter (a module's attribute): a tied weight under
    each module holding it, but a module that several paths reach (the prefix-tuning pool that every layer
    of `adapters` holds) once. functional_call swaps a place once per name given, and restores it in that
    order: a place named twice would keep the swapped-in tensor."""
    return [(f"{prefix}.{leaf}" if prefix else leaf, param) for prefix, module in model.named_modules()
            for leaf, param in module.named_parameters(recurse=False)]


def aliases(model, names: List[str]) -> Dict[str, List[str]]:
    """name -> every place of `model` that holds that parameter (tied names too)."""
    name_of = {id(model.get_parameter(name)): name for name in names}
    places = {name: [] for name in names}
    for place, param in parameter_places(model):
        if id(param) in name_of:
            places[name_of[id(param)]].append(place)
    return places


def why_not_foldable(model, per_run: List[str], family: str) -> Optional[str]:
    """Why the runs' models (`per_run`: their own tensors' names) cannot fold into one, or None."""
    if family in FAMILIES_NOT_ON_ROWS:
        return FAMILIES_NOT_ON_ROWS[family]
    for name in per_run:
        for method, reason in NOT_ON_ROWS.items():
            if METHODS[method].selects(name):
                return f"{method}: {reason}"
    try:
        layers(model, aliases(model, per_run))
    except NotFoldable as error:
        return str(error)
    return None


def layers(model, places: Dict[str, List[str]]) -> Dict[str, List[str]]:
    """{module path: its leaf names holding a run's own tensor} over the layers with a folded form; a
    NotFoldable names a run's own tensor that only another kind of module holds."""
    held = {}
    for name, paths in places.items():
        owners = [path.rpartition(".") for path in paths]
        if not any(foldable(model.get_submodule(owner)) for owner, _, _ in owners):
            raise NotFoldable(f"{name} is a parameter of a {type(model.get_submodule(owners[0][0])).__name__}, "
                              "which has no folded form")
        for owner, _, leaf in owners:
            held.setdefault(owner, []).append(leaf)
    return held


class FoldedModel(nn.Module):
    """K runs' models as one: a copy of run 0's model (sharing every tensor) whose layers that hold a
    run's own tensors are replaced by their folded forms over `stacks`; the loss is each run's, [K]."""

    def __init__(self, model, stacks: FlatStacks, runs: int):
        super().__init__()
        names = list(stacks.stacks)
        memo = {id(tensor): tensor for tensor in [*model.parameters(), *model.buffers()]}
        memo.update({id(param): param for _, param in parameter_places(model)})
        folded = copy.deepcopy(model, memo)
        places = aliases(folded, names)
        stack_of = {id(folded.get_parameter(name)): stacks.stacks[name] for name in names}
        self.tokens = RealTokens()
        for owner, leaves in layers(folded, places).items():
            module = folded.get_submodule(owner)
            if foldable(module):
                tensors = {leaf: stack_of.get(id(param), param)
                           for leaf, param in module.named_parameters(recurse=False)}
                set_submodule(folded, owner, folded_form(module, tensors, runs, self.tokens))
            else:  # a tied place beside a foldable layer (the MLM head's bias): the stack itself
                for leaf in leaves:
                    setattr(module, leaf, stack_of[id(getattr(module, leaf))])
        self.model, self.runs, self.stacks = folded, runs, stacks

    def forward(self, labels=None, **batch):
        with self.tokens.of(batch.get("attention_mask")):
            output = self.model(**batch)
        if labels is None:
            return output
        logits = output["logits"]
        losses = torch.func.vmap(self.model.loss)(logits.unflatten(0, (self.runs, -1)),
                                                  labels.unflatten(0, (self.runs, -1)))
        return {"loss": losses, "logits": logits}


def set_submodule(model, path, module):
    owner, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(owner), leaf, module)
