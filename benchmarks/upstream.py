"""The streamed-LLM upstream (``tests/support/openai_server.OpenAIServer``) as a process of its own.

Prints its base URL, then serves until its standard input closes. Kept out of the benchmark's
process so that its threads do not compete with the load generator for the GIL.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.openai_server import OpenAIServer  # noqa: E402


def main() -> None:
    with OpenAIServer() as server:
        print(server.url, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
