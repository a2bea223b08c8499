"""Qwen2.5-Coder's byte-level BPE tokenizer, built from GGUF metadata or an HF tokenizer.json.

The engine never imports transformers: the tokenizer is rebuilt once from the GGUF metadata with the
`tokenizers` library, saved as `tokenizer.json`, and loaded from there at every start.
"""

from __future__ import annotations

import codecs
import mmap
import struct
from collections.abc import Sequence
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE

TOKENIZER_FILE = "tokenizer.json"

# How Qwen2 cuts text into words before BPE; the merges were learned on words cut this way.
QWEN2_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# llama.cpp's token types (gguf.TokenType). Control and user-defined tokens are the added tokens
# (`<|endoftext|>`, `<|fim_prefix|>`, `<tool_call>`, ...) that BPE must never produce from text.
_CONTROL = 3
_USER_DEFINED = 4

# GGUF metadata value types: the fixed-size ones as struct formats, plus string and array.
_GGUF_SCALAR = {
    code: struct.Struct("<" + fmt)
    for code, fmt in zip((0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12), "BbHhIif?Qqd", strict=True)
}
_GGUF_STRING = 8
_GGUF_ARRAY = 9
_GGUF_VERSIONS = (2, 3)
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


def _byte_level_decoder() -> dict[str, int]:
    """Map each character of GPT-2's byte-level alphabet back to the byte it spells.

    Byte-level BPE spells every byte as a printable character (space is "Ġ"); the streaming decoder
    needs raw bytes to find where a UTF-8 character ends, so it undoes this spelling itself.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    spelling = {byte: byte for byte in printable}
    # Bytes without a printable character of their own are spelled from 256 upward, in byte order.
    unprintable = [byte for byte in range(256) if byte not in spelling]
    spelling.update({byte: 256 + index for index, byte in enumerate(unprintable)})
    return {chr(char): byte for byte, char in spelling.items()}


_BYTE_OF_CHAR = _byte_level_decoder()


class _GGUFMetadata:
    """Reads the key/value section of a GGUF file, decoding only the keys asked for.

    `gguf.GGUFReader` wraps every string of the 151k-token vocabulary and the 151k merges in its own
    numpy view, which takes 6-10 s; walking the section with `struct` takes a fraction of a second.
    """

    def __init__(self, data: mmap.mmap) -> None:
        """Start reading at the beginning of a mapped GGUF file."""
        self._data = data
        self._pos = 0

    def read(self, wanted: frozenset[str]) -> dict[str, object]:
        """Return the values of the `wanted` keys present in the file, skipping all others."""
        if self._data[:4] != b"GGUF":
            raise ValueError("not a GGUF file (bad magic bytes)")
        self._pos = 4
        version = self._unpack(_U32)
        if version not in _GGUF_VERSIONS:
            raise ValueError(
                f"unsupported GGUF version {version} (big-endian files are not supported either)"
            )
        # The tensor count: the tensor table comes after the metadata and is not needed.
        self._unpack(_U64)
        values: dict[str, object] = {}
        for _ in range(self._unpack(_U64)):
            key = self._string()
            value = self._value(self._unpack(_U32), keep=key in wanted)
            if key in wanted:
                values[key] = value
        return values

    def _unpack(self, fmt: struct.Struct) -> int:
        """Read one integer of the given format."""
        (value,) = fmt.unpack_from(self._data, self._pos)
        self._pos += fmt.size
        return int(value)

    def _string(self) -> str:
        """Read one length-prefixed UTF-8 string."""
        length = self._unpack(_U64)
        start = self._pos
        self._pos += length
        return self._data[start : self._pos].decode("utf-8")

    def _value(self, value_type: int, keep: bool) -> object:
        """Read (or, if not `keep`, just step over) one value of the given type."""
        if value_type in _GGUF_SCALAR:
            fmt = _GGUF_SCALAR[value_type]
            (value,) = fmt.unpack_from(self._data, self._pos)
            self._pos += fmt.size
            return value
        if value_type == _GGUF_STRING:
            return self._string()
        if value_type != _GGUF_ARRAY:
            raise ValueError(f"unknown GGUF metadata value type {value_type}")
        item_type = self._unpack(_U32)
        count = self._unpack(_U64)
        if item_type in _GGUF_SCALAR:
            fmt = _GGUF_SCALAR[item_type]
            start = self._pos
            self._pos += count * fmt.size
            if not keep:
                return None
            return list(struct.unpack_from(f"<{count}{fmt.format[1:]}", self._data, start))
        if item_type != _GGUF_STRING:
            # Nested arrays do not occur in tokenizer metadata; no shortcut to skip them.
            return [self._value(item_type, keep) for _ in range(count)]
        # The hot loop (300k strings for Qwen), inlined: a method call per string doubles the time.
        data, pos, unpack_u64 = self._data, self._pos, _U64.unpack_from
        strings: list[str] = []
        for _ in range(count):
            (length,) = unpack_u64(data, pos)
            pos += 8
            if keep:
                strings.append(data[pos : pos + length].decode("utf-8"))
            pos += length
        self._pos = pos
        return strings if keep else None


def _read_gguf_tokenizer(path: Path) -> tuple[list[str], list[int], list[str]]:
    """Return (tokens, token types, merges) of a GGUF file's Qwen2 byte-level BPE tokenizer."""
    keys = tuple(
        f"tokenizer.ggml.{name}" for name in ("model", "pre", "tokens", "token_type", "merges")
    )
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        meta = _GGUFMetadata(data).read(frozenset(keys))
    missing = [key for key in keys if key not in meta]
    if missing:
        raise ValueError(f"{path}: GGUF metadata lacks {', '.join(missing)}")
    model, pre = meta["tokenizer.ggml.model"], meta["tokenizer.ggml.pre"]
    # Another model or pre-tokenizer needs another split regex: refuse rather than mis-tokenize.
    if (model, pre) != ("gpt2", "qwen2"):
        raise ValueError(
            f"{path}: tokenizer is model={model!r}, pre={pre!r}; only gpt2/qwen2 is supported"
        )
    tokens, types, merges = (meta[key] for key in keys[2:])
    if not (isinstance(tokens, list) and isinstance(types, list) and isinstance(merges, list)):
        raise ValueError(f"{path}: tokenizer tokens, token_type and merges must be arrays")
    if len(types) != len(tokens):
        raise ValueError(f"{path}: {len(tokens)} tokens but {len(types)} token types")
    return tokens, types, merges


def tokenizable(text: str) -> str:
    """`text` with lone surrogates (undecodable bytes an editor passed through) replaced one
    for one, so the tokenizer accepts it and offsets stay valid."""
    return text.encode("utf-8", "replace").decode("utf-8")


class QwenTokenizer:
    """Qwen2.5-Coder's tokenizer: plain text to ids and back, plus the ids of its special tokens.

    Every added token (`<|endoftext|>`, the FIM markers, ...) is registered as special, and `encode`
    never matches them in text: prompts get special tokens only through `token_id`, so the contents
    of a user's file cannot inject control tokens.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        """Wrap a `tokenizers.Tokenizer`, making all its added tokens special (modifies it)."""
        self._tokenizer = tokenizer
        # Makes the added-token matcher skip special tokens, so they are encoded as the plain text
        # they are. Not stored in tokenizer.json, hence set on every construction.
        tokenizer.encode_special_tokens = True
        added = tokenizer.get_added_tokens_decoder()
        not_special = [token.content for token in added.values() if not token.special]
        if not_special:
            # An HF tokenizer.json marks some added tokens (Qwen's `<tool_call>`) non-special;
            # those would still be matched in text, so make them special too.
            tokenizer.add_special_tokens(
                [AddedToken(content, special=True, normalized=False) for content in not_special]
            )
            added = tokenizer.get_added_tokens_decoder()
        self._special_ids = {token.content: token_id for token_id, token in added.items()}
        self._special_id_set = frozenset(self._special_ids.values())

    @classmethod
    def from_gguf(cls, path: Path) -> QwenTokenizer:
        """Build the tokenizer from a Qwen2 GGUF file's metadata, like Qwen2's HF tokenizer."""
        tokens, types, merges = _read_gguf_tokenizer(path)
        vocab = {token: token_id for token_id, token in enumerate(tokens)}
        if len(vocab) != len(tokens):
            raise ValueError(f"{path}: the GGUF vocabulary has duplicate tokens")
        # Merges are stored as "left right"; byte-level tokens hold no real space (Ġ stands in).
        pairs = [(left, right) for left, right in (merge.split(" ") for merge in merges)]
        # Added tokens stay in the BPE vocabulary too, as in transformers' GGUF conversion, so
        # every id the model can emit (even the [PAD...] fillers up to the embedding size) decodes.
        model = BPE(vocab=vocab, merges=pairs, unk_token=None, byte_fallback=False, fuse_unk=False)
        tokenizer = Tokenizer(model)
        tokenizer.normalizer = normalizers.NFC()
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        tokenizer.decoder = decoders.ByteLevel()
        added = [
            (token, token_id)
            for token_id, (token, kind) in enumerate(zip(tokens, types, strict=True))
            if kind in (_CONTROL, _USER_DEFINED)
        ]
        # normalized=False: matched on the raw text, as in Qwen2's tokenizer.json.
        tokenizer.add_special_tokens(
            [AddedToken(token, special=True, normalized=False) for token, _ in added]
        )
        # Added tokens take the id the vocabulary gives them; the model relies on it, so check.
        wrong = [token for token, token_id in added if tokenizer.token_to_id(token) != token_id]
        if wrong:
            raise ValueError(f"{path}: added tokens got ids different from the GGUF's: {wrong}")
        return cls(tokenizer)

    @classmethod
    def from_hf_dir(cls, path: Path) -> QwenTokenizer:
        """Load the `tokenizer.json` of a Hugging Face model directory."""
        return cls(Tokenizer.from_file(str(path / TOKENIZER_FILE)))

    @classmethod
    def load(cls, directory: Path) -> QwenTokenizer:
        """Load a tokenizer written by `save` (the fast path taken at every start)."""
        return cls(Tokenizer.from_file(str(directory / TOKENIZER_FILE)))

    def save(self, directory: Path) -> None:
        """Write the tokenizer as `tokenizer.json` in `directory`, creating it if needed."""
        directory.mkdir(parents=True, exist_ok=True)
        # Compact JSON: nobody reads it, and it is smaller and no slower to load.
        self._tokenizer.save(str(directory / TOKENIZER_FILE), pretty=False)

    @property
    def vocab_size(self) -> int:
        """Number of token ids the tokenizer knows, added tokens included.

        From a GGUF this equals the model's embedding rows (151936 for Qwen2.5-Coder); an HF
        tokenizer.json knows fewer (151665), the rest being unused padding rows.
        """
        return int(self._tokenizer.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        """Encode plain text to ids; special-token strings in `text` are encoded as plain text."""
        # add_special_tokens=False: no post-processor tokens (Qwen adds no BOS anyway).
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def encode_segments(self, segments: Sequence[tuple[str, bool]]) -> list[int]:
        """Ids of a prompt given as (text, is_special) pieces: specials by id, the rest as text.

        User text therefore cannot smuggle in control tokens, and because specials split
        tokenization anyway the ids equal those of tokenizing the joined prompt.
        """
        ids: list[int] = []
        for text, special in segments:
            ids.extend([self.token_id(text)] if special else self.encode(text))
        return ids

    def token_id(self, special: str) -> int:
        """Return the id of a special token such as "<|fim_prefix|>" or "<|endoftext|>"."""
        try:
            return self._special_ids[special]
        except KeyError:
            known = ", ".join(sorted(self._special_ids))
            raise KeyError(
                f"{special!r} is not a special token of this tokenizer; it has: {known}"
            ) from None

    def is_special(self, token_id: int) -> bool:
        """Tell whether `token_id` is one of the special (added) tokens."""
        return token_id in self._special_id_set

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        """Decode ids to text; special tokens appear as their text unless `skip_special_tokens`."""
        return str(self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens))

    def token_bytes(self, token_id: int) -> bytes:
        """Return the raw bytes one token stands for (possibly part of a UTF-8 character)."""
        token = self._tokenizer.id_to_token(token_id)
        if token is None:
            return b""  # as `decode` does: ids outside the vocabulary produce nothing
        try:
            return bytes(_BYTE_OF_CHAR[char] for char in token)
        except KeyError:
            # Like the ByteLevel decoder: a token not spelled in the byte alphabet (an added token
            # with other characters) stands for its own UTF-8 text.
            return token.encode("utf-8")

    def streaming_decoder(self, skip_special_tokens: bool = False) -> StreamingDecoder:
        """Return a fresh incremental decoder for one generated sequence."""
        return StreamingDecoder(self, skip_special_tokens)


class StreamingDecoder:
    """Turns generated ids, fed one at a time, into text as soon as whole characters are complete.

    A byte-level token can end in the middle of a multi-byte UTF-8 character (an emoji is often
    split over several tokens); those bytes are held back until the character is complete, so the
    pieces returned by `push` and `finish` concatenate to exactly `decode` of all the ids.
    """

    def __init__(self, tokenizer: QwenTokenizer, skip_special_tokens: bool = False) -> None:
        """Decode ids of `tokenizer`, leaving out special tokens if `skip_special_tokens`."""
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        # errors="replace" matches `decode`, which turns invalid UTF-8 into U+FFFD.
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """Add one id; return the text it completes (empty while a character is still partial)."""
        if self._skip_special_tokens and self._tokenizer.is_special(token_id):
            return ""
        return str(self._utf8.decode(self._tokenizer.token_bytes(token_id)))

    def finish(self) -> str:
        """End the sequence; return what is left (U+FFFD for a character that never completed)."""
        text = str(self._utf8.decode(b"", final=True))
        self._utf8.reset()
        return text
