"""Wire helpers shared by the runtimes: line framing and the Dify plugin protocol messages.

Nothing here imports a runtime; runtimes import from here.
"""

from __future__ import annotations
