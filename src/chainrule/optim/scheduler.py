"""Alias of ``chainrule.optim.lr_scheduler`` (the name torch uses), kept so that
``from chainrule.optim.scheduler import StepLR`` still works."""

from chainrule.optim.lr_scheduler import *  # noqa: F401,F403
from chainrule.optim.lr_scheduler import __all__  # noqa: F401
