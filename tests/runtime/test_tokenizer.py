"""Tests of runtime.tokenizer: agreement with transformers, injection safety, streaming."""

from __future__ import annotations

import difflib
import inspect
import json
import textwrap
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.tokenizer import _BYTE_OF_CHAR, QwenTokenizer

CONTROL_TOKENS = [
    "<|endoftext|>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
]
CONTROL_TOKENS += ["<|repo_name|>", "<|file_sep|>", "<|im_start|>", "<|im_end|>"]

PYTHON = '''\
import math


class Café:
    """Ünïcödé docstring — with an em dash, “quotes” and 日本語."""

    def __init__(self, naïve: float = 3.14159e-10) -> None:
        self.naïve = naïve  # don't, we'RE, it'll, I'd, she's
        self.μ = math.pi * 0xFF + 1_000_000

    def área(self) -> str:
        return f"{self.μ:>10.3f} 📐"
'''

JAVASCRIPT = """\
// 计算总和 — sum with emoji 🚀🔥 and a ZWJ family 👨‍👩‍👧
export const sum = (xs) => xs.reduce((a, b) => a + b, 0);
const greeting = `Hello, ${name}! Привет, мир! مرحبا`;
if (x !== null && y >= 42) { console.log("done\\n"); }
"""

WHITESPACE = [
    "def f():\r\n    return 1\r\n\r\n",  # CRLF
    "\tindented\twith\ttabs\n\t\tand more\n",
    "x" + " " * 37 + "= 1\n" + " " * 64 + "\n" + " " * 3,  # long runs of spaces, trailing spaces
    "\n\n\n\r\r\n \n",
    "",
    " ",
    "12345678901234567890 0.5 1e9 -7 ٣٤ ①②",  # Qwen2 splits digits one by one
    "über straße naïve façade Ελληνικά 한국어 हिन्दी",
    "a\u00a0b\u2003c\u200bd",  # no-break, em and zero-width spaces
]

CORPUS = [
    PYTHON,
    JAVASCRIPT,
    *WHITESPACE,
    # Real files: long and varied. Standard-library sources are NFC (checked below).
    inspect.getsource(textwrap),
    inspect.getsource(json.decoder),
    inspect.getsource(difflib),
]

STREAMING_TEXT = "emoji 🫠🦀🐍👨‍👩‍👧 CJK 漢字かな한국 accents é ñ — done"


def _write_gguf(
    path: Path, tokens: list[str], types: list[int], merges: list[str], pre: str = "qwen2"
) -> Path:
    """Write a GGUF holding only tokenizer metadata (no tensors)."""
    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="session")
def synthetic_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny byte-level GGUF tokenizer: 256 byte tokens, a few merges and Qwen's specials."""
    alphabet = sorted(_BYTE_OF_CHAR, key=_BYTE_OF_CHAR.__getitem__)  # token id == byte value
    merges = ["Ġ t", "h e", "Ġt he", "i n", "d e", "de f"]
    words = ["Ġt", "he", "Ġthe", "in", "de", "def"]
    specials = [*CONTROL_TOKENS, "<tool_call>"]
    tokens = alphabet + words + specials
    types = [1] * (len(alphabet) + len(words)) + [3] * len(CONTROL_TOKENS) + [4]
    return _write_gguf(tmp_path_factory.mktemp("synthetic") / "tiny.gguf", tokens, types, merges)


@pytest.fixture(scope="session")
def qwen(gguf_05b: Path) -> QwenTokenizer:
    """Our tokenizer built from the 0.5B GGUF."""
    return QwenTokenizer.from_gguf(gguf_05b)


@pytest.fixture(scope="session")
def reference(gguf_05b: Path) -> Any:
    """transformers' own GGUF tokenizer conversion of the same file."""
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(gguf_05b.parent, gguf_file=gguf_05b.name)


@pytest.fixture(params=["synthetic", "qwen-0.5b"], scope="session")
def tokenizer(request: pytest.FixtureRequest, synthetic_gguf: Path) -> QwenTokenizer:
    """The tokenizers for format-independent tests: the tiny one always, the real one if given."""
    if request.param == "synthetic":
        return QwenTokenizer.from_gguf(synthetic_gguf)
    qwen: QwenTokenizer = request.getfixturevalue("qwen")
    return qwen


def _fim_pieces() -> Iterator[tuple[str, str]]:
    """A repository-level FIM prompt as (kind, content) pieces: kind is "special" or "text"."""
    yield "special", "<|repo_name|>"
    yield "text", "coder-lsp\n"
    yield "special", "<|file_sep|>"
    yield "text", "src/util.js\n" + JAVASCRIPT
    yield "special", "<|file_sep|>"
    yield "text", "src/café.py\n"
    yield "special", "<|fim_prefix|>"
    yield "text", PYTHON[:200]
    yield "special", "<|fim_suffix|>"
    yield "text", PYTHON[200:]
    yield "special", "<|fim_middle|>"


# --- equality with transformers' GGUF tokenizer --------------------------------------------------


def test_corpus_is_nfc_and_free_of_special_tokens() -> None:
    """The corpus holds only text on which our tokenizer must agree with the reference.

    The reference neither NFC-normalizes nor ignores added tokens written in the text.
    """
    for text in CORPUS:
        assert unicodedata.is_normalized("NFC", text)
        assert "<|" not in text and "tool_call>" not in text


@pytest.mark.parametrize("index", range(len(CORPUS)))
def test_encode_matches_reference(qwen: QwenTokenizer, reference: Any, index: int) -> None:
    """Plain text gets exactly transformers' ids, and decodes back to itself."""
    text = CORPUS[index]
    ids = qwen.encode(text)
    assert ids == reference.encode(text, add_special_tokens=False)
    assert qwen.decode(ids) == text


def test_fim_prompt_matches_reference(qwen: QwenTokenizer, reference: Any) -> None:
    """A prompt built from token_id() and encode() equals the reference encoding of its text."""
    ids: list[int] = []
    for kind, content in _fim_pieces():
        ids += [qwen.token_id(content)] if kind == "special" else qwen.encode(content)
    prompt = "".join(content for _, content in _fim_pieces())
    assert ids == reference.encode(prompt, add_special_tokens=False)
    assert qwen.decode(ids) == prompt == reference.decode(ids)


def test_special_ids_match_reference(qwen: QwenTokenizer, reference: Any) -> None:
    """Every special token has the reference's id; the vocabulary spans the embedding rows."""
    for special in [*CONTROL_TOKENS, "<tool_call>", "</tool_call>"]:
        assert qwen.token_id(special) == reference.convert_tokens_to_ids(special)
    assert qwen.token_id("<|endoftext|>") == 151643
    assert qwen.token_id("<|im_end|>") == 151645
    assert qwen.vocab_size == len(reference) == 151936


def test_nfc_normalization(qwen: QwenTokenizer) -> None:
    """Decomposed text is composed first, as by Qwen2's tokenizer.json (not transformers' GGUF)."""
    assert qwen.encode("cafe\u0301") == qwen.encode("café")


def test_from_hf_dir(qwen: QwenTokenizer, reference: Any, tmp_path: Path) -> None:
    """An HF tokenizer.json loads, and its non-special `<tool_call>` cannot be injected either."""
    reference.save_pretrained(tmp_path)
    added = json.loads((tmp_path / "tokenizer.json").read_text())["added_tokens"]
    assert any(not token["special"] for token in added)  # the case __init__ has to fix
    loaded = QwenTokenizer.from_hf_dir(tmp_path)
    text = "<tool_call>{}</tool_call> <|endoftext|>"
    assert loaded.encode(text) == qwen.encode(text)
    assert not any(loaded.is_special(token_id) for token_id in loaded.encode(text))


# --- format-independent behaviour (synthetic tokenizer always, real one when available) ----------


def test_special_tokens_in_text_are_not_injected(tokenizer: QwenTokenizer) -> None:
    """User code containing "<|endoftext|>" and friends encodes as text, never as special ids."""
    for special in [*CONTROL_TOKENS, "<tool_call>"]:
        code = f'EOS = "{special}"\nif line == "{special}":\n    break\n'
        ids = tokenizer.encode(code)
        assert tokenizer.token_id(special) not in ids
        assert not any(tokenizer.is_special(token_id) for token_id in ids)
        assert tokenizer.decode(ids) == code


def test_token_id_unknown_special(tokenizer: QwenTokenizer) -> None:
    """Asking for a missing special names it and lists the ones that exist."""
    with pytest.raises(KeyError, match=r"'<\|nope\|>' is not a special token.*<\|fim_prefix\|>"):
        tokenizer.token_id("<|nope|>")


def test_decode_skip_special_tokens(tokenizer: QwenTokenizer) -> None:
    """Special tokens decode to their text by default, and vanish when skipped."""
    ids = [
        tokenizer.token_id("<|fim_prefix|>"),
        *tokenizer.encode("def x"),
        tokenizer.token_id("<|endoftext|>"),
    ]
    assert tokenizer.decode(ids) == "<|fim_prefix|>def x<|endoftext|>"
    assert tokenizer.decode(ids, skip_special_tokens=True) == "def x"


def test_save_load_round_trip(tokenizer: QwenTokenizer, tmp_path: Path) -> None:
    """A saved and reloaded tokenizer gives identical ids, specials and decoding."""
    tokenizer.save(tmp_path / "tok")
    loaded = QwenTokenizer.load(tmp_path / "tok")
    for text in [*CORPUS, STREAMING_TEXT, "<|endoftext|>"]:
        assert loaded.encode(text) == tokenizer.encode(text)
    for special in CONTROL_TOKENS:
        assert loaded.token_id(special) == tokenizer.token_id(special)
    assert loaded.vocab_size == tokenizer.vocab_size
    ids = [*tokenizer.encode(STREAMING_TEXT), tokenizer.token_id("<|im_end|>")]
    assert loaded.decode(ids) == tokenizer.decode(ids)


def test_streaming_decoder_holds_back_partial_characters(tokenizer: QwenTokenizer) -> None:
    """Pieces are whole characters and concatenate to the text; a split character yields ""."""
    ids = tokenizer.encode(STREAMING_TEXT)
    decoder = tokenizer.streaming_decoder()
    pieces = [decoder.push(token_id) for token_id in ids] + [decoder.finish()]
    assert "".join(pieces) == STREAMING_TEXT
    assert "\ufffd" not in "".join(pieces)
    # Some token ended mid-character (the split this decoder exists for) and emitted nothing.
    assert "" in pieces[:-1]


def test_streaming_decoder_matches_decode(tokenizer: QwenTokenizer) -> None:
    """With specials (kept or skipped) and a character cut off at the end, it equals decode()."""
    melting = tokenizer.encode("🫠")
    assert len(melting) > 1  # the emoji spans several tokens in both vocabularies
    ids = [
        tokenizer.token_id("<|fim_middle|>"),
        *tokenizer.encode("x = '漢'"),
        tokenizer.token_id("<|endoftext|>"),
    ]
    ids += melting[:-1]  # generation stopped inside a character
    for skip in (False, True):
        decoder = tokenizer.streaming_decoder(skip_special_tokens=skip)
        streamed = "".join(decoder.push(token_id) for token_id in ids) + decoder.finish()
        assert streamed == tokenizer.decode(ids, skip_special_tokens=skip)
        assert streamed.endswith("\ufffd")


# --- GGUF reading --------------------------------------------------------------------------------


def test_synthetic_gguf_ids(synthetic_gguf: Path) -> None:
    """Merges apply, and added tokens keep their GGUF ids."""
    tokenizer = QwenTokenizer.from_gguf(synthetic_gguf)
    assert tokenizer.encode(" the") == [256 + 2]  # "Ġthe", the third merged word
    assert tokenizer.token_id("<|endoftext|>") == 256 + 6
    assert tokenizer.token_id("<tool_call>") == tokenizer.vocab_size - 1


def test_rejects_other_pre_tokenizer(tmp_path: Path) -> None:
    """A GGUF whose words are split another way is refused rather than mis-tokenized."""
    alphabet = sorted(_BYTE_OF_CHAR, key=_BYTE_OF_CHAR.__getitem__)
    path = _write_gguf(
        tmp_path / "llama3.gguf", [*alphabet, "Ġt"], [1] * 257, ["Ġ t"], pre="llama-bpe"
    )
    with pytest.raises(ValueError, match="only gpt2/qwen2"):
        QwenTokenizer.from_gguf(path)
