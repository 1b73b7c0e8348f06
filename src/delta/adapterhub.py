"""Methods from the `adapters` library (Houlsby adapters, LoRA, prefix tuning) share one setup on a model.

Each method adds its own named adapter; all of them stay active together (a `Stack`), so a
frozen adapter still runs in forward while another method trains. `adapters` is imported only
when a model gets one (it takes seconds to import).
"""
import logging


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
