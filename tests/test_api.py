"""The public API: every name of kdlib.__all__ resolves, and `import kdlib` itself loads no heavy library."""

from __future__ import annotations

import subprocess
import sys

import kdlib


def test_every_public_name_resolves():
    missing = [name for name in kdlib.__all__ if getattr(kdlib, name, None) is None]
    assert missing == []
    assert kdlib.DistillConfig.__module__ == "kdlib.engine.config"


def test_an_unknown_name_is_an_attribute_error():
    try:
        kdlib.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("kdlib.no_such_name resolved")


def test_import_is_cheap():
    code = "import sys, kdlib; print(sorted(m for m in ('torch', 'transformers', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
