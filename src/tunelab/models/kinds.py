"""The model kind: what a model is, as an object (`model.kind`: causal, seq2seq, classifier).

Everything that differs between a decoder LM, an encoder-decoder and a classification head is
decided here, by the kind, never by comparing its name elsewhere: loading (the transformers
Auto class, pad token, padding side, which built-in models can be this kind), tokenising one
training text, collating a batch, what a micro-batch's loss sums over and the loss itself,
what `tunelab data inspect` shows, and the output type a trained model is scored with.

causal: prompt and completion are tokenised separately and concatenated, so labels are -100
exactly on the prompt and equal the ids on the completion and its EOS; generation feeds the
same prompt ids. seq2seq: the prompt ids (with the tokenizer's special tokens) are the encoder
input and the labels are the completion + EOS alone (the decoder never sees the prompt).
classifier: the input text's ids and one label, the class index in eval.labels.

`get_kind(name)` returns the registered kind; configs, summaries and method files keep the
string `kind.name`.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from tunelab.config import ModelConfig
from tunelab.config.choices import ModelKind as ModelKindName
from tunelab.config.choices import OutputTypeName
from tunelab.core.deferred import F, deferred, torch, transformers
from tunelab.core.errors import TunelabError
from tunelab.models import attention
from tunelab.models.builtin import BUILTIN_MODELS
from tunelab.models.fingerprint import model_fingerprint
from tunelab.models.pretrained import (
    ensure_pad_token,
    load_pretrained,
    load_with_head,
    model_config,
    resolve_model_dir,
    tokenizer_of,
    truncate_layers,
)
from tunelab.models.tokens import (
    CLOSE,
    IGNORE_INDEX,
    OPEN,
    PromptText,
    TrainingText,
    boundary_table,
    decode,
    document_windows,
    encode_completion,
    encode_prompt,
    label_index,
    mark_trained,
)

if TYPE_CHECKING:
    from transformers import PreTrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

    from tunelab.models import logits as model_logits
    from tunelab.models.logits import ModelInputs
    from tunelab.models.prompt_caches import PromptCaches

    Batch = dict[str, torch.Tensor]
else:
    model_logits = deferred("tunelab.models.logits")  # a @torch.no_grad() function: torch at import


class LoadedModel:
    """A model and its tokenizer, as a kind loaded them; the weights may load on first use.

    Where the result cache already knows which weights a recipe loads
    (models/known_weights.py: `scoring`), the model is `deferred`: its tokenizer is here, its
    fingerprint is known, and `model` loads the weights only when something asks for them (an
    item the cache lacks). A rerun whose every item is cached then loads no weights at all."""

    def __init__(self, model: torch.nn.Module | None, tokenizer: PreTrainedTokenizerBase,
                 path: str, kind: ModelKind | None = None, recipe: Recipe | None = None,
                 prompt_caches: PromptCaches | None = None) -> None:
        self._model = model
        self.tokenizer = tokenizer
        self.path = path
        """Where the weights came from (a local directory or hub id)."""
        self.kind = kind or CAUSAL
        """What the model is; `kind.name` is what a config holds (MODEL_KINDS)."""
        self.recipe = recipe
        """How to load this model again (in another process: eval/processes.py; the weights
        of a deferred model), or None where it exists only here (weights trained or combined
        in this process)."""
        self.prompt_caches = prompt_caches
        """The prompts generated from so far, kept for the prompts after them while a study
        scores one system's items in several versions (`prompt_caches.kept_prompts`)."""
        self._known: str | None = None
        self._config: PreTrainedConfig | None = None
        self._on_load: Callable[[torch.nn.Module], None] | None = None

    @classmethod
    def deferred(cls, tokenizer: PreTrainedTokenizerBase, path: str, kind: ModelKind,
                 recipe: Recipe, fingerprint: str,
                 on_load: Callable[[torch.nn.Module], None]) -> LoadedModel:
        """A model whose weights `recipe` loads on first use; `fingerprint` is what they are
        known to be (models/fingerprint.py), and `on_load` checks the loaded ones."""
        lm = cls(None, tokenizer, path, kind, recipe)
        lm._known, lm._on_load = fingerprint, on_load
        return lm

    @property
    def model(self) -> torch.nn.Module:
        """A transformers PreTrainedModel of the kind's Auto class (loaded now if deferred)."""
        if self._model is None:
            if self.recipe is None or self._on_load is None:
                raise RuntimeError("a deferred model without a recipe")
            self._model, self._known = self.recipe.load().model, None
            self._on_load(self._model)  # raises where they are not the known weights
        return self._model

    @model.setter
    def model(self, model: torch.nn.Module) -> None:
        self._model, self._known = model, None

    @property
    def config(self) -> PreTrainedConfig:
        """The model's transformers config; a deferred model's is its folder's (`path`),
        read without the weights: what the context window and the architecture are, but not
        what a recipe changes at load (the layers `model.num_layers` keeps, the attention
        implementation)."""
        if self._model is not None:
            return model_config(self._model)
        if self._config is None:
            self._config = transformers.AutoConfig.from_pretrained(self.path,
                                                                   trust_remote_code=False)
        return self._config

    @property
    def loaded(self) -> bool:
        """Whether the weights are in memory (False only for a deferred model not used yet)."""
        return self._model is not None

    def fingerprint(self) -> str:
        """The weights' fingerprint: the known one of a deferred model (no load), else
        computed from the tensors (models/fingerprint.py)."""
        if self._model is None and self._known is not None:
            return self._known
        return model_fingerprint(self.model)

    def with_model(self, model: torch.nn.Module) -> LoadedModel:
        """The same tokenizer, kind and store over other weights (a model during training)."""
        return LoadedModel(model, self.tokenizer, self.path, self.kind, self.recipe,
                           self.prompt_caches)

    def __repr__(self) -> str:
        return f"LoadedModel(path={self.path!r}, kind={self.kind.name}, loaded={self.loaded})"


class Recipe(Protocol):
    """A picklable description of a model that loads it again (`models/loader.py:
    BaseRecipe`, `runs/run_dir.py: RunRecipe`)."""

    def load(self) -> LoadedModel: ...

    def sources(self) -> list[Path] | None:
        """Every file whose bytes decide the weights `load` gives (models/known_weights.py),
        or None where they are not all local (a hub id)."""
        ...

    def model_kind(self) -> ModelKind:
        """The kind `load` gives (read from the configs alone)."""
        ...

    def without_weights(self) -> tuple[PreTrainedTokenizerBase, str, ModelKind]:
        """The tokenizer, path and kind `load` gives, without loading the weights (for a kind
        whose `weights_are_files`)."""
        ...


def module_of(model: torch.nn.Module | LoadedModel) -> torch.nn.Module:
    """The module to run: a LoadedModel's (a deferred one loads its weights now)."""
    return model.model if isinstance(model, LoadedModel) else model


def fingerprint_of(model: torch.nn.Module | LoadedModel) -> str:
    """The weights' fingerprint (models/fingerprint.py), without loading a deferred model."""
    return model.fingerprint() if isinstance(model, LoadedModel) else model_fingerprint(model)


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    """-100 on prompt positions; the token id on completion positions."""
    prompt_length: int
    truncated: bool = False
    kind: ModelKind = field(default_factory=lambda: CAUSAL)
    lost_completion: int = 0
    """Completion tokens (EOS included) cut away by max_length."""
    kept_completion: int = 1
    """Completion tokens the loss is computed on."""
    """causal (labels align with input_ids), seq2seq (input_ids: the encoder input; labels: the
    decoder targets) or classifier (labels: [class index])."""


# What a built-in model (models/builtin.py `kind`) is, when a kind cannot load it.
_BUILTIN_MISMATCH = {
    "encoder": "is an encoder without a language-model head; set model.kind: classifier (with "
               "eval.labels)",
    "causal": "is a causal LM; set model.kind: causal (or classifier)",
}


class ModelKind(ABC):
    """What a model is and how it trains. Kinds are compared by type (one instance each in
    KINDS); the class attributes answer the questions other modules ask about a kind."""

    name: ModelKindName
    """The value of model.kind."""
    auto_class: str
    """The transformers Auto class the weights load with."""
    padding_side: str = "left"
    """The tokenizer's padding side (batched generation needs the prompt at the right)."""
    default_output_type: OutputTypeName = "generate"
    """The output type a trained model of this kind is scored with (`training.run.run_task`)."""
    encoder_decoder: bool = False
    """Labels are a decoder's targets: the model builds its decoder input from them, and its
    logits align with them (no shift by one)."""
    has_lm_head: bool = True
    """It scores text (what retention tasks need)."""
    trains_mixtures: bool = False
    """Multi-task mixtures (`tasks:`) can train it."""
    trains_documents: bool = False
    """Raw documents (data.template text: the loss on every token) can train it."""
    builtin_kinds: frozenset[str] = frozenset()
    """Which built-in models (by their `BuiltinModel.kind`) can be loaded as this kind."""
    trained_view: str = ""
    """What `tunelab data inspect` says it marks (the report's second line)."""
    peft_task_type: str = "CAUSAL_LM"
    """peft's task type for a model of this kind (which PeftModel class wraps it)."""
    head_names: tuple[str, ...] = ()
    """Attribute names a freshly initialised task head has on a model of this kind."""

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    @property
    def has_classification_head(self) -> bool:
        """Its model ends in a classification head (which trains with every method)."""
        return bool(self.head_names)

    def classification_head(self, model: torch.nn.Module) -> list[str]:
        """Names of the model's task head (freshly initialised, so it trains whatever the
        method); empty for language models."""
        return [name for name in self.head_names
                if isinstance(getattr(model, name, None), torch.nn.Module)]

    # --- loading -------------------------------------------------------------------------
    def check_builtin(self, config: ModelConfig) -> None:
        """Fail on a built-in model asked to be what it is not."""
        builtin = BUILTIN_MODELS.get(config.name)
        if builtin is not None and builtin.kind not in self.builtin_kinds:
            raise TunelabError(f"model.kind '{self.name}': model '{config.name}' "
                               f"{_BUILTIN_MISMATCH[builtin.kind]}")

    @abstractmethod
    def load(self, config: ModelConfig, labels: Sequence[str] | None = None) -> LoadedModel:
        """Model + tokenizer, ready to train and evaluate (`load_model` checked the config)."""

    @abstractmethod
    def prepare(self, tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> None:
        """Finish a loaded tokenizer and model: pad token, padding side, pad ids."""

    weights_are_files: bool = False
    """Whether the loaded model is its saved files and nothing else (no classification head
    that `load` may draw), so its weights can be known before they load
    (models/known_weights.py)."""

    def tokenizer_alone(self, config: ModelConfig) -> PreTrainedTokenizerBase:
        """The tokenizer `load` gives, without the weights (a deferred model's)."""
        tokenizer = tokenizer_of(config.name)
        tokenizer.padding_side = self.padding_side
        return tokenizer

    # --- training data ---------------------------------------------------------------------
    @abstractmethod
    def tokenize(self, text: TrainingText, tokenizer: PreTrainedTokenizerBase, max_length: int,
                 labels: Sequence[str] | None = None) -> TokenizedExample:
        """One training example as this kind trains on it (`labels`: eval.labels)."""

    def tokenize_document(self, text: str, tokenizer: PreTrainedTokenizerBase, max_length: int
                          ) -> list[TokenizedExample]:
        """A raw document (data.template text) as training examples, the loss on every token."""
        raise TunelabError(f"data.template text: model.kind {self.name} does not train on raw "
                           "documents; use model.kind causal (a decoder LM)")

    def collate(self, examples: Sequence[TokenizedExample], pad_id: int) -> Batch:
        """Right-pad a batch for training: ids with pad_id, labels with -100, mask with 0."""
        width = max(len(ex.input_ids) for ex in examples)
        input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)  # [B, width]
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        labels = torch.full((len(examples), self.label_width(examples, width)), IGNORE_INDEX,
                            dtype=torch.long)
        for row, ex in enumerate(examples):
            n = len(ex.input_ids)
            input_ids[row, :n] = torch.tensor(ex.input_ids)
            labels[row, :len(ex.labels)] = torch.tensor(ex.labels)
            mask[row, :n] = 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": mask}

    def label_width(self, examples: Sequence[TokenizedExample], width: int) -> int:
        """Columns of the padded labels: the longest label sequence."""
        return max(len(ex.labels) for ex in examples)

    packs: bool = False
    """data.packing can lay its examples end to end in a row (`pack`)."""

    def pack(self, examples: Sequence[TokenizedExample], pad_id: int, row_length: int,
             per_example: bool = False) -> Batch:
        """The examples end to end in rows of at most `row_length` tokens (kinds that pack;
        `per_example`: with the examples' boundaries for attention per example)."""
        raise TunelabError(f"data.packing: model.kind {self.name} is not packed; turn it off")

    # --- the loss --------------------------------------------------------------------------
    def uniform_loss(self, model: torch.nn.Module) -> float | None:
        """The per-target loss of a uniform output (ln of the vocabulary): where a destroyed
        model's loss settles."""
        size = getattr(getattr(model, "config", None), "vocab_size", None)
        return math.log(size) if size else None

    def loss_targets(self, batch: Batch) -> int:
        """What a micro-batch's loss sums over: its label tokens."""
        return int((batch["labels"] != IGNORE_INDEX).sum())

    def loss(self, model: torch.nn.Module, batch: Batch, count: torch.Tensor) -> torch.Tensor:
        """The micro-batch's summed loss divided by `count`, the targets of the whole optimizer
        step, so accumulated micro-batches weigh every target equally: the summed cross-entropy
        of the labels, from the logits in float32."""
        logits = model(**self.model_inputs(batch)).logits.float()
        summed = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1),
                                 ignore_index=IGNORE_INDEX, reduction="sum")
        return summed / count

    def model_inputs(self, batch: Batch) -> ModelInputs:
        """What the model is called with to compute the loss by hand (the labels stay out)."""
        return {k: v for k, v in batch.items() if k != "labels"}

    # --- `tunelab data inspect` ------------------------------------------------------------
    @abstractmethod
    def split_share(self, examples: Sequence[TokenizedExample], labels: Sequence[str] | None) -> str:
        """What a split trains, in a few words (e.g. "12.5% trained")."""

    @abstractmethod
    def example_view(self, example: TokenizedExample, tokenizer: PreTrainedTokenizerBase,
                     labels: Sequence[str] | None, first: bool) -> list[str]:
        """Lines showing what one example trains (`first`: the split's first example)."""


class LanguageModelKind(ModelKind):
    """A model with a language-model head (causal or encoder-decoder): loaded with its Auto
    class, padded on the left, scored by generation."""

    def load(self, config: ModelConfig, labels: Sequence[str] | None = None) -> LoadedModel:
        tokenizer, model, source = load_pretrained(config, self.auto_class, self.name, MODEL_KINDS)
        if config.num_layers is not None:
            truncate_layers(model, config.num_layers)
        self.prepare(tokenizer, model)
        return LoadedModel(model=model, tokenizer=tokenizer, path=source, kind=self)

    weights_are_files = True

    def prepare(self, tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> None:
        """A pad token, the kind's padding side, and the pad id generation needs."""
        ensure_pad_token(tokenizer)
        tokenizer.padding_side = self.padding_side
        if getattr(model.generation_config, "pad_token_id", None) is None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id


class CausalKind(LanguageModelKind):
    name = "causal"
    auto_class = "AutoModelForCausalLM"
    trains_mixtures = True
    builtin_kinds = frozenset({"causal"})
    trained_view = "trained tokens are shown between ⟦ and ⟧"

    def tokenize(self, text: TrainingText, tokenizer: PreTrainedTokenizerBase, max_length: int,
                 labels: Sequence[str] | None = None) -> TokenizedExample:
        return tokenize_example(text, tokenizer, max_length)

    def label_width(self, examples: Sequence[TokenizedExample], width: int) -> int:
        return width  # labels align with input_ids

    trains_documents = True

    def tokenize_document(self, text: str, tokenizer: PreTrainedTokenizerBase, max_length: int
                          ) -> list[TokenizedExample]:
        """The document's windows (`document_windows`: [prefix] + tokens + EOS, none lost),
        labels equal to the ids at every position: each window's first id is context only
        (the shift drops its label), every later id is trained."""
        return [TokenizedExample(input_ids=ids, labels=list(ids), prompt_length=0, kind=CAUSAL,
                                 kept_completion=len(ids) - 1)
                for ids in document_windows(text, tokenizer, max_length)]

    packs = True

    def pack(self, examples: Sequence[TokenizedExample], pad_id: int, row_length: int,
             per_example: bool = False) -> Batch:
        """Rows of examples laid end to end (as few rows of at most max(row_length, the
        longest example) tokens as fit, evened out: `balanced_rows`), right-padded to the
        longest row. Position ids restart at every example (and at the padding), which is how
        the model builds a block-diagonal causal mask when no attention mask is given; each
        example's first label is dropped, as the shift drops it in a row of its own.
        per_example: the segments' boundaries in the batch too, for a model that attends per
        example (models/attention.py)."""
        lengths = [len(ex.input_ids) for ex in examples]
        rows = balanced_rows(lengths, row_length)
        width = max(sum(lengths[i] for i in row) for row in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        bounds = [0]
        for r, row in enumerate(rows):
            start = 0
            for i in row:
                ex = examples[i]
                n = len(ex.input_ids)
                input_ids[r, start:start + n] = torch.tensor(ex.input_ids)
                labels[r, start + 1:start + n] = torch.tensor(ex.labels[1:])
                positions[r, start:start + n] = torch.arange(n)
                start += n
                bounds.append(r * width + start)
            positions[r, start:] = torch.arange(width - start)
            if start < width:  # the row's padding: a segment of its own
                bounds.append((r + 1) * width)
        batch = {"input_ids": input_ids, "labels": labels, "position_ids": positions}
        if per_example:
            batch[attention.BOUNDS] = torch.tensor(bounds, dtype=torch.int32)
        return batch

    def loss_targets(self, batch: Batch) -> int:
        """Completion tokens after the shift (position t predicts token t+1)."""
        return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())

    def loss(self, model: torch.nn.Module, batch: Batch, count: torch.Tensor) -> torch.Tensor:
        """The completion tokens' summed NLL over `count`, projected onto the vocabulary only
        at the positions that predict a completion token (models/logits.py)."""
        return model_logits.summed_nll(model, self.model_inputs(batch),
                                       model_logits.shifted(batch["labels"])) / count

    def model_inputs(self, batch: Batch) -> ModelInputs:
        """Without the labels, and without a cache: a packed batch's block-diagonal mask comes
        from its position ids only when there is none."""
        return {**super().model_inputs(batch), "use_cache": False}

    def split_share(self, examples: Sequence[TokenizedExample], labels: Sequence[str] | None) -> str:
        tokens = sum(len(e.input_ids) for e in examples)
        trained = sum(sum(label != IGNORE_INDEX for label in e.labels) for e in examples)
        return f"{100 * trained / tokens:.1f}% trained"

    def example_view(self, example: TokenizedExample, tokenizer: PreTrainedTokenizerBase,
                     labels: Sequence[str] | None, first: bool) -> list[str]:
        lines = [mark_trained(example, tokenizer)]
        if first:
            lines += ["", "token view at the prompt/completion boundary:",
                      boundary_table(example, tokenizer)]
        return lines


class Seq2SeqKind(LanguageModelKind):
    name = "seq2seq"
    auto_class = "AutoModelForSeq2SeqLM"
    encoder_decoder = True
    peft_task_type = "SEQ_2_SEQ_LM"
    trained_view = "the encoder reads the input; the decoder is trained on ⟦ the target ⟧"

    def tokenize(self, text: TrainingText, tokenizer: PreTrainedTokenizerBase, max_length: int,
                 labels: Sequence[str] | None = None) -> TokenizedExample:
        return tokenize_seq2seq(text, tokenizer, max_length)

    def model_inputs(self, batch: Batch) -> ModelInputs:
        return batch  # the model builds the decoder input from the labels

    def split_share(self, examples: Sequence[TokenizedExample], labels: Sequence[str] | None) -> str:
        return f"{sum(len(e.labels) for e in examples) / len(examples):.1f} target tokens each"

    def example_view(self, example: TokenizedExample, tokenizer: PreTrainedTokenizerBase,
                     labels: Sequence[str] | None, first: bool) -> list[str]:
        return ["encoder: " + decode(tokenizer, example.input_ids),
                f"decoder: {OPEN}{decode(tokenizer, example.labels)}"
                f"{CLOSE}"]


class ClassifierKind(ModelKind):
    """A `*ForSequenceClassification` head over eval.labels; the head trains (and is saved)
    with any method, and the model is scored with the `classification` output type."""

    name = "classifier"
    auto_class = "AutoModelForSequenceClassification"
    padding_side = "right"
    default_output_type = "classification"
    has_lm_head = False
    peft_task_type = "SEQ_CLS"
    head_names = ("classifier", "score")
    """transformers' names of a `*ForSequenceClassification` head (BERT's, Llama's)."""
    builtin_kinds = frozenset({"causal", "encoder"})
    trained_view = "the encoder reads the input; the head is trained on the label"

    def load(self, config: ModelConfig, labels: Sequence[str] | None = None) -> LoadedModel:
        if not labels:
            raise TunelabError("model.kind classifier needs eval.labels: the class names in class "
                               "order, e.g. eval.labels=[positive,negative]")
        if len(labels) < 2:
            raise TunelabError(f"eval.labels {list(labels)}: a classifier needs at least 2 labels")
        with warnings.catch_warnings():  # "the head is newly initialised": the run trains it
            warnings.filterwarnings("ignore", message=".*newly initialised.*")
            return load_classifier(config, [str(label) for label in labels])

    def prepare(self, tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> None:
        """A pad token, which decoder classifiers need to find the last non-pad token."""
        ensure_pad_token(tokenizer)
        model.config.pad_token_id = tokenizer.pad_token_id
        tokenizer.padding_side = self.padding_side

    def tokenize(self, text: TrainingText, tokenizer: PreTrainedTokenizerBase, max_length: int,
                 labels: Sequence[str] | None = None) -> TokenizedExample:
        label = label_index(text.answer, labels or [], text.origin)
        return tokenize_classification(text.input_text, label, tokenizer, max_length)

    def collate(self, examples: Sequence[TokenizedExample], pad_id: int) -> Batch:
        """Labels are one class index per example."""
        batch = super().collate(examples, pad_id)
        batch["labels"] = batch["labels"][:, 0]  # [B]
        return batch

    def uniform_loss(self, model: torch.nn.Module) -> float | None:
        """ln(number of classes)."""
        size = getattr(getattr(model, "config", None), "num_labels", None)
        return math.log(size) if size and size > 1 else None

    def loss_targets(self, batch: Batch) -> int:
        """Examples (one class each)."""
        return int(batch["labels"].numel())

    def split_share(self, examples: Sequence[TokenizedExample], labels: Sequence[str] | None) -> str:
        counts = [sum(e.labels[0] == i for e in examples) for i in range(len(labels or []))]
        return "labels " + ", ".join(f"{n} {label}" for n, label in zip(counts, labels or [],
                                                                        strict=True))

    def example_view(self, example: TokenizedExample, tokenizer: PreTrainedTokenizerBase,
                     labels: Sequence[str] | None, first: bool) -> list[str]:
        return ["encoder: " + decode(tokenizer, example.input_ids),
                f"label: {example.labels[0]} ({(labels or [])[example.labels[0]]})"]


CAUSAL: CausalKind = CausalKind()
SEQ2SEQ: Seq2SeqKind = Seq2SeqKind()
CLASSIFIER: ClassifierKind = ClassifierKind()
KINDS: dict[str, ModelKind] = {kind.name: kind for kind in (CAUSAL, SEQ2SEQ, CLASSIFIER)}
MODEL_KINDS = tuple(KINDS)
"""model.kind: what the model is and how it trains (see ModelConfig.kind)."""


def get_kind(name: str) -> ModelKind:
    """The kind a model.kind value names; an unknown name is a one-line error."""
    kind = KINDS.get(name)
    if kind is None:
        raise TunelabError(f"model.kind '{name}': unknown; choose one of {', '.join(MODEL_KINDS)}")
    return kind


def language_kind(name: str) -> ModelKind:
    """The language-model kind of the checkpoint `name` (a built-in alias, a directory or a hub
    id), from its config on this machine (a hub id's in the local hub cache; nothing is
    fetched): seq2seq for an encoder-decoder, else causal. For a caller that only asks a model
    for text and log-likelihoods (the lm-evaluation-harness bridge); where no config is on
    this machine, causal (loading fetches it, or says why it cannot)."""
    try:
        config = transformers.AutoConfig.from_pretrained(resolve_model_dir(name),
                                                         local_files_only=True)
    except (OSError, ValueError):
        return CAUSAL
    wanted = bool(getattr(config, "is_encoder_decoder", False))
    return next(kind for kind in (CAUSAL, SEQ2SEQ) if kind.encoder_decoder == wanted)


def balanced_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices grouped into as few rows as fit max(capacity, longest) tokens each, the rows as
    even as possible (so little padding is left when they are padded to the longest): longest
    first, each into the currently shortest row (ties by index: a function of the lengths)."""
    capacity = max(capacity, max(lengths))
    order = sorted(range(len(lengths)), key=lambda k: (-lengths[k], k))
    count = -(-sum(lengths) // capacity)
    while True:
        rows: list[list[int]] = [[] for _ in range(count)]
        used = [0] * count
        for i in order:
            r = min(range(count), key=lambda k: (used[k], k))
            rows[r].append(i)
            used[r] += lengths[i]
        if max(used) <= capacity:
            return rows
        count += 1


def tokenize_example(rendered: PromptText, tokenizer: PreTrainedTokenizerBase, max_length: int
                     ) -> TokenizedExample:
    """Causal: prompt + completion; cut the prompt from the left when too long."""
    prompt_ids = encode_prompt(rendered, tokenizer)
    completion_ids = encode_completion(rendered, tokenizer)
    truncated, full = False, len(completion_ids)
    if len(completion_ids) > max_length - 1:
        completion_ids = completion_ids[: max(1, max_length // 2)]
        truncated = True
    budget = max_length - len(completion_ids)
    if len(prompt_ids) > budget:
        prompt_ids = prompt_ids[len(prompt_ids) - budget:]
        truncated = True
    # the first position predicts nothing: a completion with no token before it trains one less
    trained = len(completion_ids) - (0 if prompt_ids else 1)
    return TokenizedExample(
        input_ids=prompt_ids + completion_ids,
        labels=[IGNORE_INDEX] * len(prompt_ids) + completion_ids,
        prompt_length=len(prompt_ids),
        truncated=truncated,
        kind=CAUSAL,
        lost_completion=full - len(completion_ids),
        kept_completion=trained,
    )


def tokenize_seq2seq(rendered: PromptText, tokenizer: PreTrainedTokenizerBase, max_length: int
                     ) -> TokenizedExample:
    """Encoder input = the prompt ids, labels = completion + EOS; each cut to max_length (the
    prompt from the left, as for causal models)."""
    prompt_ids = encode_prompt(rendered, tokenizer)
    completion_ids = encode_completion(rendered, tokenizer)
    truncated = len(prompt_ids) > max_length or len(completion_ids) > max_length
    prompt_ids = prompt_ids[max(0, len(prompt_ids) - max_length):]
    kept = completion_ids[:max_length]
    return TokenizedExample(input_ids=prompt_ids, labels=kept, prompt_length=len(prompt_ids),
                            truncated=truncated, kind=SEQ2SEQ,
                            lost_completion=len(completion_ids) - len(kept),
                            kept_completion=len(kept))


def tokenize_classification(text: str, label: int, tokenizer: PreTrainedTokenizerBase,
                            max_length: int) -> TokenizedExample:
    """The text's ids (special tokens added, cut from the right at max_length, as the
    classification output type reads it) and its class index."""
    ids = list(tokenizer(text).input_ids)
    truncated = len(ids) > max_length
    if truncated:
        ids = list(tokenizer(text, truncation=True, max_length=max_length).input_ids)
    return TokenizedExample(input_ids=ids, labels=[label], prompt_length=len(ids),
                            truncated=truncated, kind=CLASSIFIER)


def load_classifier(config: ModelConfig, labels: Sequence[str],
                    head_seed: int | None = None) -> LoadedModel:
    """A base model with a sequence-classification head for `labels` (fresh if it has none,
    with a warning; drawn from `head_seed` when given), class i named labels[i]."""
    tokenizer, model, source = load_with_head(config, CLASSIFIER.auto_class, labels, head_seed)
    if config.num_layers is not None:
        truncate_layers(model, config.num_layers)
    CLASSIFIER.prepare(tokenizer, model)
    return LoadedModel(model=model, tokenizer=tokenizer, path=source, kind=CLASSIFIER)
