"""worldmodel: an interactive video world model with block-wise state-space memory."""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy, so that `import worldmodel.data` (environment workers) does not pay for torch + diffusers.
    if name in ("load_world", "World"):
        from . import world
        return getattr(world, name)
    if name == "WorldModel":
        from .model import WorldModel
        return WorldModel
    raise AttributeError(f"module 'worldmodel' has no attribute {name!r}")


__all__ = ["load_world", "World", "WorldModel", "__version__"]
