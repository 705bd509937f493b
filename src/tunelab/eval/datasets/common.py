"""What every benchmark reader builds on: a data.source scheme whose reader writes each
example's prompt as the benchmark prompts it (registered by `tunelab.eval.datasets`)."""

from __future__ import annotations

from typing import ClassVar

from tunelab.config import DataConfig
from tunelab.data import SourceScheme, TaskData


class BenchmarkSource(SourceScheme):
    """A benchmark layout (`SCHEME:ARGUMENT`) read into splits with its own prompts; a task
    file naming no template gets template format over '{prompt}' and `completion`."""

    reads_prompts = True
    completion: ClassVar[str] = " {output}"
    """How an answer follows the prompt: most prompts end in "Answer:" (the answer brings a
    space); BIG-bench and SQuAD prompts end in "A: " (the space is the prompt's)."""

    def read(self, config: DataConfig) -> TaskData:
        return self.read_argument(self.argument(config.source), config)

    def read_argument(self, argument: str, config: DataConfig) -> TaskData:
        """The splits of `argument` (data.source after the colon)."""
        raise NotImplementedError

    def completion_format(self, source: str) -> str:
        return self.completion
