"""The template language (SPEC §3): golden conformance, hand-checked renderings, invariants on the
real k-shot files for every task × HARD × prompt × tokenizer family, and errors for bad input."""
import gzip
import json
from pathlib import Path

import pytest
from transformers import BertTokenizer

from src.errors import UserError
from src.tasks import TASKS, get_task, read_examples
from src.templates import (encode, is_byte_level, label_word_ids, parse_mapping, parse_template,
                           uses_segment_ids, with_demonstrations)
from src.random_models import roberta_tokenizer as slow_roberta_tokenizer

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "reference" / "golden_encodings"
FAMILIES = ["roberta", "bert"]


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture
def tokenizer(family, request):
    return request.getfixturevalue(f"{family}_tokenizer")


def as_tokens(tokenizer, ids):
    """Token strings as the golden files write them: soft-prompt slot k (id -k) is `<prompt_k>`."""
    return [f"<prompt_{-i}>" if i < 0 else tokenizer.convert_ids_to_tokens(i) for i in ids]


def render(tokenizer, ids):
    """Byte-level BPE: the decoded text; WordPiece: the tokens joined by spaces."""
    if is_byte_level(tokenizer):
        return tokenizer.decode(ids, clean_up_tokenization_spaces=False)
    return " ".join(tokenizer.convert_ids_to_tokens(ids))


# -- golden conformance ------------------------------------------------------------------------

GOLDEN_LINES = {"SST-2": 4560, "MNLI": 3840, "QNLI": 4560, "trec": 4840}  # 17,800 in all


def test_golden_files_are_all_covered():
    assert sorted(p.name for p in GOLDEN.glob("*.jsonl.gz")) == sorted(f"{n}.jsonl.gz" for n in GOLDEN_LINES)


@pytest.mark.parametrize("name", list(GOLDEN_LINES))
def test_golden_encodings_reproduced(name, roberta_tokenizer):
    path = GOLDEN / f"{name}.jsonl.gz"
    failures, lines = [], 0
    with gzip.open(path, "rt", encoding="utf-8") as file:
        for lines, line in enumerate(file, start=1):
            case = json.loads(line)
            kwargs = dict(first_sent_limit=case["first_sent_limit"], other_sent_limit=case["other_sent_limit"],
                          truncate_head=case["truncate_head"])
            if "error" in case:
                with pytest.raises(UserError):
                    encode(case["texts"], case["template"], roberta_tokenizer, case["max_seq_length"], **kwargs)
                continue
            out = encode(case["texts"], case["template"], roberta_tokenizer, case["max_seq_length"], **kwargs)
            if as_tokens(roberta_tokenizer, out["input_ids"]) != case["tokens"] or out["mask_pos"] != case["mask_pos"]:
                failures.append(lines)
    assert lines == GOLDEN_LINES[name]
    assert not failures, f"{len(failures)} of {lines} lines differ, first lines {failures[:5]}"


# -- hand-checked renderings of real k-shot examples --------------------------------------------

# (task, train index, HARD, tokenizer family, rendering written by hand)
RENDERINGS = [
    ("SST-2", 0, "Y", "roberta", "<s>nothing happens , and it happens to flat characters . It was<mask>.</s>"),
    ("SST-2", 0, "Y", "bert", "[CLS] nothing happens , and it happens to flat characters . it was [MASK] . [SEP]"),
    ("SST-2", 0, "N", "roberta", "<s>nothing happens , and it happens to flat characters .</s><mask></s>"),
    ("SST-2", 0, "N", "bert", "[CLS] nothing happens , and it happens to flat characters . [SEP] [MASK] [SEP]"),
    ("CoLA", 0, "Y", "roberta", "<s>Bill seems to be obnoxious, but I don't think that Sam tends. This is<mask>.</s>"),
    ("CoLA", 0, "Y", "bert",
     "[CLS] bill seems to be ob ##no ##xious , but i don ' t think that sam tends . this is [MASK] . [SEP]"),
    ("mpqa", 0, "Y", "roberta", "<s>they can not be trusted It was<mask>.</s>"),
    ("trec", 2, "Y", "roberta", "<s><mask>: What university fired Angela Davis ?</s>"),
    ("trec", 2, "Y", "bert", "[CLS] [MASK] : what university fired angela davis ? [SEP]"),
    ("trec", 2, "N", "roberta", "<s>What university fired Angela Davis ?</s><mask></s>"),
    ("STS-B", 0, "Y", "roberta", "<s>sheep standing in afield.<mask>, a sheep grazing in a field.</s>"),
    ("STS-B", 0, "Y", "bert", "[CLS] sheep standing in afi ##eld . [MASK] , a sheep grazing in a field . [SEP]"),
    ("STS-B", 0, "N", "roberta", "<s>sheep standing in afield.</s>A sheep grazing in a field.</s><mask></s>"),
    ("STS-B", 0, "N", "bert",
     "[CLS] sheep standing in afi ##eld . [SEP] a sheep grazing in a field . [SEP] [MASK] [SEP]"),
    ("MNLI", 0, "Y", "roberta",
     "<s>Price caps may sound more attractive with every passing rate case?<mask>, rate cases make price caps "
     "sound more attractive.</s>"),
    ("MNLI", 0, "Y", "bert",
     "[CLS] price caps may sound more attractive with every passing rate case ? [MASK] , rate cases make price "
     "caps sound more attractive . [SEP]"),
    ("QNLI", 1, "Y", "roberta",
     "<s>Bees can detect what kind of light?<mask>, some insects such as bees can perceive ultraviolet "
     "wavelengths, or detect polarized light, while the antennae of male moths can detect the pheromones of "
     "female moths over distances of many kilometers.</s>"),
]


@pytest.mark.parametrize("task_name, index, hard, family, expected", RENDERINGS,
                         ids=[f"{r[0]}-{r[2]}-{r[3]}" for r in RENDERINGS])
def test_rendering_by_hand(task_name, index, hard, family, expected, data_root, request):
    tokenizer = request.getfixturevalue(f"{family}_tokenizer")
    task = get_task(task_name)
    example = read_examples(task, data_root / "k-shot" / task.name / "16-13", "train")[index]
    texts = [example.text_a, example.text_b]
    plain = encode(texts, task.template(hard, prompt=False), tokenizer, 256)
    assert render(tokenizer, plain["input_ids"]) == expected
    assert plain["input_ids"][plain["mask_pos"]] == tokenizer.mask_token_id

    soft = encode(texts, task.template(hard, prompt=True), tokenizer, 256)
    assert soft["input_ids"][1:11] == list(range(-1, -11, -1))
    assert soft["input_ids"][:1] + soft["input_ids"][11:] == plain["input_ids"]
    assert soft["mask_pos"] == plain["mask_pos"] + 10


# -- invariants for every task's templates on the real k-shot files ----------------------------

CASES = [(name, hard, prompt) for name in TASKS for hard in "YN" for prompt in (False, True)]


@pytest.mark.parametrize("task_name, hard, prompt", CASES, ids=[f"{n}-{h}-{'P' if p else 'noP'}" for n, h, p in CASES])
def test_every_template_on_real_examples(task_name, hard, prompt, tokenizer, data_root):
    task = TASKS[task_name]
    template = task.template(hard, prompt)
    max_seq_length = 128
    examples = read_examples(task, data_root / "k-shot" / task.name / "16-13", "train")
    for example in examples:
        out = encode([example.text_a, example.text_b], template, tokenizer, max_seq_length, prompt_num=10)
        ids = out["input_ids"]
        assert 0 < len(ids) <= max_seq_length and out["attention_mask"] == [1] * len(ids)
        assert ids[out["mask_pos"]] == tokenizer.mask_token_id and ids.count(tokenizer.mask_token_id) == 1
        assert ids[0] == tokenizer.cls_token_id
        if prompt:
            assert ids[1:11] == list(range(-1, -11, -1))
        assert all(i >= 0 for i in ids[11 if prompt else 0:])
        untruncated = encode([example.text_a, example.text_b], template, tokenizer, 10**6)
        assert_segments(tokenizer, out, truncated=len(untruncated["input_ids"]) > len(ids))


def assert_segments(tokenizer, out, truncated=False):
    """BERT: segment 0 first, +1 right after each *sep+* (every sep in these templates); RoBERTa: none.
    A truncated sequence may have lost a sep+ in a cut; its segments still never decrease."""
    if not uses_segment_ids(tokenizer):
        assert "token_type_ids" not in out
        return
    ids, segments = out["input_ids"], out["token_type_ids"]
    assert len(segments) == len(ids) and segments[0] == 0
    for i in range(len(ids) - 1):
        step = segments[i + 1] - segments[i]
        assert step == (ids[i] == tokenizer.sep_token_id) or (truncated and step == 1)


@pytest.mark.parametrize("task_name", list(TASKS))
def test_label_words_are_single_tokens(task_name, tokenizer):
    task = TASKS[task_name]
    mapping = parse_mapping(task.mapping, task.labels)
    ids = label_word_ids(tokenizer, mapping, task.labels)
    words = [tokenizer.decode([i]).strip() for i in ids]
    expected = [mapping[label] for label in task.labels]
    assert words == (expected if is_byte_level(tokenizer) else [w.lower() for w in expected])


# -- truncation ----------------------------------------------------------------------------------

TEMPLATE_FAMILIES = ["SST-2", "trec", "STS-B", "MNLI"]


@pytest.mark.parametrize("task_name", TEMPLATE_FAMILIES)
@pytest.mark.parametrize("hard", "YN")
def test_long_first_sentence_keeps_its_mask(task_name, hard, tokenizer, data_root):
    task = get_task(task_name)
    example = read_examples(task, data_root / "k-shot" / task.name / "16-13", "train")[0]
    long_texts = [" ".join([example.text_a] * 20), example.text_b and "A short one."]
    out = encode(long_texts, task.template(hard, prompt=True), tokenizer, 32)
    assert len(out["input_ids"]) == 32
    assert out["input_ids"][out["mask_pos"]] == tokenizer.mask_token_id
    assert_segments(tokenizer, out, truncated=True)


def test_mask_that_cannot_be_kept_is_an_error(roberta_tokenizer):
    long = " ".join(["word"] * 40)
    with pytest.raises(UserError, match="mask"):
        encode([long, long], "*cls**sent_0**mask*,*+sentl_1**sep+*", roberta_tokenizer, 32)


def test_mask_late_in_sequence_cuts_before_the_token_preceding_it(roberta_tokenizer):
    # 1 cls + 30 sentence tokens + "It was" + mask + "." + sep = 36 tokens, max 20
    out = encode([" ".join(["word"] * 30)], "*cls**sent_0*_It_was*mask*.*sep+*", roberta_tokenizer, 20)
    tokens = as_tokens(roberta_tokenizer, out["input_ids"])
    assert len(tokens) == 20 and out["mask_pos"] == 17
    assert tokens[:1] + tokens[-5:] == ["<s>", "Ġword", "Ġwas", "<mask>", ".", "</s>"]
    assert tokens[-6] == "Ġword"  # "It" was cut, "was" (the token before the mask) survived


def test_tail_cut_when_mask_is_early(roberta_tokenizer):
    out = encode([" ".join(["word"] * 30)], "*cls**mask*:*+sent_0**sep+*", roberta_tokenizer, 10)
    assert as_tokens(roberta_tokenizer, out["input_ids"]) == ["<s>", "<mask>", ":"] + ["Ġword"] * 7
    assert out["mask_pos"] == 1


def test_truncate_head_keeps_the_end(roberta_tokenizer):
    out = encode([" ".join(["word"] * 30)], "*cls**sent_0*_It_was*mask*.*sep+*", roberta_tokenizer, 8,
                 truncate_head=True)
    assert as_tokens(roberta_tokenizer, out["input_ids"]) == ["Ġword"] * 3 + ["ĠIt", "Ġwas", "<mask>", ".", "</s>"]
    assert out["mask_pos"] == 5


def test_truncate_head_that_cuts_the_mask_is_an_error(roberta_tokenizer):
    with pytest.raises(UserError, match="mask"):
        encode([" ".join(["word"] * 30)], "*cls**mask*:*+sent_0**sep+*", roberta_tokenizer, 10, truncate_head=True)


def test_sentence_limits(roberta_tokenizer):
    texts = ["one two three four five", "six seven eight nine ten"]
    out = encode(texts, "*cls**sent_0**sep+**sent_1**sep+**mask**sep+*", roberta_tokenizer, 64,
                 first_sent_limit=2, other_sent_limit=3)
    assert render(roberta_tokenizer, out["input_ids"]) == "<s>one two</s>six seven eight</s><mask></s>"


# -- every part type -------------------------------------------------------------------------------

@pytest.mark.parametrize("part, expected", [
    ("sent_0", "Hello world."),
    ("sent-_0", "Hello world"),
    ("sentl_0", "hello world."),
    ("sentl-_0", "hello world"),
    ("+sent_0", " Hello world."),
    ("+sentl_0", " hello world."),
    ("sentu_1", "Small letters"),
    ("+sentu_1", " Small letters"),
])
def test_sentence_variants(part, expected, roberta_tokenizer):
    out = encode(["Hello world.", "small letters"], f"*cls**{part}**mask*", roberta_tokenizer, 64)
    assert render(roberta_tokenizer, out["input_ids"]) == f"<s>{expected}<mask>"


def test_literal_text_one_character_parts_and_specials(roberta_tokenizer):
    out = encode(["a b"], "*cls*_It_was*mask*.*sep**sent_0**sep+*", roberta_tokenizer, 64)
    assert as_tokens(roberta_tokenizer, out["input_ids"]) == ["<s>", "ĠIt", "Ġwas", "<mask>", ".", "</s>", "a", "Ġb",
                                                             "</s>"]


def test_prompt_num(roberta_tokenizer):
    out = encode(["a"], "*cls*prompt*sent_0**mask*", roberta_tokenizer, 64, prompt_num=3)
    assert out["input_ids"][1:4] == [-1, -2, -3] and out["mask_pos"] == 5


def test_bert_segments_follow_sep_plus_only(bert_tokenizer):
    out = encode(["a", "b"], "*cls**sent_0**sep**sent_1**sep+**mask**sep+*", bert_tokenizer, 64)
    assert out["token_type_ids"] == [0, 0, 0, 0, 0, 1, 1]


def test_label_parts_and_demonstrations(roberta_tokenizer):
    words = label_word_ids(roberta_tokenizer, {"0": "terrible", "1": "great"}, ("0", "1"))
    template = with_demonstrations("*cls*prompt*sent_0*_It_was*mask*.*sep+*", [1, 0], sentences_per_example=1)
    out = encode(["query", "good one", "bad one"], template, roberta_tokenizer, 64, prompt_num=2, label_words=words)
    assert render(roberta_tokenizer, out["input_ids"][3:]) == \
        "query It was<mask>.</s>good one It was great.</s>bad one It was terrible.</s>"
    assert out["input_ids"][1:3] == [-1, -2] and out["mask_pos"] == 6


# -- family detection ------------------------------------------------------------------------------

def test_family_detection_fast_and_slow(roberta_tokenizer, bert_tokenizer, tiny_bert):
    slow_bert = BertTokenizer.from_pretrained(tiny_bert)
    for byte_level in (roberta_tokenizer, slow_roberta_tokenizer()):
        assert is_byte_level(byte_level) and not uses_segment_ids(byte_level)
    for wordpiece in (bert_tokenizer, slow_bert):
        assert not is_byte_level(wordpiece) and uses_segment_ids(wordpiece)


# -- bad input -------------------------------------------------------------------------------------

@pytest.mark.parametrize("template, culprit", [
    ("*cls**snt_0**mask**sep+*", "snt_0"),
    ("*cls**sent_0*_It_was*mask*.*sepp*", "sepp"),
    ("*cls**sent_0*_It_was*msk*.*sep+*", "msk"),
    ("*cls**sent_0*_It_was.*sep+*", "*mask*"),
    ("*cls**mask**sent_0**mask*", "*mask*"),
    ("", "empty"),
])
def test_bad_template_is_a_user_error_naming_the_part(template, culprit):
    with pytest.raises(UserError, match=culprit.replace("*", r"\*")):
        parse_template(template)


def test_label_word_of_several_tokens_is_named(tokenizer):
    with pytest.raises(UserError, match="'zxqvbnmwordy' is [2-9] tokens"):
        label_word_ids(tokenizer, {"0": "terrible", "1": "zxqvbnmwordy"}, ("0", "1"))


def test_label_word_outside_the_vocabulary_is_named(bert_tokenizer):
    with pytest.raises(UserError, match="'\u2603' is not in the vocabulary"):
        label_word_ids(bert_tokenizer, {"0": "terrible", "1": "\u2603"}, ("0", "1"))


def test_parse_mapping():
    assert parse_mapping("{0:'terrible',1:'great'}", ("0", "1")) == {"0": "terrible", "1": "great"}
    with pytest.raises(UserError, match=r"'1'"):
        parse_mapping("{'0':'terrible'}", ("0", "1"))
    with pytest.raises(UserError, match="'2'"):
        parse_mapping("{'0':'a','1':'b','2':'c'}", ("0", "1"))
    with pytest.raises(UserError, match="literal"):
        parse_mapping("__import__('os').getcwd()", ("0", "1"))


@pytest.mark.parametrize("template, texts, culprit", [
    ("*cls**sent_1**mask*", ["only one"], r"\*sent_1\* needs sentence 1, but the example has 1"),
    ("*cls**sent_0**mask**sent_1*", ["a", None], r"\*sent_1\* needs sentence 1, but the example has 1"),
    ("*cls**sent_0**label_0**mask*", ["a"], "label_0"),
    ("*cls**sent_0*\u2603*mask*", ["a"], "\u2603"),
])
def test_bad_encode_input_is_a_user_error(template, texts, culprit, roberta_tokenizer):
    with pytest.raises(UserError, match=culprit):
        encode(texts, template, roberta_tokenizer, 64)
