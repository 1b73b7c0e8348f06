"""Methods from the `adapters` library (Houlsby adapters, LoRA, prefix tuning) share one setup on a model.

Each method adds its own named adapter; all of them stay active together (a `Stack`), so a
frozen adapter still runs in forward while another method trains. `adapters` is imported only
when a model gets one (it takes seconds to import). Each such method's module states, beside the config class
it builds (`config(options)`), that config's method type of the library (`ADAPTERS_METHOD`), one of METHOD_TYPES.
"""
import logging

# The `adapters` library's method types (adapters.interface.AdapterMethod; tests/test_registry.py compares):
# what a method's config is, and what a model family takes (src/families.py).
METHOD_TYPES = frozenset({"bottleneck", "prefix_tuning", "lora", "prompt_tuning", "reft", "invertible"})


def add(model, name: str, config) -> None:
    """Add adapter `name` with `config` to the transformers model inside `model` (PromptMLM or a
    classification model), in place, and keep every added adapter active."""
    import adapters
    from adapters import model_mixin
    from adapters.composition import Stack

    target = getattr(model, "mlm", model)
    # Setting up runs a forward before the adapter is active; the warning about that is noise.
    quiet = logging.getLogger(model_mixin.__name__)
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        if not hasattr(target, "adapters_config"):
            adapters.init(target)
        target.add_adapter(name, config=config)
        names = list(target.adapters_config.adapters)
        target.set_active_adapters(Stack(*names) if len(names) > 1 else names[0])
    finally:
        quiet.setLevel(level)
