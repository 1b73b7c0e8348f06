"""The template language of SPEC §3: parse a template once, encode texts through it, map label words.

A template is parts separated by `*`. Known variables: `cls`, `mask`, `sep`, `sep+`, `prompt`,
`label_i` and the sentence family `[+]sent[l|u][-]_i`. Everything else is literal text (`_` is a
space) provided it does not look like a variable: a part made of lowercase ASCII letters, digits,
`+`, `-`, `_` that starts with a letter or `+` is read as a variable name, so a typo such as `snt_0`
is an error rather than silently rendered text. Literal text therefore starts with `_` (a space),
or contains punctuation, upper case or non-ASCII; a one-character part is looked up as one token.

Torch-free: the encoder returns plain Python lists. Padding is the collator's job.
"""
import ast
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Sequence

from src.errors import UserError

ENCODER_VERSION = "1"  # bump whenever encode() output changes, so cached features are rebuilt

_SENTENCE = re.compile(r"^(?P<space>\+?)sent(?P<case>[lu]?)(?P<drop_last>-?)_(?P<index>\d+)$")
_LABEL = re.compile(r"^label_(?P<index>\d+)$")
_VARIABLE_SHAPED = re.compile(r"^[+a-z][a-z0-9+\-_]*$")
_SPECIALS = ("cls", "mask", "sep", "sep+", "prompt")


@dataclass(frozen=True)
class Part:
    """One template part. `kind` is cls|mask|sep|sep+|prompt|sent|label|text|token."""
    kind: str
    index: int = 0            # sentence or label index
    text: str = ""            # literal text (spaces already restored) or the one-character token
    space: bool = False       # sentence: prepend a space
    case: str = ""            # sentence: "l" lower / "u" upper-case the first character
    drop_last: bool = False   # sentence: drop the last character


_PLAIN_KINDS = ("cls", "mask", "sep", "sep+", "prompt")


@dataclass(frozen=True)
class Template:
    source: str
    parts: tuple

    @property
    def hard(self) -> str:
        """The sweeps' HARD: 'N' when the template, soft prompts aside, holds only special tokens
        and unedited sentences (soft-only); 'Y' for a manual template (words, edited sentences)."""
        plain = all(p.kind in _PLAIN_KINDS or (p.kind == "sent" and not (p.space or p.case or p.drop_last))
                    for p in self.parts)
        return "N" if plain else "Y"


def _parse_part(part):
    if part in _SPECIALS:
        return Part(part)
    match = _SENTENCE.match(part)
    if match:
        return Part("sent", index=int(match["index"]), space=bool(match["space"]),
                    case=match["case"], drop_last=bool(match["drop_last"]))
    match = _LABEL.match(part)
    if match:
        return Part("label", index=int(match["index"]))
    text = part.replace("_", " ")
    if len(text) == 1:
        return Part("token", text=text)
    if _VARIABLE_SHAPED.match(part):
        raise UserError(f"unknown template part {part!r} (literal text starts with '_' for a space)")
    return Part("text", text=text)


@lru_cache(maxsize=256)
def parse_template(text: str) -> Template:
    """Parse a template string (cached); a template needs exactly one `*mask*`."""
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"empty template {text!r}")
    parts = tuple(_parse_part(p) for p in text.split("*") if p != "")
    masks = sum(p.kind == "mask" for p in parts)
    if masks != 1:
        raise UserError(f"template {text!r} must contain exactly one *mask* part, found {masks}")
    return Template(text, parts)


def with_demonstrations(template: Template, demo_labels: Sequence[int], sentences_per_example: int) -> Template:
    """The query template followed by one copy per demonstration (SPEC §5 prompt-demo).

    Demonstration j renders the template without `*cls*`/`*prompt*`, with its sentence i read
    from text `(j + 1) * sentences_per_example + i` and `*label_c*` in place of the mask,
    c = demo_labels[j]. Encode it with the query's texts followed by each demonstration's texts.
    """
    template = _as_template(template)
    n = sentences_per_example
    parts = list(template.parts)
    for j, label in enumerate(demo_labels):
        for part in template.parts:
            if part.kind in ("cls", "prompt"):
                continue
            if part.kind == "mask":
                part = Part("label", index=label)
            elif part.kind == "sent":
                part = Part("sent", index=(j + 1) * n + part.index, space=part.space,
                            case=part.case, drop_last=part.drop_last)
            parts.append(part)
    return Template(f"{template.source} + {len(demo_labels)} demonstrations", tuple(parts))


def parse_mapping(text: str, labels: Sequence[str]) -> Dict[str, str]:
    """Label words from a Python dict literal (`"{'0':'terrible','1':'great'}"`), keyed by label string."""
    try:
        mapping = ast.literal_eval(text) if isinstance(text, str) else text
    except (ValueError, SyntaxError) as error:
        raise UserError(f"mapping {text!r} is not a Python dict literal ({error})") from None
    if not isinstance(mapping, dict):
        raise UserError(f"mapping {text!r} is not a dict")
    mapping = {str(key): value for key, value in mapping.items()}
    missing = [label for label in labels if label not in mapping]
    if missing:
        raise UserError(f"mapping {text!r} has no label word for label(s) {missing}")
    extra = [key for key in mapping if key not in labels]
    if extra:
        raise UserError(f"mapping {text!r} names unknown label(s) {extra}; labels are {list(labels)}")
    for key, word in mapping.items():
        if not isinstance(word, str) or not word.strip():
            raise UserError(f"label word for {key!r} must be a non-empty string, got {word!r}")
    return mapping


def is_byte_level(tokenizer) -> bool:
    """True for byte-level BPE tokenizers (RoBERTa/GPT-2 family), which encode a leading space."""
    return _tokenize(tokenizer, "a") != _tokenize(tokenizer, " a")


def uses_segment_ids(tokenizer) -> bool:
    """True for the BERT family, whose models take `token_type_ids`."""
    return "token_type_ids" in tokenizer.model_input_names


def label_word_ids(tokenizer, mapping: Dict[str, str], labels: Sequence[str]) -> List[int]:
    """One vocabulary id per label, in `labels` order; each word must be exactly one token."""
    prefix = " " if is_byte_level(tokenizer) else ""
    ids = []
    for label in labels:
        word = mapping[label]
        tokens = _tokenize(tokenizer, prefix + word)
        if len(tokens) != 1:
            pieces = tokenizer.convert_ids_to_tokens(tokens)
            raise UserError(f"label word {word!r} is {len(tokens)} tokens {pieces}, must be one token")
        if tokens[0] == tokenizer.unk_token_id:
            raise UserError(f"label word {word!r} is not in the vocabulary")
        ids.append(tokens[0])
    return ids


def encode(texts, template, tokenizer, max_seq_length, *, prompt_num=10, label_words=None,
           first_sent_limit=None, other_sent_limit=None, truncate_head=False):
    """Render `texts` through `template`; returns input_ids, attention_mask, mask_pos
    (+ token_type_ids for the BERT family). Not padded: every returned token is attended."""
    template = _as_template(template)
    segments = uses_segment_ids(tokenizer)
    input_ids, token_type_ids = [], []
    mask_pos, segment = None, 0
    for part in template.parts:
        if part.kind == "mask":
            mask_pos = len(input_ids)
        ids = _part_ids(part, texts, tokenizer, prompt_num, label_words, first_sent_limit, other_sent_limit)
        input_ids += ids
        token_type_ids += [segment] * len(ids)
        if part.kind == "sep+":
            segment += 1

    input_ids, token_type_ids, mask_pos = _truncate(input_ids, token_type_ids, mask_pos, max_seq_length,
                                                    truncate_head, template.source)
    features = {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "mask_pos": mask_pos}
    if segments:
        features["token_type_ids"] = token_type_ids
    return features


def shortest_length(template, tokenizer, prompt_num) -> int:
    """Tokens of `template` rendered with sentences of one token each: the fewest an input takes."""
    template = _as_template(template)
    return sum(1 if part.kind in ("sent", "label") else
               len(_part_ids(part, (), tokenizer, prompt_num, None, None, None)) for part in template.parts)


def _as_template(template):
    return template if isinstance(template, Template) else parse_template(template)


def _tokenize(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False)


def _special_id(tokenizer, name):
    token_id = getattr(tokenizer, f"{name}_token_id")
    if token_id is None:
        raise UserError(f"tokenizer {type(tokenizer).__name__} has no {name} token for *{name}*")
    return token_id


def _part_ids(part, texts, tokenizer, prompt_num, label_words, first_sent_limit, other_sent_limit):
    kind = part.kind
    if kind in ("cls", "mask"):
        return [_special_id(tokenizer, kind)]
    if kind in ("sep", "sep+"):
        return [_special_id(tokenizer, "sep")]
    if kind == "prompt":
        return [-k for k in range(1, prompt_num + 1)]
    if kind == "label":
        if label_words is None or part.index >= len(label_words):
            raise UserError(f"template part *label_{part.index}* needs label word ids for class {part.index}")
        return [label_words[part.index]]
    if kind == "token":
        token_id = tokenizer.convert_tokens_to_ids(part.text)
        if token_id is None or (token_id == tokenizer.unk_token_id and part.text != tokenizer.unk_token):
            raise UserError(f"one-character template part {part.text!r} is not a token of the vocabulary")
        return [token_id]
    if kind == "text":
        return _tokenize(tokenizer, part.text)
    return _sentence_ids(part, texts, tokenizer, first_sent_limit, other_sent_limit)


def _sentence_ids(part, texts, tokenizer, first_sent_limit, other_sent_limit):
    if part.index >= len(texts) or texts[part.index] is None:
        given = sum(text is not None for text in texts)
        raise UserError(f"template part *sent_{part.index}* needs sentence {part.index}, "
                        f"but the example has {given} sentence(s)")
    text = texts[part.index]
    if part.drop_last:
        text = text[:-1]
    if part.case == "l":
        text = text[:1].lower() + text[1:]
    elif part.case == "u":
        text = text[:1].upper() + text[1:]
    if part.space:
        text = " " + text
    ids = _tokenize(tokenizer, text)
    limit = first_sent_limit if part.index == 0 else other_sent_limit
    return ids if limit is None else ids[:limit]


def _truncate(input_ids, token_type_ids, mask_pos, max_length, truncate_head, source):
    """Cut to `max_length` (SPEC §3): head cut, or a cut just before the token preceding a
    too-late mask, or a tail cut. The mask must survive."""
    excess = len(input_ids) - max_length
    if excess <= 0:
        return input_ids, token_type_ids, mask_pos
    if truncate_head:
        mask_pos -= excess
        if mask_pos < 0:
            raise UserError(f"truncate_head cut the mask off: template {source!r} renders "
                            f"{len(input_ids)} tokens, max_seq_length {max_length}")
        return input_ids[excess:], token_type_ids[excess:], mask_pos
    if mask_pos >= max_length:
        end = mask_pos - 1          # the token before the mask survives, and so does the mask
        start = end - excess
        if start < 0:
            raise UserError(f"the mask cannot be kept within max_seq_length {max_length}: template "
                            f"{source!r} puts it at position {mask_pos} of {len(input_ids)}")
        return (input_ids[:start] + input_ids[end:], token_type_ids[:start] + token_type_ids[end:],
                mask_pos - excess)
    return input_ids[:max_length], token_type_ids[:max_length], mask_pos
