"""The networks' source code as one self-contained file, for bioimage.io packages.

A package's ``pytorch_state_dict`` weights name a Python file and a callable that
builds the network. The file written here joins the network modules (``models/``)
into one, so the package runs with nothing but torch installed: relative imports are
dropped and the two names they brought from outside ``models/`` get small stand-ins.
"""

from __future__ import annotations

import ast
import inspect
from types import ModuleType

from ..models import base, deconvnet, dilated, layers, maskrcnn, registry, unet

# In dependency order: each module only uses names from those before it.
_MODULES: tuple[ModuleType, ...] = (
    layers,
    base,
    unet,
    deconvnet,
    dilated,
    maskrcnn,
    registry,
)

CALLABLE = "build_model"
FILE_NAME = "napari_segnet_architecture.py"

_HEADER = '''"""napari-segnet networks (UNet, DeConvNet, dilated nets) in one file.

``build_model(arch=..., dims=..., in_channels=..., n_classes=..., **options)`` builds
the network of a bioimage.io package; the package's ``kwargs`` give these arguments.
Needs only torch.
"""

from __future__ import annotations


class ModelConfigError(ValueError):
    """An architecture option out of range."""


class ModelMeta:
    """Stand-in for napari-segnet's training metadata (the package's rdf.yaml holds it)."""

    @classmethod
    def default(cls, n_classes):
        return cls()

    @classmethod
    def from_dict(cls, values):
        return cls()

    def to_dict(self):
        return {}
'''


def _strip_imports(text: str) -> str:
    """The module text without its docstring, relative and ``__future__`` imports."""
    tree = ast.parse(text)
    drop: set[int] = set()
    for i, node in enumerate(tree.body):
        is_doc = i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        relative = isinstance(node, ast.ImportFrom) and (
            node.level > 0 or node.module == "__future__"
        )
        if is_doc or relative:
            drop.update(range(node.lineno, node.end_lineno + 1))
    lines = text.splitlines()
    return "\n".join(line for n, line in enumerate(lines, 1) if n not in drop).strip()


def architecture_source() -> str:
    """The source of a Python file defining ``build_model`` and every network class.

    Returns
    -------
    str
        Python source that imports only the standard library and torch.
    """
    parts = [_HEADER]
    for module in _MODULES:
        name = module.__name__.rsplit(".", 1)[-1]
        parts.append(f"# ---- {name}.py\n\n{_strip_imports(inspect.getsource(module))}\n")
    return "\n\n".join(parts)
