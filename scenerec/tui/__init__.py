"""The terminal app (`scenerec chat`)."""

from .app import ScenerecApp, make_app

__all__ = ["ScenerecApp", "make_app"]
