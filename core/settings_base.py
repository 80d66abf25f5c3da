"""The base class of every configuration section, in a module of its own so that ``core.config``
and the section modules it imports (``core.settings_*``) share it without an import cycle."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A table of the configuration: an unknown key is an error (a typo must not be ignored), and
    an assignment is validated like a loaded value."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
