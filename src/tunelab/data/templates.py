"""Prompt templates: turn a record (plus optional in-context shots) into prompt + completion.

Each choice of `data.template` is a `TemplateKind` (`ALPACA`, `FORMAT`, `CHAT`, `TEXT`, one
instance each, `get_template_kind(name)`): it builds the `Template` for a config and a tokenizer
and answers what callers need to know of it (does it take a preamble, need data.prompt_format,
need the tokenizer, render shots as earlier turns, what a classification head reads; whether a
record is a raw document trained on every token, packed by default, read from which column and
scored by which evaluation). No module outside this one compares a template name.

Templates return text; tokenisation happens separately (tokenize.py) and always tokenises the
prompt and the completion apart, so the label boundary never depends on how a response marker
tokenises inside a longer string.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar, Protocol, cast

from tunelab.config import DataConfig, EvalConfig, TaskConfig
from tunelab.config.choices import TemplateName
from tunelab.config.formats import check_format
from tunelab.core.errors import TunelabError
from tunelab.data.records import Record

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)
SHOT_SEPARATOR = "\n\n"


@dataclass
class Rendered:
    prompt: str
    completion: str
    special_in_text: bool = False
    """True when the text already holds the model's special tokens (chat templates), so the
    tokenizer must not add its own."""


class TemplateKind:
    """One choice of data.template: what it needs and how it takes shots; `build` makes the
    `Template` that renders records for a config (and a tokenizer)."""

    name: ClassVar[TemplateName]
    takes_preamble: ClassVar[bool] = True
    """Whether a task's preamble goes in front of its prompts (chat: data.system instead)."""
    needs_prompt_format: ClassVar[bool] = False
    """Whether it renders data.prompt_format (and completion_format)."""
    needs_tokenizer: ClassVar[bool] = False
    """Whether rendering needs the tokenizer (its chat template), so no preview without it."""
    shots_as_turns: ClassVar[bool] = False
    """Whether it renders in-context shots itself, as earlier turns (no shot separator)."""
    classifier_reads_prompt: ClassVar[bool] = False
    """Whether a classification head reads the rendered prompt rather than the record's input
    (format: a prompt_format such as '{input}' is the text classified)."""
    trains_documents: ClassVar[bool] = False
    """Whether a record is a raw document: no prompt, the loss on every token, a long one cut
    into windows (the model kind's `tokenize_document`) rather than truncated."""
    packs_by_default: ClassVar[bool] = False
    """data.packing when the config leaves it unset (where the model kind and method pack)."""

    def build(self, config: DataConfig, tokenizer: PreTrainedTokenizerBase | None) -> Template:
        raise NotImplementedError

    def record_fields(self, fields: dict[str, str]) -> dict[str, str]:
        """data.fields as the source reader maps columns for this template (`load_splits`)."""
        if "text" in fields:
            raise TunelabError(f"data.fields.text: only data.template text reads a document "
                               f"column; with template {self.name} map the column to "
                               "instruction, input or output")
        return fields

    def evaluation(self, task: TaskConfig) -> TaskConfig:
        """A training task's evaluation task as this template scores it (`evaluation_task`:
        the model kind's output type, the eval section's metrics)."""
        return task


class Template(Protocol):
    @property
    def kind(self) -> TemplateKind: ...

    def render(self, record: Record, shots: Sequence[Record] = ()) -> Rendered: ...


def user_text(record: Record) -> str:
    """The user-side text of a non-chat record: instruction, then input."""
    parts = [p for p in (record.instruction, record.input) if p]
    return "\n\n".join(parts)


@dataclass
class AlpacaTemplate:
    """Alpaca's `### Instruction / ### Input / ### Response` format (with and without input)."""

    @property
    def kind(self) -> TemplateKind:
        return ALPACA

    def prompt(self, record: Record) -> str:
        _require_plain(record, self.kind)
        fmt = ALPACA_WITH_INPUT if record.input else ALPACA_NO_INPUT
        return fmt.format(instruction=record.instruction, input=record.input)

    def render(self, record: Record, shots: Sequence[Record] = ()) -> Rendered:
        context = "".join(self.prompt(s) + s.output + SHOT_SEPARATOR for s in shots)
        return Rendered(context + self.prompt(record), record.output)


@dataclass
class FormatTemplate:
    """Custom Python format strings over the record's columns and tunelab's field names."""

    prompt_format: str
    completion_format: str = "{output}"

    @property
    def kind(self) -> TemplateKind:
        return FORMAT

    def __post_init__(self) -> None:
        check_format("data.prompt_format", self.prompt_format)
        check_format("data.completion_format", self.completion_format)

    def _fill(self, text: str, record: Record, option: str) -> str:
        values: dict[str, object] = dict(record.columns)
        values.update(instruction=record.instruction, input=record.input, output=record.output)
        try:
            return text.format(**values)
        except KeyError as err:
            raise TunelabError(
                f"data.{option}: field {err} is not in {record.origin or 'the record'} "
                f"(fields: {', '.join(map(str, values))})"
            ) from None
        except (AttributeError, IndexError, ValueError) as err:  # e.g. {input:d}, {input.x}
            raise TunelabError(f"data.{option} {text!r}: {err} (filling "
                               f"{record.origin or 'the record'}); use plain named fields, "
                               "e.g. {input}") from None

    def render(self, record: Record, shots: Sequence[Record] = ()) -> Rendered:
        _require_plain(record, self.kind)
        context = "".join(
            self._fill(self.prompt_format, s, "prompt_format")
            + self._fill(self.completion_format, s, "completion_format")
            + SHOT_SEPARATOR
            for s in shots
        )
        return Rendered(
            context + self._fill(self.prompt_format, record, "prompt_format"),
            self._fill(self.completion_format, record, "completion_format"),
        )


@dataclass
class ChatTemplate:
    """The tokenizer's own chat template; in-context shots become earlier turns."""

    tokenizer: PreTrainedTokenizerBase
    system: str | None = None

    @property
    def kind(self) -> TemplateKind:
        return CHAT

    def __post_init__(self) -> None:
        if not getattr(self.tokenizer, "chat_template", None):
            raise TunelabError(
                "data.template=chat: this tokenizer has no chat template; use alpaca or format"
            )

    def _messages(self, record: Record) -> list[dict[str, str]]:
        if record.messages is not None:
            return list(record.messages)
        return [{"role": "user", "content": user_text(record)},
                {"role": "assistant", "content": record.output}]

    def render(self, record: Record, shots: Sequence[Record] = ()) -> Rendered:
        conversation: list[dict[str, str]] = []
        if self.system:
            conversation.append({"role": "system", "content": self.system})
        for shot in shots:
            conversation += [m for m in self._messages(shot) if m["role"] != "system"]
        own = self._messages(record)
        if own and own[0]["role"] == "system" and conversation:
            conversation = [own[0]] + [m for m in conversation if m["role"] != "system"]
            own = own[1:]
        conversation += own
        apply = self.tokenizer.apply_chat_template
        # tokenize=False: text (transformers annotates the tokenized results in the same return)
        full = cast(str, apply(conversation, tokenize=False))
        prompt = cast(str, apply(conversation[:-1], tokenize=False, add_generation_prompt=True))
        if not full.startswith(prompt):
            raise TunelabError(
                f"data.template=chat: the chat template renders the prompt differently inside "
                f"the full conversation ({record.origin}); use template=alpaca or format"
            )
        # Trailing whitespace after the end-of-turn token is never generated; don't train it.
        return Rendered(prompt, full[len(prompt):].rstrip(), special_in_text=True)


@dataclass
class TextTemplate:
    """A raw document: no prompt, no instruction, the whole text is the completion."""

    @property
    def kind(self) -> TemplateKind:
        return TEXT

    def render(self, record: Record, shots: Sequence[Record] = ()) -> Rendered:
        _require_plain(record, self.kind)
        if shots:
            raise TunelabError("data.template text: raw documents take no in-context examples; "
                               "score them with --shots 0")
        if not record.output.strip():
            raise TunelabError(f"{record.origin or 'a record'}: an empty document; remove it or "
                               "fill it in (data.template text trains on every token)")
        return Rendered("", record.output)


def classifier_text(record: Record, template: Template) -> str:
    """What a classification head reads: the rendered prompt of a template whose kind says so
    (format: e.g. prompt_format '{input}': the review alone), else the record's input (or its
    instruction and input). Training and the classification output type read the same text."""
    if template.kind.classifier_reads_prompt:
        return template.render(record).prompt
    return record.input or user_text(record)


def _require_plain(record: Record, kind: TemplateKind) -> None:
    if record.messages is not None:
        raise TunelabError(
            f"{record.origin}: chat messages need data.template=chat, not {kind.name}"
        )


class AlpacaKind(TemplateKind):
    name = "alpaca"

    def build(self, config: DataConfig, tokenizer: PreTrainedTokenizerBase | None) -> Template:
        return AlpacaTemplate()


class FormatKind(TemplateKind):
    name = "format"
    needs_prompt_format = True
    classifier_reads_prompt = True

    def build(self, config: DataConfig, tokenizer: PreTrainedTokenizerBase | None) -> Template:
        if not config.prompt_format:
            raise TunelabError("data.template=format needs data.prompt_format, e.g. 'Q: {input}\\nA:'")
        return FormatTemplate(config.prompt_format, config.completion_format)


class ChatKind(TemplateKind):
    name = "chat"
    takes_preamble = False
    needs_tokenizer = True
    shots_as_turns = True

    def build(self, config: DataConfig, tokenizer: PreTrainedTokenizerBase | None) -> Template:
        if tokenizer is None:
            raise TunelabError("data.template=chat needs a tokenizer")
        return ChatTemplate(tokenizer, config.system)


DOCUMENT_METRICS = ("perplexity", "bits_per_byte", "word_perplexity")
"""What a text run's held-out documents are scored by (loglikelihood_rolling's metrics)."""


class TextKind(TemplateKind):
    """Raw documents (domain adaptation): a `text` column (data.fields.text names another) or
    .txt files; the loss on every token, packed by default, the held-out documents scored by
    perplexity (loglikelihood_rolling, in windows of data.max_length as training saw them)."""

    name = "text"
    takes_preamble = False
    trains_documents = True
    packs_by_default = True

    def build(self, config: DataConfig, tokenizer: PreTrainedTokenizerBase | None) -> Template:
        return TextTemplate()

    def record_fields(self, fields: dict[str, str]) -> dict[str, str]:
        return {"text": "text", **fields}

    def evaluation(self, task: TaskConfig) -> TaskConfig:
        """loglikelihood_rolling over the documents (in windows of data.max_length unless the
        task sets rolling.max_length); the eval section's metrics, unless they are its default
        ([accuracy], which raw text has nothing to score with): then perplexity, bits per byte
        and word perplexity. Metrics another output type scores are refused by `check_task`."""
        named = task.eval.metrics != EvalConfig().metrics
        metrics = task.eval.metrics if named else list(DOCUMENT_METRICS)
        rolling = task.rolling if task.rolling.max_length else replace(
            task.rolling, max_length=task.data.max_length)
        return replace(task, output_type="loglikelihood_rolling", rolling=rolling,
                       eval=replace(task.eval, metrics=metrics))


ALPACA, FORMAT, CHAT, TEXT = AlpacaKind(), FormatKind(), ChatKind(), TextKind()
TEMPLATE_KINDS: dict[str, TemplateKind] = {kind.name: kind
                                           for kind in (ALPACA, FORMAT, CHAT, TEXT)}
"""data.template -> its kind (the names are config.choices.TemplateName)."""


def get_template_kind(name: str) -> TemplateKind:
    """The kind of template named by a data.template value."""
    if name not in TEMPLATE_KINDS:
        raise TunelabError(f"data.template '{name}': use {', '.join(TEMPLATE_KINDS)}")
    return TEMPLATE_KINDS[name]


def get_template(config: DataConfig, tokenizer: PreTrainedTokenizerBase | None = None) -> Template:
    """The template named by ``data.template``."""
    return get_template_kind(config.template).build(config, tokenizer)
